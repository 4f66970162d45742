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

import itertools
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape

from .core.snapshot import OK, TransitionRecord
from .errors import ConfigurationError
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
    ``group`` (table drawings only): the arrow stands for the same edge from each of these states
    and is drawn once, from a note naming them (``from any state``, ``from OTT-issued``).
    """

    src: State
    dst: State
    labels: tuple[str, ...]
    internal: bool
    triggers: tuple[str, ...] = ()
    count: int | None = None
    attempt: str | None = None
    marked: bool = False
    group: tuple[State, ...] = ()

    def text(self) -> str:
        """The arrow's label on one line (``" ".join(self.lines())``)."""
        return " / ".join(self.labels) + (f" (last: {self.attempt or OK})" if self.marked else "")

    def lines(self) -> list[str]:
        """The label as drawn: a trigger per line, its guards wrapped below it."""
        out: list[str] = []
        for i, label in enumerate(self.labels):
            if i:
                out[-1] += " /"
            trigger, _, guards = label.partition(" [")
            out.append(trigger)
            if guards:
                out += textwrap.wrap("[" + guards, _WRAP, break_long_words=False)
        if self.marked:
            out.append(f"(last: {self.attempt or OK})")
        return out

    @property
    def tail(self) -> str:
        """The id of the node the arrow starts at (a note for a group)."""
        return group_id(self.group, self.dst) if self.group else self.src.name

    @property
    def key(self) -> str:
        """The arrow's element id in the SVG (``arrow-TAIL-DST``), used by the status page."""
        return f"arrow-{self.tail}-{self.dst.name}"


#: Width (characters) a guard list is wrapped to.
_WRAP = 22
#: The happy path, drawn straight down.
HAPPY_PATH: tuple[State, ...] = ALL_STATES
_HAPPY = frozenset(itertools.pairwise(HAPPY_PATH))
LEGEND = (
    "Legend",
    "solid arrow: you call it",
    "dashed arrow: the library takes it on a server answer",
    "[guard]: must hold, or the call is refused",
    "yellow: current state; red: last transition",
)
FAILURE_NODE = "LAST_FAILURE"
#: Mermaid's layout settings: straight segments and room between nodes keep labels apart.
MERMAID_INIT = (
    '%%{init: {"flowchart": {"curve": "linear", "nodeSpacing": 80, "rankSpacing": 60}}}%%'
)


def _rank(state: State) -> int:
    return HAPPY_PATH.index(state)


def group_id(states: tuple[State, ...], dst: State | None = None) -> str:
    """Node id of the note a group arrow starts at (``ANY_OF_O_TO_INITIALISED``): a note per
    arrow, so the same states may have notes for several destinations."""
    if set(states) == set(ALL_STATES):
        return "ANY_STATE"
    return "ANY_OF_" + "_".join(s.name[0] for s in states) + (f"_TO_{dst.name}" if dst else "")


def group_label(states: tuple[State, ...]) -> str:
    """``from any state``, ``from OTT-issued``, or ``from Uninitialised, Initialised or
    Authenticated``."""
    if set(states) == set(ALL_STATES):
        return "from any state"
    names = [s.value for s in states]
    if len(names) == 1:
        return "from " + names[0]
    return "from " + ", ".join(names[:-1]) + " or " + names[-1]


def edge_label(e: Edge) -> str:
    """``trigger [guard, guard]`` for one edge."""
    return f"{e.trigger} [{', '.join(e.guards)}]" if e.guards else e.trigger


def arrows(edges: Iterable[Edge] = TRANSITIONS, grouped: bool = False) -> list[Arrow]:
    """Group edges by (src, dst), in table order.

    ``grouped`` (the table drawing): every edge off the happy path is drawn from a note naming
    the states it leaves (``from OTT-issued``; one arrow per trigger and destination, edges
    sharing those states and destination share it), so the happy-path states carry no other
    arrow out and no loop, and a layout can draw the happy path straight down (see
    :func:`mermaid`). The happy path's arrows come first.
    """
    edges = list(edges)
    noted = [e for e in edges if grouped and (e.source, e.dest) not in _HAPPY]
    by_trigger: dict[tuple[str, State], list[Edge]] = {}
    for e in noted:
        by_trigger.setdefault((e.trigger, e.dest), []).append(e)
    groups: dict[tuple[State, State] | tuple[tuple[State, ...], State], list[Edge]] = {}
    for e in edges:
        if e in noted:
            sources = tuple(x.source for x in by_trigger[(e.trigger, e.dest)])
            groups.setdefault((sources, e.dest), []).append(e)
        else:
            groups.setdefault((e.source, e.dest), []).append(e)
    out = []
    for (src, dst), es in groups.items():
        labels = tuple(dict.fromkeys(edge_label(e) for e in es))
        triggers = tuple(dict.fromkeys(e.trigger for e in es))
        internal = all(e.internal for e in es)
        if isinstance(src, tuple):
            out.append(Arrow(src[0], dst, labels, internal, triggers, group=src))
        else:
            out.append(Arrow(src, dst, labels, internal, triggers))
    if grouped:
        out.sort(key=lambda a: not (not a.group and (a.src, a.dst) in _HAPPY))
    return out


