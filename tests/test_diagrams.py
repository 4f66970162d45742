"""Diagrams from the transition table: every format, highlight, live session, committed files.

The oracle is :data:`~session_fsm.table.TRANSITIONS` itself, read edge by edge; the renderers'
own grouping (``diagrams.arrows``) is not trusted to check itself. Replayed logs: test_trace.py.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from session_fsm import KSSession, contract, diagrams
from session_fsm.cli import main
from session_fsm.core.snapshot import TransitionRecord
from session_fsm.errors import ConfigurationError, InvalidTransition, KSError
from session_fsm.sandbox import Sandbox
from session_fsm.table import (
    ALL_STATES,
    GUARDS,
    INTERNAL_TRIGGERS,
    TRANSITIONS,
    USER_TRIGGERS,
    State,
)

ROOT = Path(__file__).resolve().parent.parent
COMMITTED_MMD = ROOT / "diagrams" / "session.mmd"
COMMITTED_SVG = ROOT / "diagrams" / "session.svg"
REGENERATE = "rerun: session-fsm diagram --format {fmt} -o diagrams/session.{ext}"

MERMAID_ARROW = re.compile(r'^ {4}(\w+) (-->|-\.->)\|"(.*)"\| (\w+)$')
DOT_ARROW = re.compile(r'^ {2}(\w+) -> (\w+) \[label="(.*?)"(.*)\];$')


def expected_edges() -> set[tuple[str, str, str, bool]]:
    """(src id, dst id, ``trigger [guards]``, internal) for every edge of the table."""
    out = set()
    for e in TRANSITIONS:
        label = f"{e.trigger} [{', '.join(e.guards)}]" if e.guards else e.trigger
        out.add((e.source.name, e.dest.name, label, e.internal))
    return out


def mermaid_arrows(text: str) -> list[tuple[str, str, str, str]]:
    """(src, arrow, label, dst) of every labelled arrow line, in order; a label's line breaks
    read as spaces."""
    return [
        (m.group(1), m.group(2), m.group(3).replace("<br>", " "), m.group(4))
        for line in text.splitlines()
        if (m := MERMAID_ARROW.match(line))
    ]


MERMAID_NOTE = re.compile(r'^ {4}(ANY_\w+)\["(.*)"\]$')
DOT_NOTE = re.compile(r'^ {2}(ANY_\w+) \[label="(.*?)"')


def sources_named(label: str) -> list[str]:
    """The states a "from ..." note names (``from any state``: all of them)."""
    if label == "from any state":
        return [s.name for s in ALL_STATES]
    return [s.name for s in ALL_STATES if re.search(rf"\b{re.escape(s.value)}\b", label)]


def notes(text: str, pattern: re.Pattern[str], newline: str) -> dict[str, list[str]]:
    """Note node id -> the states it stands for, read from the note's own label."""
    return {
        m.group(1): sources_named(m.group(2).replace(newline, " "))
        for line in text.splitlines()
        if (m := pattern.match(line))
    }


def expand(rows: list[tuple[str, str, str, bool]], groups: dict[str, list[str]]) -> list[
    tuple[str, str, str, bool]
]:
    """An arrow from a note is the same edge from each state the note names."""
    return [(src, d, label, i) for s, d, label, i in rows for src in groups.get(s, [s])]


def expected_arrow_count(internal: bool | None = None) -> int:
    """Arrows the table drawing has: one per (source, dest), except that an edge from three
    or more states is drawn once (edges sharing those states and dest share it)."""
    sources: dict[tuple[str, State], list[State]] = {}
    for e in TRANSITIONS:
        sources.setdefault((e.trigger, e.dest), []).append(e.source)
    keys = set()
    for e in TRANSITIONS:
        if internal is not None and e.internal != internal:
            continue
        srcs = sources[(e.trigger, e.dest)]
        keys.add((tuple(srcs), e.dest) if len(srcs) >= 3 else (e.source, e.dest))
    return len(keys)


