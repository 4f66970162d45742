"""State diagrams drawn from the transition table: mermaid text, graphviz DOT, SVG/PNG.

Every renderer reads :data:`~session_fsm.table.TRANSITIONS`; edges between the same two states
are merged into one arrow whose label lists the triggers (with guards in brackets), and
internal edges (taken by the library) are marked ``(internal)`` / drawn dashed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import ConfigurationError
from .snapshot import TransitionRecord
from .table import ALL_STATES, INITIAL, TRANSITIONS, Edge, State

FORMATS = ("mermaid", "dot", "svg", "png")


@dataclass(frozen=True)
class Arrow:
    """One drawn arrow: all edges from ``src`` to ``dst``."""

    src: State
    dst: State
    labels: tuple[str, ...]
    internal: bool
    count: int | None = None


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
        out.append(Arrow(src, dst, labels, all(e.internal for e in es)))
    return out


def _mid(state: State) -> str:
    return state.name


def mermaid(
    *,
    highlight: State | None = None,
    last: TransitionRecord | None = None,
    counts: Mapping[tuple[State, State, str], int] | None = None,
) -> str:
    """Mermaid ``stateDiagram-v2`` of the machine.

    ``highlight`` colours one state; ``last`` marks the arrow of that transition; ``counts``
    (from a trace) draws only the arrows taken, each labelled with how often.
    """
    lines = ["stateDiagram-v2"]
    for s in ALL_STATES:
        lines.append(f'    state "{s.value}" as {_mid(s)}')
    lines.append(f"    [*] --> {_mid(INITIAL)}")
    if counts is not None:
        for (src, dst, trig), n in counts.items():
            lines.append(f"    {_mid(src)} --> {_mid(dst)}: {trig} x{n}")
    else:
        for a in arrows():
            label = " / ".join(a.labels) + (" (internal)" if a.internal else "")
            if (
                last is not None
                and (last.src, last.dst) == (a.src, a.dst)
                and any(lbl.split(" ")[0] == last.trigger for lbl in a.labels)
            ):
                label += f" -- last: {last.trigger} {last.outcome}"
            lines.append(f"    {_mid(a.src)} --> {_mid(a.dst)}: {label}")
    if highlight is not None:
        lines.append("    classDef current fill:#f9d65c,stroke:#333,stroke-width:3px")
        lines.append(f"    class {_mid(highlight)} current")
    return "\n".join(lines) + "\n"


def dot(*, highlight: State | None = None) -> str:
    """Graphviz DOT of the machine (internal edges dashed)."""
    lines = [
        "digraph session {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded"];',
        '  start [shape=point, label=""];',
    ]
    for s in ALL_STATES:
        extra = ', style="rounded,filled", fillcolor="#f9d65c"' if s is highlight else ""
        lines.append(f'  {_mid(s)} [label="{s.value}"{extra}];')
    lines.append(f"  start -> {_mid(INITIAL)};")
    for a in arrows():
        style = ", style=dashed" if a.internal else ""
        label = "\\n".join(a.labels)
        lines.append(f'  {_mid(a.src)} -> {_mid(a.dst)} [label="{label}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(fmt: str, *, highlight: State | None = None) -> bytes:
    """The diagram in ``fmt`` (one of :data:`FORMATS`) as bytes.

    SVG and PNG need the ``graphviz`` Python package and the system ``dot`` binary; when either
    is missing a ConfigurationError names it.
    """
    if fmt == "mermaid":
        return mermaid(highlight=highlight).encode()
    if fmt == "dot":
        return dot(highlight=highlight).encode()
    if fmt not in FORMATS:
        raise ConfigurationError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    try:
        import graphviz
    except ImportError:
        raise ConfigurationError(
            f"{fmt} output needs the graphviz Python package",
            hint="pip install 'session_fsm[graphviz]'",
        ) from None
    try:
        out: bytes = graphviz.Source(dot(highlight=highlight)).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise ConfigurationError(
            f"{fmt} output needs the graphviz 'dot' program",
            hint="install it (Debian: apt-get install graphviz)",
        ) from None
    return out
