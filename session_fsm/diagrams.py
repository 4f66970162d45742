"""State diagrams drawn from the transition table: mermaid text, graphviz DOT, SVG/PNG.

Every renderer reads :data:`~session_fsm.table.TRANSITIONS`; edges between the same two states
are merged into one arrow whose label lists the triggers (guards in brackets), and internal
edges (taken by the library when the server says so) are drawn dashed. The same drawing model
serves three pictures:

- the whole machine (``session-fsm diagram``), optionally with one state highlighted;
- the live machine (``session.diagram()``): current state highlighted, last transition in red;
- a replayed log (``session-fsm trace``): only the arrows taken, each with how often
  (``counts``), plus the attempts that left the state where it was (``attempts``).

Mermaid is a ``flowchart`` rather than a ``stateDiagram``: only flowcharts can draw an arrow
dashed (internal edges), colour one arrow (the last transition) or thicken it (a busy path).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape

from .errors import ConfigurationError
from .snapshot import OK, TransitionRecord
from .table import ALL_STATES, INITIAL, INTERNAL_TRIGGERS, TRANSITIONS, Edge, State

FORMATS = ("mermaid", "dot", "svg", "png")
#: A taken edge of a trace: (source, destination, trigger) -> how often.
Counts = Mapping[tuple[State, State, str], int]
#: An attempt that left the state unchanged (refused, or failed before moving):
#: (state, trigger, outcome) -> how often.
Attempts = Mapping[tuple[State, str, str], int]

#: Colours shared by every format: the highlighted state, the marked (last) arrow, failures.
CURRENT_FILL = "#f9d65c"
MARK = "#dd3333"
#: The element of an SVG that carries the DOT it was drawn from (see :func:`embedded_dot`).
DOT_METADATA_ID = "session-fsm-dot"
_GENERATED = "Generated from session_fsm.table.TRANSITIONS; do not edit by hand."
_TRACED = "Replayed from a transition log; each arrow says how often it was taken."


@dataclass(frozen=True)
class Arrow:
    """One drawn arrow: all edges from ``src`` to ``dst`` (or one kind of stalled attempt).

    ``count`` is how often a trace took it (None when drawing the table); ``attempt`` is the
    outcome (``refused``/``failed``) of attempts that did not move, drawn as a red dotted loop.
    """

    src: State
    dst: State
    labels: tuple[str, ...]
    internal: bool
    triggers: tuple[str, ...] = ()
    count: int | None = None
    attempt: str | None = None
    marked: bool = False

    def text(self) -> str:
        """The arrow's label as drawn."""
        return " / ".join(self.labels) + (f" (last: {self.attempt or OK})" if self.marked else "")


def edge_label(e: Edge) -> str:
    """``trigger [guard, guard]`` for one edge."""
    return f"{e.trigger} [{', '.join(e.guards)}]" if e.guards else e.trigger


def arrows(edges: Iterable[Edge] = TRANSITIONS) -> list[Arrow]:
    """Group edges by (src, dst), in table order."""
    groups: dict[tuple[State, State], list[Edge]] = {}
    for e in edges:
        groups.setdefault((e.source, e.dest), []).append(e)
    out = []
    for (src, dst), es in groups.items():
        labels = tuple(dict.fromkeys(edge_label(e) for e in es))
        triggers = tuple(dict.fromkeys(e.trigger for e in es))
        out.append(Arrow(src, dst, labels, all(e.internal for e in es), triggers))
    return out


def trace_arrows(counts: Counts, attempts: Attempts | None = None) -> list[Arrow]:
    """The arrows of a replayed log: taken edges grouped by (src, dst), then stalled attempts."""
    groups: dict[tuple[State, State], dict[str, int]] = {}
    for (src, dst, trigger), n in counts.items():
        per = groups.setdefault((src, dst), {})
        per[trigger] = per.get(trigger, 0) + n
    out = [
        Arrow(
            src,
            dst,
            labels=tuple(f"{t} x{n}" for t, n in per.items()),
            internal=all(t in INTERNAL_TRIGGERS for t in per),
            triggers=tuple(per),
            count=sum(per.values()),
        )
        for (src, dst), per in groups.items()
    ]
    for (state, trigger, outcome), n in (attempts or {}).items():
        out.append(_attempt(state, trigger, outcome, f" x{n}", n))
    return out


def _attempt(state: State, trigger: str, outcome: str, suffix: str, n: int | None) -> Arrow:
    label = f"{trigger} {outcome}{suffix}"
    return Arrow(state, state, (label,), False, (trigger,), n, attempt=outcome)