def drawn_edges(rows: list[tuple[str, str, str, bool]]) -> set[tuple[str, str, str, bool]]:
    """Split merged labels (``a / b``) back into one entry per edge."""
    return {(s, d, part, internal) for s, d, label, internal in rows for part in label.split(" / ")}


def svg_texts(svg: str) -> list[str]:
    """The text of every graphviz ``<text>`` element (never the embedded DOT metadata)."""
    svg = re.sub(r"<metadata\b.*?</metadata>", "", svg, flags=re.S)
    return [html.unescape(t) for t in re.findall(r"<text\b[^>]*>(.*?)</text>", svg, re.S)]


def have_graphviz() -> bool:
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


needs_graphviz = pytest.mark.skipif(not have_graphviz(), reason="graphviz package or dot missing")


# --- every state and edge in every format --------------------------------------------------------


def test_mermaid_has_every_state_and_edge_with_guards_and_internal_dashed() -> None:
    text = diagrams.mermaid()
    for s in ALL_STATES:
        assert f'    {s.name}("{s.value}")' in text.splitlines()
    rows = [(s, d, label, arrow == "-.->") for s, arrow, label, d in mermaid_arrows(text)]
    assert drawn_edges(expand(rows, notes(text, MERMAID_NOTE, "<br>"))) == expected_edges()
    assert len(rows) == expected_arrow_count()  # "from any state" edges drawn once
    assert "    start(( )) --> UNINITIALISED" in text
    assert "linkStyle" not in text and "classDef current" not in text  # nothing marked


def test_dot_has_every_state_and_edge_with_guards_and_internal_dashed() -> None:
    text = diagrams.dot()
    for s in ALL_STATES:
        assert f'  {s.name} [label="{s.value}", id="state-{s.name}", group=happy];' in text
    rows = []
    for line in text.splitlines():
        m = DOT_ARROW.match(line)
        if m and m.group(1) != "start":
            label = m.group(3).replace("\\n", " ")
            rows.append((m.group(1), m.group(2), label, "style=dashed" in m.group(4)))
    assert drawn_edges(expand(rows, notes(text, DOT_NOTE, "\\n"))) == expected_edges()
    assert len(rows) == expected_arrow_count()


@needs_graphviz
def test_svg_draws_every_state_and_edge_label() -> None:
    svg = diagrams.render("svg").decode()
    texts = svg_texts(svg)
    for s in ALL_STATES:
        assert s.value in texts
    joined = " ".join(texts)  # a wrapped label's lines are consecutive <text> elements
    for _, _, label, _ in expected_edges():
        assert label in joined, label
    assert "Legend" in texts
    assert len(re.findall(r"<path[^>]*stroke-dasharray", svg)) == expected_arrow_count(True)
    assert svg.count('class="edge"') == expected_arrow_count() + 1


