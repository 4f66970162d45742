"""The state diagram reads at a glance (issue 18, part 4), checked on the rendered pictures.

- graphviz: no arrow's label lies on another arrow (the label boxes are estimated from the
  font size, the arrows sampled along their Bézier curves);
- mermaid (mermaid-cli): the happy path Uninitialised -> ... -> LoggedOut is one column, top to
  bottom (the notes and invisible spacers of ``diagrams.mermaid`` keep dagre from bending it).
"""

from __future__ import annotations

import html
import re
from itertools import pairwise
from pathlib import Path

import pytest

from session_fsm import diagrams
from session_fsm.core.snapshot import OK, TransitionRecord
from session_fsm.table import State
from tests.test_diagrams import COMMITTED_MMD, needs_graphviz, render_with_mmdc

Point = tuple[float, float]
Box = tuple[float, float, float, float]

#: Helvetica at graphviz's edge font size (10): an upper bound of a character's width, px.
CHAR_WIDTH = 6.0
FONT_SIZE = 10.0


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text)]


def bezier_points(d: str, steps: int = 24) -> list[Point]:
    """Points along a graphviz edge path (``M x,y C x1,y1 x2,y2 x3,y3 ...``)."""
    nums = _numbers(d)
    pts = list(zip(nums[0::2], nums[1::2], strict=True))
    out = [pts[0]]
    for i in range(1, len(pts) - 2, 3):
        p0, p1, p2, p3 = pts[i - 1], pts[i], pts[i + 1], pts[i + 2]
        for k in range(1, steps + 1):
            t = k / steps
            a, b, c, e = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
            out.append(
                (
                    a * p0[0] + b * p1[0] + c * p2[0] + e * p3[0],
                    a * p0[1] + b * p1[1] + c * p2[1] + e * p3[1],
                )
            )
    return out


def edges(svg: str) -> dict[str, tuple[list[Point], list[tuple[str, Box]]]]:
    """Edge id -> (points along its path, [(label line, its box)]), from a graphviz SVG."""
    out = {}
    for m in re.finditer(r'<g id="([^"]+)" class="edge">(.*?)</g>', svg, re.S):
        body = m.group(2)
        path = re.search(r'<path\b[^>]*\bd="([^"]+)"', body)
        points = bezier_points(path.group(1)) if path else []
        labels = []
        for t in re.finditer(r'<text\b[^>]*x="([-\d.]+)" y="([-\d.]+)"[^>]*>(.*?)</text>', body):
            x, y, text = float(t.group(1)), float(t.group(2)), html.unescape(t.group(3))
            half = len(text) * CHAR_WIDTH / 2
            labels.append((text, (x - half, y - FONT_SIZE * 0.8, x + half, y + FONT_SIZE * 0.2)))
        out[html.unescape(m.group(1))] = (points, labels)
    return out


def overlaps(svg: str) -> list[tuple[str, str, str]]:
    """(label line, its arrow, the other arrow it lies on) for every such case."""
    found = edges(svg)
    hits = []
    for name, (_, labels) in found.items():
        for text, (x0, y0, x1, y1) in labels:
            for other, (points, _) in found.items():
                if other != name and any(x0 <= x <= x1 and y0 <= y <= y1 for x, y in points):
                    hits.append((text, name, other))
    return hits


def test_overlap_check_sees_a_label_on_an_arrow() -> None:
    """The oracle itself: a label drawn across another arrow is found, one beside it is not."""
    svg = (
        '<g id="a" class="edge"><path d="M0,0C10,0 20,0 30,0"/>'
        '<text x="15" y="3">across</text></g>'
        '<g id="b" class="edge"><path d="M0,50C10,50 20,50 30,50"/>'
        '<text x="15" y="-20">beside</text></g>'
    )
    assert overlaps(svg) == []  # a label on its own arrow is fine
    svg_hit = svg.replace('y="-20">beside', 'y="3">beside')
    assert ("beside", "b", "a") in overlaps(svg_hit)


REFRESHED = TransitionRecord(0.0, "refresh", State.AUTHENTICATED, State.AUTHENTICATED, OK)
LOGIN_FAILED = TransitionRecord(
    0.0, "login", State.INITIALISED, State.INITIALISED, "failed", error="LoginRejected",
    fault_code=401001,
)  # fmt: skip
DRAWINGS = {
    "table": {},
    "live, refresh marked": {"highlight": State.AUTHENTICATED, "last": REFRESHED},
    "live, login failed": {"highlight": State.INITIALISED, "last": LOGIN_FAILED},
}


@needs_graphviz
@pytest.mark.parametrize("drawing", DRAWINGS)
def test_graphviz_labels_lie_on_no_other_arrow(drawing: str) -> None:
    svg = diagrams.render("svg", **DRAWINGS[drawing]).decode()  # type: ignore[arg-type]
    svg = re.sub(r"<metadata\b.*?</metadata>", "", svg, flags=re.S)
    assert len(edges(svg)) == svg.count('class="edge"') > 10
    assert overlaps(svg) == []


def test_committed_graphviz_labels_lie_on_no_other_arrow() -> None:
    svg = (Path(__file__).resolve().parent.parent / "diagrams" / "session.svg").read_text()
    svg = re.sub(r"<metadata\b.*?</metadata>", "", svg, flags=re.S)
    assert overlaps(svg) == []