def arrow_for(record: TransitionRecord, drawn: Iterable[Arrow] | None = None) -> Arrow | None:
    """The arrow of the table drawing (grouped) that ``record``'s move takes, or None (an
    attempt that did not move, or a move the table does not have)."""
    for a in arrows(grouped=True) if drawn is None else drawn:
        source_ok = (record.src in a.group) if a.group else a.src is record.src
        if a.dst is record.dst and record.trigger in a.triggers and source_ok:
            return a
    return None


def failure_marker(record: TransitionRecord) -> str | None:
    """``login failed: LoginRejected 401001`` for a record that did not succeed, else None."""
    if record.outcome == OK:
        return None
    code = record.fault_code if record.fault_code is not None else record.status
    detail = " ".join(str(x) for x in (record.error, code) if x is not None)
    if not detail:
        detail = record.reason or ""
    elif record.reason == "cooldown":
        detail += " (cooldown)"
    return f"{record.trigger} {record.outcome}: {detail}".rstrip(": ")


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


def _with_last(drawn: list[Arrow], last: TransitionRecord | None, traced: bool) -> list[Arrow]:
    """Mark the arrow ``last`` took. In a trace, an attempt that did not move gets its own red
    loop; in the table drawing, a failure is a note instead (see :func:`_drawing`)."""
    if last is None:
        return drawn
    if last.outcome != OK and last.src == last.dst:
        if not traced:
            return drawn
        return [*drawn, _marked(_attempt(last.src, last.trigger, last.outcome, "", None))]
    hit = arrow_for(last, drawn)
    if hit is not None:
        return [_marked(a, last.outcome) if a is hit else a for a in drawn]
    # Not in the table (a transition logged by another version): draw it anyway, marked.
    extra = Arrow(last.src, last.dst, (last.trigger,), False, (last.trigger,))
    return [*drawn, _marked(extra, last.outcome)]


def _marked(a: Arrow, outcome: str | None = None) -> Arrow:
    attempt = a.attempt if outcome is None or outcome == OK else outcome
    return Arrow(a.src, a.dst, a.labels, a.internal, a.triggers, a.count, attempt, True, a.group)


def _states(drawn: list[Arrow], traced: bool) -> list[State]:
    """Every state for the table; for a trace only the states it visited, in table order."""
    if not traced:
        return list(ALL_STATES)
    seen = {a.src for a in drawn} | {a.dst for a in drawn}
    return [s for s in ALL_STATES if s in seen]


def _width(count: int | None) -> float:
    """Line width of a traced arrow: grows with the log of how often it was taken."""
    return 2.0 + min(4, (count or 1).bit_length() - 1)


@dataclass(frozen=True)
class _Drawing:
    """What both renderers draw: states, arrows, notes (groups, legend, failure marker)."""

    traced: bool
    states: list[State]
    arrows: list[Arrow]
    first: State | None
    groups: list[tuple[tuple[State, ...], State]]
    failure: tuple[State, str] | None


def _drawing(
    highlight: State | None,
    last: TransitionRecord | None,
    counts: Counts | None,
    attempts: Attempts | None,
    start: State | None,
) -> _Drawing:
    traced = counts is not None or attempts is not None
    drawn = trace_arrows(counts or {}, attempts) if traced else arrows(grouped=True)
    drawn = _with_last(drawn, last, traced)
    states = _states(drawn, traced)
    first = start or (INITIAL if not traced or INITIAL in states else None)
    groups = list(dict.fromkeys((a.group, a.dst) for a in drawn if a.group))
    marker = failure_marker(last) if last is not None and not traced else None
    failure = (last.dst, marker) if last is not None and marker else None
    return _Drawing(traced, states, drawn, first, groups, failure)


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
    d = _drawing(highlight, last, counts, attempts, start)
    lines = [
        MERMAID_INIT,
        "flowchart TD",
        "    %% " + (_TRACED if d.traced else _GENERATED),
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
        label = _mermaid_lines(textwrap.wrap(group_label(g), _WRAP))
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
            style.append(f"stroke-width:{_width(a.count) if a.count else 3:g}px")
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


def _spacers(d: _Drawing) -> list[tuple[str, State, str]]:
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
    return a.internal and not a.group and _rank(a.src) - _rank(a.dst) > 1


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
    d = _drawing(highlight, last, counts, attempts, start)
    lines = [
        "digraph session {",
        f"  // {_TRACED if d.traced else _GENERATED} Dashed edges are internal.",
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
        label = _dot_lines(textwrap.wrap(group_label(g), _WRAP))
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
            attrs.append(f"penwidth={_width(a.count) / 2 + 0.5 if a.count else 2.5:g}")
        if not d.traced:
            if not a.group and (a.src, a.dst) in _HAPPY:
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