@needs_graphviz
def test_png_is_drawn_from_the_checked_dot_source() -> None:
    import graphviz

    png = diagrams.render("png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png == graphviz.Source(diagrams.dot()).pipe(format="png")


def test_highlight_marks_exactly_one_state_in_mermaid_and_dot() -> None:
    for state in ALL_STATES:
        text = diagrams.mermaid(highlight=state)
        assert [
            ln for ln in text.splitlines() if ln.startswith("    class ") and "current" in ln
        ] == [f"    class {state.name} current"]
        filled = [
            ln
            for ln in diagrams.dot(highlight=state).splitlines()
            if f'fillcolor="{diagrams.CURRENT_FILL}"' in ln
        ]
        assert filled == [
            f'  {state.name} [label="{state.value}", style="rounded,filled", '
            f'fillcolor="{diagrams.CURRENT_FILL}", id="state-{state.name}", group=happy];'
        ]


@pytest.mark.parametrize("spelling", ["OTT-issued", "ott_issued", "OTT_ISSUED", "ott-issued"])
def test_cli_highlight_accepts_display_name_or_enum_name(
    spelling: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diagram", "--highlight", spelling]) == 0
    assert capsys.readouterr().out == diagrams.mermaid(highlight=State.OTT_ISSUED)


def test_cli_unknown_highlight_is_one_line_naming_the_states(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["diagram", "--highlight", "Nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'Nowhere'" in err
    assert all(s.value in err for s in ALL_STATES)


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_cli_output_file_is_the_rendered_diagram(fmt: str, tmp_path: Path) -> None:
    out = tmp_path / "sub" / f"d.{fmt}"
    assert main(["diagram", "--format", fmt, "--highlight", "Authenticated", "-o", str(out)]) == 0
    assert out.read_bytes() == diagrams.render(fmt, highlight=State.AUTHENTICATED)


# --- graphviz missing: one clear line naming the missing piece -----------------------------------


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_missing_graphviz_package_is_named(
    fmt: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz -> ImportError
    with pytest.raises(ConfigurationError, match="needs the graphviz Python package"):
        diagrams.render(fmt)
    assert main(["diagram", "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "graphviz Python package" in err and "pip install" in err


@needs_graphviz
@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_missing_dot_program_is_named(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no dot on PATH
    with pytest.raises(ConfigurationError, match="needs the graphviz 'dot' program"):
        diagrams.render(fmt)
    assert main(["diagram", "--format", fmt, "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'dot' program" in err and "apt-get install graphviz" in err
    assert not (tmp_path / "x").exists()


# --- the committed diagrams are what the table draws now -----------------------------------------


def test_committed_mermaid_is_current() -> None:
    assert COMMITTED_MMD.read_text(encoding="utf-8") == diagrams.mermaid(), REGENERATE.format(
        fmt="mermaid", ext="mmd"
    )


def test_committed_svg_was_drawn_from_the_current_dot() -> None:
    """Always runs: the DOT embedded in the SVG is exactly what the table gives now."""
    embedded = diagrams.embedded_dot(COMMITTED_SVG.read_text(encoding="utf-8"))
    assert embedded == diagrams.dot(), REGENERATE.format(fmt="svg", ext="svg")


@needs_graphviz
def test_committed_svg_is_byte_identical_when_graphviz_matches() -> None:
    """Layout coordinates belong to a graphviz version: compare the whole file on the same one."""
    committed = COMMITTED_SVG.read_text(encoding="utf-8")
    made_by = re.search(r"<!-- Generated by graphviz version (\S+)", committed)
    here = subprocess.run(["dot", "-V"], capture_output=True, text=True, check=True).stderr
    assert made_by is not None
    if f"version {made_by.group(1)} " not in here:
        pytest.skip(f"committed SVG made by graphviz {made_by.group(1)}, here: {here.strip()}")
    assert diagrams.render("svg").decode() == committed, REGENERATE.format(fmt="svg", ext="svg")


def test_embedded_dot_survives_xml_escaping() -> None:
    svg = '<svg a="1">\n<metadata id="session-fsm-dot">\nx -&gt; y &amp; &lt;z&gt;</metadata>'
    assert diagrams.embedded_dot(svg) == "x -> y & <z>"
    assert diagrams.embedded_dot("<svg></svg>") is None


# --- live: session.diagram() on a real session ---------------------------------------------------


def marked(text: str) -> list[tuple[str, str, str, str]]:
    """The arrows a linkStyle paints red, by their index among the drawn links (mermaid counts
    the invisible ``~~~`` links too)."""
    links = [ln for ln in text.splitlines() if re.search(r" (-->|-\.->|-\.-|~~~)[ |]", ln)]
    red = [
        int(m.group(1))
        for ln in text.splitlines()
        if (m := re.match(r"    linkStyle (\d+) .*stroke:" + diagrams.MARK, ln))
    ]
    return [mermaid_arrows(links[i])[0] for i in red if MERMAID_ARROW.match(links[i])]


def failure_note(text: str) -> list[tuple[str, str]]:
    """(state, text) of the red failure note and the state it is attached to."""
    label = re.findall(r'^    LAST_FAILURE\["(.*)"\]$', text, re.M)
    attached = re.findall(r"^    LAST_FAILURE -\.- (\w+)$", text, re.M)
    return list(zip(attached, label, strict=True))


def current(text: str) -> list[str]:
    return re.findall(r"^    class (\w+) current$", text, re.M)


def test_live_diagram_follows_a_real_session(new_session: Callable[..., KSSession]) -> None:
    s = new_session()
    assert current(s.diagram()) == ["UNINITIALISED"] and marked(s.diagram()) == []

    s.connect()
    d = s.diagram()
    assert current(d) == ["AUTHENTICATED"]
    assert marked(d) == [
        ("OTT_ISSUED", "-->", "authenticate [has_ott, ott_fresh, has_access_code] (last: ok)",
         "AUTHENTICATED")
    ]  # fmt: skip

    s.logout()
    assert current(s.diagram()) == ["LOGGED_OUT"]
    assert marked(s.diagram()) == [("AUTHENTICATED", "-->", "logout (last: ok)", "LOGGED_OUT")]

    with pytest.raises(InvalidTransition):
        s.login()
    d = s.diagram()
    assert current(d) == ["LOGGED_OUT"]
    # A refused trigger does not move: a red note names it, the table arrows stay as drawn.
    assert marked(d) == [] and failure_note(d) == [("LOGGED_OUT", "login refused: no edge")]
    assert len(mermaid_arrows(d)) == len(mermaid_arrows(diagrams.mermaid()))


def test_live_diagram_marks_an_internal_edge(
    sb: Sandbox, new_session: Callable[..., KSSession]
) -> None:
    s = new_session()
    s.init()
    s.login()
    sb.control.fault(contract.TWO_FA_ACCESSCODE[1], status=401, code=contract.FAULT_OTT_INVALID)
    with pytest.raises(KSError):
        s.authenticate()
    assert [(r.trigger, r.outcome) for r in s.history[-2:]] == [
        ("authenticate", "failed"), ("ott_rejected", "ok")
    ]  # fmt: skip
    d = s.diagram()
    assert current(d) == ["INITIALISED"]
    note = diagrams.group_id((State.OTT_ISSUED,), State.INITIALISED)  # drawn from "from OTT-issued"
    assert note in notes(d, MERMAID_NOTE, "<br>") and notes(d, MERMAID_NOTE, "<br>")[note] == [
        "OTT_ISSUED"
    ]
    assert marked(d) == [(note, "-.->", "ott_rejected (last: ok)", "INITIALISED")]


# --- the committed mermaid renders in the real mermaid renderer ----------------------------------


def _mmdc() -> str | None:
    return os.environ.get("MMDC") or shutil.which("mmdc")


def _puppeteer_config() -> str | None:
    """MMDC_PUPPETEER_CONFIG, else the committed one when Debian's chromium is there."""
    if os.environ.get("MMDC_PUPPETEER_CONFIG"):
        return os.environ["MMDC_PUPPETEER_CONFIG"]
    if Path("/usr/bin/chromium").exists():
        return str(ROOT / ".ci" / "puppeteer.json")
    return None


def render_with_mmdc(source: Path, out: Path) -> tuple[str, str]:
    """Render ``source`` with mermaid-cli; the SVG's visible text (tags and styles stripped)."""
    mmdc = _mmdc()
    if mmdc is None:
        why = (
            "mermaid-cli not found: set MMDC=/path/to/mmdc or put mmdc on PATH"
            " (bash .ci/mermaid-check.sh installs it)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {why}")
        pytest.skip(why)
    cmd = [mmdc, "-q", "-i", str(source), "-o", str(out)]
    if (config := _puppeteer_config()) is not None:
        cmd += ["-p", config]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"mmdc failed:\n{done.stderr[-2000:]}"
    svg = out.read_text(encoding="utf-8")
    assert "Syntax error" not in svg
    visible = re.sub(r"<style\b.*?</style>", " ", svg, flags=re.S)
    return svg, html.unescape(re.sub(r"<[^>]+>", " ", visible))


def test_committed_mermaid_renders_in_mermaid_cli(tmp_path: Path) -> None:
    svg, text = render_with_mmdc(COMMITTED_MMD, tmp_path / "session.svg")
    for s in ALL_STATES:
        assert s.value in text, f"state {s.value} not drawn"
    for trigger in (*USER_TRIGGERS, *INTERNAL_TRIGGERS):
        assert re.search(rf"\b{trigger}\b", text), f"trigger {trigger} not drawn"
    for guard in GUARDS:
        assert guard in text, f"guard {guard} not drawn"
    links = re.findall(r"<path\b[^>]*data-edge=\"true\"[^>]*>", svg)
    links = [p for p in links if "edge-thickness-invisible" not in p]  # the layout's spacers
    assert len(links) == expected_arrow_count() + 1  # + the start arrow
    assert sum("edge-pattern-dotted" in p for p in links) == expected_arrow_count(True)
    assert "Legend" in text and "from any state" in text


def test_live_and_trace_variants_render_in_mermaid_cli(tmp_path: Path) -> None:
    """The marked (last), highlighted and counted variants are valid mermaid too."""
    refused = TransitionRecord(0.0, "login", State.LOGGED_OUT, State.LOGGED_OUT, "refused")
    live = diagrams.mermaid(highlight=State.LOGGED_OUT, last=refused)
    traced = diagrams.mermaid(
        counts={
            (State.UNINITIALISED, State.INITIALISED, "init"): 1,
            (State.INITIALISED, State.OTT_ISSUED, "login"): 17,
            (State.OTT_ISSUED, State.INITIALISED, "ott_rejected"): 2,
        },
        attempts={(State.OTT_ISSUED, "authenticate", "failed"): 2},
        highlight=State.OTT_ISSUED,
    )
    for name, source in (("live", live), ("traced", traced)):
        path = tmp_path / f"{name}.mmd"
        path.write_text(source, encoding="utf-8")
        svg, text = render_with_mmdc(path, tmp_path / f"{name}.svg")
        for label in re.findall(r'\|"(.*?)"\||\["(.*?)"\]', source):
            for line in "<br>".join(label).split("<br>"):
                assert not line or line in text, f"{name}: {line!r} not drawn"
        assert svg.count(diagrams.MARK) >= 1, f"{name}: nothing drawn in red"


def test_readme_mermaid_block_is_the_committed_diagram() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    blocks = re.findall(r"^```mermaid\n(.*?)^```$", text, re.S | re.M)
    if not blocks:
        pytest.skip("README.md shows no mermaid diagram yet")
    assert COMMITTED_MMD.read_text(encoding="utf-8") in blocks, (
        "README's mermaid block differs from diagrams/session.mmd: paste the file in again"
    )


def test_live_failure_note_names_the_error_in_both_renderers(
    sb: Sandbox, new_session: Callable[..., KSSession]
) -> None:
    s = new_session()
    s.init()
    sb.control.fault(contract.LOGIN_USERID[1], status=401, code=contract.FAULT_WRONG_PASSWORD)
    with pytest.raises(KSError):
        s.login()
    d = s.diagram()
    assert failure_note(d) == [("INITIALISED", "login failed: LoginRejected 401001")]
    assert current(d) == ["INITIALISED"] and marked(d) == []  # no arrow taken: a note instead
    last = s.history[-1]
    source = diagrams.dot(highlight=s.state, last=last)
    assert 'LAST_FAILURE [label="login failed: LoginRejected 401001"' in source
    assert f'  INITIALISED -> LAST_FAILURE [style=dotted, color="{diagrams.MARK}"' in source
