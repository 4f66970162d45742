"""State diagrams drawn from the transition table: mermaid text, graphviz DOT, SVG/PNG.

Both renderers draw the model of :mod:`session_fsm.drawing`, which reads
:data:`~session_fsm.table.TRANSITIONS`. The same model serves three pictures:

- the whole machine (``session-fsm diagram``), optionally with one state highlighted;
- the live machine (``session.diagram()``): current state highlighted, last transition in red;
- a replayed log (``session-fsm trace``): only the arrows taken, each with how often
  (``counts``), plus the attempts that left the state where it was (``attempts``).

Mermaid is a ``flowchart`` rather than a ``stateDiagram``: only flowcharts can draw an arrow
dashed (internal edges), colour one arrow (the last transition) or thicken it (a busy path).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from xml.sax.saxutils import escape

from .core.snapshot import TransitionRecord
from .drawing import (
    CURRENT_FILL,
    FAILURE_NODE,
    GENERATED,
    HAPPY_EDGES,
    HAPPY_PATH,
    LEGEND,
    MARK,
    TRACED,
    WRAP,
    Arrow,
    Attempts,
    Counts,
    Drawing,
    arrows,
    drawing,
    group_id,
    group_label,
    rank,
    width,
)
from .errors import ConfigurationError
from .table import State

__all__ = [
    "CURRENT_FILL", "DOT_METADATA_ID", "FAILURE_NODE", "FORMATS", "HAPPY_PATH", "MARK",
    "MERMAID_INIT", "arrows", "dot", "embedded_dot", "group_id", "mermaid", "render",
]  # fmt: skip

FORMATS = ("mermaid", "dot", "svg", "png")
#: The element of an SVG that carries the DOT it was drawn from (see :func:`embedded_dot`).
DOT_METADATA_ID = "session-fsm-dot"
#: Mermaid's layout settings: straight segments and room between nodes keep labels apart.
MERMAID_INIT = (
    '%%{init: {"flowchart": {"curve": "linear", "nodeSpacing": 80, "rankSpacing": 60}}}%%'
)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _mermaid_lines(lines: Iterable[str]) -> str:
    return "<br>".join(_mermaid_text(x) for x in lines)


def mermaid(
    *,
    highlight: State | None = None,
    last: TransitionRecord | None = None,
    counts: Counts | None = None,
    attempts: Attempts | None = None,
    start: State | None = None,
) -> str:
    """Mermaid flowchart of the machine.

    ``highlight`` fills one state; ``last`` draws the arrow of that transition in red, with
    ``(last: outcome)`` in its label, and a failed or refused attempt as a red note naming the
    error (``login failed: LoginRejected 401001``) beside the state it left the session in.
    ``counts`` (from a trace) draws only the arrows taken, each labelled ``trigger xn`` and
    thicker the more it was taken, and ``attempts`` adds red dotted loops for attempts that did
    not move. ``start`` is where the start dot points (default: the initial state). The table
    drawing draws every edge off the happy path from a note naming its states (see
    :func:`arrows`), balances those notes with invisible spacers (see :func:`_spacers`) so
    mermaid-cli draws the happy path as one column, and carries a legend.
    """
    d = drawing(highlight, last, counts, attempts, start)
    lines = [
        MERMAID_INIT,
        "flowchart TD",
        "    %% " + (TRACED if d.traced else GENERATED),
        "    %% Solid: called by you. Dashed: internal, taken by the library on a server answer.",
    ]
    spacers = [] if d.traced else _spacers(d)
    for name, _, shape in spacers:
        lines.append(f"    {name}{shape}")
    for name, state, _ in spacers:
        lines.append(f"    {name} ~~~ {state.name}")
    for s in d.states:
        lines.append(f'    {s.name}("{_mermaid_text(s.value)}")')
    notes = [group_id(g, dst) for g, dst in d.groups]
    for g, dst in d.groups:
        label = _mermaid_lines(textwrap.wrap(group_label(g), WRAP))
        lines.append(f'    {group_id(g, dst)}["{label}"]')
    if not d.traced:
        lines.append(f'    LEGEND["{_mermaid_lines(LEGEND)}"]')
        notes.append("LEGEND")
    styles: list[str] = []
    index = len(spacers)  # linkStyle counts the invisible links too
    if d.first is not None:
        lines.append("    start(( )) --> " + d.first.name)
        index += 1
    for a in d.arrows:
        arrow = "-.->" if a.internal or a.attempt else "-->"
        label = _mermaid_lines(a.lines()) if not d.traced else _mermaid_text(a.text())
        lines.append(f'    {a.tail} {arrow}|"{label}"| {a.dst.name}')
        style = []
        if a.marked or a.attempt:
            style += [f"stroke:{MARK}", f"color:{MARK}"]
        if a.count is not None or a.marked:
            style.append(f"stroke-width:{width(a.count) if a.count else 3:g}px")
        if style:
            styles.append(f"    linkStyle {index} {','.join(style)}")
        index += 1
    if d.failure is not None:
        state, text = d.failure
        lines.append(f'    {FAILURE_NODE}["{_mermaid_text(text)}"]')
        lines.append(f"    {FAILURE_NODE} -.- {state.name}")  # above it, balanced like a note
        styles.append(f"    linkStyle {index} stroke:{MARK}")
    lines += styles
    if d.first is not None:
        lines.append("    classDef start fill:#333,stroke:#333")
        lines.append("    class start start")
    if notes:
        lines.append("    classDef note fill:#fffbe6,stroke:#999,stroke-dasharray:4 3")
        lines.append(f"    class {','.join(notes)} note")
    if spacers:
        lines.append("    classDef spacer fill:none,stroke:none")
        lines.append(f"    class {','.join(name for name, _, _ in spacers)} spacer")
    if d.failure is not None:
        lines.append(f"    classDef failure fill:#fdecea,stroke:{MARK},color:{MARK}")
        lines.append(f"    class {FAILURE_NODE} failure")
    if highlight is not None and highlight in d.states:
        lines.append(f"    classDef current fill:{CURRENT_FILL},stroke:#333,stroke-width:3px")
        lines.append(f"    class {highlight.name} current")
    return "\n".join(lines) + "\n"


def _spacers(d: Drawing) -> list[tuple[str, State, str]]:
    """Invisible nodes that keep mermaid's happy path straight: (id, state, shape).

    Mermaid lays flowcharts out with dagre, whose Brandes-Koepf placement lines a node up with
    the median of its neighbours in the rank above. The notes' arrows all enter a happy-path state
    from the same side, so with more than one of them the median is a note, not the state above,
    and the column bends. One invisible node per note arrow, declared first (so dagre orders it on
    the other side) and linked to the state by an invisible ``~~~`` link, puts the state above back
    in the middle; the start dot already balances the note into the first state. Spacers of a
    state with two or more notes are boxes, of one note a dot: the shapes with which mermaid-cli
    draws the committed diagram straight (tests/test_diagram_layout.py measures it).
    """
    per: dict[State, int] = {}
    for a in d.arrows:
        if a.group and a.dst in HAPPY_PATH:
            per[a.dst] = per.get(a.dst, 0) + 1
    if d.failure is not None:  # the failure marker hangs above its state like a note
        per[d.failure[0]] = per.get(d.failure[0], 0) + 1
    if d.first is not None and per.get(d.first):
        per[d.first] -= 1
    out = []
    for state in HAPPY_PATH:
        n = per.get(state, 0)
        shape = '[" "]' if n >= 2 else "(( ))"
        out += [(f"SPACER_{state.name}_{i}", state, shape) for i in range(1, n + 1)]
    return out


def _far_back(a: Arrow) -> bool:
    """An internal arrow of the table drawing that goes back more than one state."""
    return a.internal and not a.group and rank(a.src) - rank(a.dst) > 1


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_lines(lines: Iterable[str], end: str = "\\n") -> str:
    return end.join(_dot_text(x) for x in lines)


def dot(
    *,
    highlight: State | None = None,
    last: TransitionRecord | None = None,
    counts: Counts | None = None,
    attempts: Attempts | None = None,
    start: State | None = None,
) -> str:
    """Graphviz DOT of the machine; the arguments mean what they mean for :func:`mermaid`.

    Every state and arrow carries an ``id`` (``state-NAME``, ``arrow-TAIL-DST``) that the SVG
    keeps, so a page can highlight them without drawing again."""
    d = drawing(highlight, last, counts, attempts, start)
    lines = [
        "digraph session {",
        f"  // {TRACED if d.traced else GENERATED} Dashed edges are internal.",
        "  rankdir=TB; nodesep=0.8; ranksep=0.6;",
        '  node [shape=box, style="rounded", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for s in d.states:
        extra = f', style="rounded,filled", fillcolor="{CURRENT_FILL}"' if s is highlight else ""
        group = ", group=happy" if not d.traced and s in HAPPY_PATH else ""
        node = f'label="{_dot_text(s.value)}"{extra}, id="state-{s.name}"{group}'
        lines.append(f"  {s.name} [{node}];")
    note = 'shape=note, style="filled,dashed", fillcolor="#fffbe6", color="#999999", fontsize=10'
    for g, dst in d.groups:
        label = _dot_lines(textwrap.wrap(group_label(g), WRAP))
        gid = group_id(g, dst)
        lines.append(f'  {gid} [label="{label}", {note}, id="note-{gid}"];')
    if d.first is not None:
        lines.append('  start [shape=point, width=0.2, label=""];')
        lines.append(f"  start -> {d.first.name};")
    for a in d.arrows:
        text = _dot_lines(a.lines()) if not d.traced else _dot_text(a.text())
        attrs = [f'label="{text}"']
        if a.attempt and (not a.marked or a.src is a.dst):
            attrs.append("style=dotted")
        elif a.internal:
            attrs.append("style=dashed")
        if a.marked or a.attempt:
            attrs += [f'color="{MARK}"', f'fontcolor="{MARK}"']
        if a.count is not None or a.marked:
            attrs.append(f"penwidth={width(a.count) / 2 + 0.5 if a.count else 2.5:g}")
        if not d.traced:
            if not a.group and (a.src, a.dst) in HAPPY_EDGES:
                attrs.append("weight=10")
            elif _far_back(a):
                attrs.append("tailport=e, headport=e")  # a long way back: round the right side
            elif a.src is a.dst and any(_far_back(b) and b.src is a.src for b in d.arrows):
                attrs.append("tailport=w, headport=w")  # that right side is taken: loop left
            attrs.append(f'id="{a.key}"')
        lines.append(f"  {a.tail} -> {a.dst.name} [{', '.join(attrs)}];")
    if d.failure is not None:
        state, text = d.failure
        lines.append(
            f'  {FAILURE_NODE} [label="{_dot_text(text)}", shape=note, style=filled, '
            f'fillcolor="#fdecea", color="{MARK}", fontcolor="{MARK}", fontsize=10];'
        )
        lines.append(
            f'  {state.name} -> {FAILURE_NODE} [style=dotted, color="{MARK}", arrowhead=none];'
        )
    if not d.traced:
        legend = _dot_lines(LEGEND, "\\l") + "\\l"
        lines.append(f'  LEGEND [label="{legend}", {note}, id="legend"];')
        lines.append("  { rank=sink; LEGEND; }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(
    fmt: str,
    *,
    highlight: State | None = None,
    last: TransitionRecord | None = None,
    counts: Counts | None = None,
    attempts: Attempts | None = None,
    start: State | None = None,
) -> bytes:
    """The diagram in ``fmt`` (one of :data:`FORMATS`) as bytes.

    SVG and PNG need the ``graphviz`` Python package and the system ``dot`` program; when either
    is missing a one-line ConfigurationError names it. An SVG carries its DOT source in a
    ``<metadata id="session-fsm-dot">`` element, so a test can compare it without graphviz.
    """
    if fmt == "mermaid":
        return mermaid(
            highlight=highlight, last=last, counts=counts, attempts=attempts, start=start
        ).encode()
    source = dot(highlight=highlight, last=last, counts=counts, attempts=attempts, start=start)
    if fmt == "dot":
        return source.encode()
    if fmt not in FORMATS:
        raise ConfigurationError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    try:
        import graphviz
    except ImportError:
        raise ConfigurationError(
            f"{fmt} output needs the graphviz Python package, which is not installed",
            hint="pip install 'session_fsm[graphviz]'",
        ) from None
    try:
        out: bytes = graphviz.Source(source).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise ConfigurationError(
            f"{fmt} output needs the graphviz 'dot' program, which is not on PATH",
            hint="install it (Debian: apt-get install graphviz)",
        ) from None
    return _embed_dot(out, source) if fmt == "svg" else out


def _embed_dot(svg: bytes, source: str) -> bytes:
    """Insert the DOT source right after the root ``<svg ...>`` tag, XML-escaped."""
    text = svg.decode("utf-8")
    root = re.search(r"<svg\b[^>]*>", text)
    if root is None:  # pragma: no cover -- graphviz always writes one
        return svg
    meta = f'\n<metadata id="{DOT_METADATA_ID}">\n{escape(source)}</metadata>'
    return (text[: root.end()] + meta + text[root.end() :]).encode("utf-8")


def embedded_dot(svg: str) -> str | None:
    """The DOT source an SVG from :func:`render` was drawn from, or None when it has none."""
    found = re.search(rf'<metadata id="{DOT_METADATA_ID}">\n(.*?)</metadata>', svg, re.S)
    if found is None:
        return None
    return found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
