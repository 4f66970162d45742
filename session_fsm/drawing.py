"""The drawing model of the state diagrams: which states, arrows and notes a picture has.

Read from :data:`~session_fsm.table.TRANSITIONS` (or from a replayed log's counts), shared by
the two renderers in :mod:`session_fsm.diagrams` (mermaid and graphviz DOT) and by the status
page, which finds the arrow a transition took. Edges between the same two states are merged
into one :class:`Arrow` whose label lists the triggers (guards in brackets); internal edges are
marked so a renderer draws them dashed.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .core.snapshot import OK, TransitionRecord
from .table import ALL_STATES, INITIAL, INTERNAL_TRIGGERS, TRANSITIONS, Edge, State

#: A taken edge of a trace: (source, destination, trigger) -> how often.
Counts = Mapping[tuple[State, State, str], int]
#: An attempt that left the state unchanged (refused, or failed before moving):
#: (state, trigger, outcome) -> how often.
Attempts = Mapping[tuple[State, str, str], int]

#: Colours shared by every format: the highlighted state, the marked (last) arrow, failures.
CURRENT_FILL = "#f9d65c"
MARK = "#dd3333"
GENERATED = "Generated from session_fsm.table.TRANSITIONS; do not edit by hand."
TRACED = "Replayed from a transition log; each arrow says how often it was taken."


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
                out += textwrap.wrap("[" + guards, WRAP, break_long_words=False)
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
WRAP = 22
#: The happy path, drawn straight down.
HAPPY_PATH: tuple[State, ...] = ALL_STATES
HAPPY_EDGES = frozenset(itertools.pairwise(HAPPY_PATH))
LEGEND = (
    "Legend",
    "solid arrow: you call it",
    "dashed arrow: the library takes it on a server answer",
    "[guard]: must hold, or the call is refused",
    "yellow: current state; red: last transition",
)
FAILURE_NODE = "LAST_FAILURE"


def rank(state: State) -> int:
    """Where ``state`` is on the happy path (0 for the first)."""
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
    :func:`session_fsm.diagrams.mermaid`). The happy path's arrows come first.
    """
    edges = list(edges)
    noted = [e for e in edges if grouped and (e.source, e.dest) not in HAPPY_EDGES]
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
        out.sort(key=lambda a: not (not a.group and (a.src, a.dst) in HAPPY_EDGES))
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
    loop; in the table drawing, a failure is a note instead (see :func:`drawing`)."""
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


def width(count: int | None) -> float:
    """Line width of a traced arrow: grows with the log of how often it was taken."""
    return 2.0 + min(4, (count or 1).bit_length() - 1)


@dataclass(frozen=True)
class Drawing:
    """What both renderers draw: states, arrows, notes (groups, legend, failure marker)."""

    traced: bool
    states: list[State]
    arrows: list[Arrow]
    first: State | None
    groups: list[tuple[tuple[State, ...], State]]
    failure: tuple[State, str] | None


def drawing(
    highlight: State | None,
    last: TransitionRecord | None,
    counts: Counts | None,
    attempts: Attempts | None,
    start: State | None,
) -> Drawing:
    traced = counts is not None or attempts is not None
    drawn = trace_arrows(counts or {}, attempts) if traced else arrows(grouped=True)
    drawn = _with_last(drawn, last, traced)
    states = _states(drawn, traced)
    first = start or (INITIAL if not traced or INITIAL in states else None)
    groups = list(dict.fromkeys((a.group, a.dst) for a in drawn if a.group))
    marker = failure_marker(last) if last is not None and not traced else None
    failure = (last.dst, marker) if last is not None and marker else None
    return Drawing(traced, states, drawn, first, groups, failure)