def _with_last(drawn: list[Arrow], last: TransitionRecord | None) -> list[Arrow]:
    """Mark the arrow ``last`` took; an attempt that did not move gets its own red loop."""
    if last is None:
        return drawn
    if last.outcome != OK and last.src == last.dst:
        return [*drawn, _marked(_attempt(last.src, last.trigger, last.outcome, "", None))]
    for i, a in enumerate(drawn):
        if (a.src, a.dst) == (last.src, last.dst) and last.trigger in a.triggers:
            return [*drawn[:i], _marked(a), *drawn[i + 1 :]]
    # Not in the table (a transition logged by another version): draw it anyway, marked.
    extra = Arrow(last.src, last.dst, (last.trigger,), False, (last.trigger,))
    return [*drawn, _marked(extra)]


def _marked(a: Arrow) -> Arrow:
    return Arrow(a.src, a.dst, a.labels, a.internal, a.triggers, a.count, a.attempt, True)


def _states(drawn: list[Arrow], traced: bool) -> list[State]:
    """Every state for the table; for a trace only the states it visited, in table order."""
    if not traced:
        return list(ALL_STATES)
    seen = {a.src for a in drawn} | {a.dst for a in drawn}
    return [s for s in ALL_STATES if s in seen]


def _width(count: int | None) -> float:
    """Line width of a traced arrow: grows with the log of how often it was taken."""
    return 2.0 + min(4, (count or 1).bit_length() - 1)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


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
    ``(last: outcome)`` in its label; ``counts`` (from a trace) draws only the arrows taken, each
    labelled ``trigger xn`` and thicker the more it was taken, and ``attempts`` adds red dotted
    loops for attempts that did not move. ``start`` is where the start dot points (default: the
    initial state).
    """
    traced = counts is not None or attempts is not None
    drawn = trace_arrows(counts or {}, attempts) if traced else arrows()
    drawn = _with_last(drawn, last)
    states = _states(drawn, traced)
    first = start or (INITIAL if not traced or INITIAL in states else None)
    lines = [
        "flowchart TD",
        "    %% " + (_TRACED if traced else _GENERATED),
        "    %% Solid: called by you. Dashed: internal, taken by the library on a server answer.",
    ]
    for s in states:
        lines.append(f'    {s.name}("{_mermaid_text(s.value)}")')
    styles: list[str] = []
    index = 0
    if first is not None:
        lines.append("    start(( )) --> " + first.name)
        index = 1
    for a in drawn:
        arrow = "-.->" if a.internal or a.attempt else "-->"
        lines.append(f'    {a.src.name} {arrow}|"{_mermaid_text(a.text())}"| {a.dst.name}')
        style = []
        if a.marked or a.attempt:
            style += [f"stroke:{MARK}", f"color:{MARK}"]
        if a.count is not None or a.marked:
            style.append(f"stroke-width:{_width(a.count) if a.count else 3:g}px")
        if style:
            styles.append(f"    linkStyle {index} {','.join(style)}")
        index += 1
    lines += styles
    if first is not None:
        lines.append("    classDef start fill:#333,stroke:#333")
        lines.append("    class start start")
    if highlight is not None and highlight in states:
        lines.append(f"    classDef current fill:{CURRENT_FILL},stroke:#333,stroke-width:3px")
        lines.append(f"    class {highlight.name} current")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def dot(
    *,
    highlight: State | None = None,
    last: TransitionRecord | None = None,
    counts: Counts | None = None,
    attempts: Attempts | None = None,
    start: State | None = None,
) -> str:
    """Graphviz DOT of the machine; the arguments mean what they mean for :func:`mermaid`."""
    traced = counts is not None or attempts is not None
    drawn = trace_arrows(counts or {}, attempts) if traced else arrows()
    drawn = _with_last(drawn, last)
    states = _states(drawn, traced)
    first = start or (INITIAL if not traced or INITIAL in states else None)
    lines = [
        "digraph session {",
        f"  // {_TRACED if traced else _GENERATED} Dashed edges are internal.",
        "  rankdir=TB; nodesep=0.6; ranksep=0.8;",
        '  node [shape=box, style="rounded", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for s in states:
        extra = f', style="rounded,filled", fillcolor="{CURRENT_FILL}"' if s is highlight else ""
        lines.append(f'  {s.name} [label="{_dot_text(s.value)}"{extra}];')
    if first is not None:
        lines.append('  start [shape=point, width=0.2, label=""];')
        lines.append(f"  start -> {first.name};")
    for a in drawn:
        attrs = [f'label="{_dot_text(a.text())}"']
        if a.attempt:
            attrs.append("style=dotted")
        elif a.internal:
            attrs.append("style=dashed")
        if a.marked or a.attempt:
            attrs += [f'color="{MARK}"', f'fontcolor="{MARK}"']
        if a.count is not None or a.marked:
            attrs.append(f"penwidth={_width(a.count) / 2 + 0.5 if a.count else 2.5:g}")
        lines.append(f"  {a.src.name} -> {a.dst.name} [{', '.join(attrs)}];")
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