# --- mermaid ---------------------------------------------------------------------------------


class HappyPathBends(AssertionError):
    """The happy path is not one straight column in mermaid-cli's picture."""


def node_centres(svg: str) -> dict[str, Point]:
    """Node id -> (x, y) of its centre, read from the ``translate`` mermaid-cli gives each node."""
    found = re.finditer(
        r'<g class="node[^"]*" id="[\w-]*?flowchart-(\w+?)-\d+"[^>]*?'
        r'transform="translate\(([-\d.]+),\s*([-\d.]+)\)"',
        svg,
    )
    return {m.group(1): (float(m.group(2)), float(m.group(3))) for m in found}


def check_happy_path_straight(svg: str) -> None:
    centres = node_centres(svg)
    path = [centres[s.name] for s in diagrams.HAPPY_PATH]
    ys = [y for _, y in path]
    assert ys == sorted(ys) and len(set(ys)) == len(ys), f"happy path not top to bottom: {ys}"
    xs = [round(x) for x, _ in path]
    if max(xs) - min(xs) > 2:
        raise HappyPathBends(f"happy path bends: x-centres {xs} (top to bottom)")


def test_committed_mermaid_draws_the_happy_path_straight_down(tmp_path: Path) -> None:
    """Uninitialised -> Initialised -> OTT-issued -> Authenticated -> LoggedOut: one column,
    top to bottom, in the picture mermaid-cli draws (x-centres equal within 2 px)."""
    svg, _ = render_with_mmdc(COMMITTED_MMD, tmp_path / "session.svg")
    check_happy_path_straight(svg)


def test_straightness_check_accepts_a_straight_column(tmp_path: Path) -> None:
    """The oracle itself on mermaid-cli: the happy path alone is drawn straight and passes; the
    committed diagram's happy path reaches the check (all five states drawn, top to bottom)."""
    source = tmp_path / "happy.mmd"
    names = [s.name for s in diagrams.HAPPY_PATH]
    lines = ["flowchart TD"] + [f'    {a}("{a}") --> {b}("{b}")' for a, b in pairwise(names)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    svg, _ = render_with_mmdc(source, tmp_path / "happy.svg")
    check_happy_path_straight(svg)


def boxes(svg: str) -> dict[str, Box]:
    """Node id or ``label:<edge id>`` -> its box, from a mermaid-cli SVG (spacers have none)."""
    out: dict[str, Box] = {}
    for m in re.finditer(
        r'<g class="node[^"]*" id="[\w-]*?flowchart-(\w+?)-\d+"[^>]*?'
        r'transform="translate\(([-\d.]+),\s*([-\d.]+)\)"><rect[^>]*?'
        r'width="([\d.]+)" height="([\d.]+)"',
        svg,
    ):
        x, y, w, h = (float(m.group(i)) for i in range(2, 6))
        out[m.group(1)] = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
    for m in re.finditer(
        r'<g class="edgeLabel" transform="translate\(([-\d.]+),\s*([-\d.]+)\)">'
        r'<g class="label" data-id="([^"]+)"[^>]*><foreignObject width="([\d.]+)" '
        r'height="([\d.]+)"',
        svg,
    ):
        x, y, w, h = (float(m.group(i)) for i in (1, 2, 4, 5))
        if w and h:
            out["label:" + m.group(3)] = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
    return out


def _meet(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_box_check_sees_a_label_on_the_failure_note() -> None:
    """The oracle itself: boxes read from mermaid-cli markup, and overlap found only when real."""
    svg = (
        '<g class="node default failure" id="x-flowchart-LAST_FAILURE-9" data-look="classic" '
        'transform="translate(100, 50)"><rect class="basic" x="-50" y="-20" width="100" '
        'height="40"/>'
        '<g class="edgeLabel" transform="translate(140, 60)"><g class="label" data-id="L_A_B_0" '
        'transform="translate(-10, -12)"><foreignObject width="20" height="24">'
    )
    found = boxes(svg)
    assert found["LAST_FAILURE"] == (50.0, 30.0, 150.0, 70.0)
    assert _meet(found["LAST_FAILURE"], found["label:L_A_B_0"])
    assert not _meet(found["LAST_FAILURE"], (151.0, 0.0, 200.0, 100.0))


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_live_mermaid_failure_marker_keeps_the_column_and_covers_no_label(
    state: State, tmp_path: Path
) -> None:
    """The live diagram after a failed call (``login failed: LoginRejected 401001`` beside the
    state it left the session in): happy path still one column, and the marker's box meets no
    arrow label and no other node in the picture mermaid-cli draws."""
    failed = TransitionRecord(
        0.0, "login", state, state, "failed", error="LoginRejected", fault_code=401001
    )
    source = tmp_path / "live.mmd"
    source.write_text(diagrams.mermaid(highlight=state, last=failed), encoding="utf-8")
    svg, text = render_with_mmdc(source, tmp_path / "live.svg")
    assert "login failed: LoginRejected 401001" in " ".join(text.split())
    check_happy_path_straight(svg)
    found = boxes(svg)
    marker = found.pop(diagrams.FAILURE_NODE)
    assert len(found) > 20  # every state, note and arrow label was read
    assert [name for name, box in found.items() if _meet(marker, box)] == []
