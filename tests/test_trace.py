"""``session-fsm trace``: logs recorded from real sessions on the sandbox, replayed.

Each log is written by the library's own JSON renderer (``configure_logging(json=True)``) while
a real session talks to the sandbox over loopback; the session's ``history`` is the oracle.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from session_fsm import KSSession, configure_logging, contract, diagrams
from session_fsm.cli import main
from session_fsm.core.snapshot import TransitionRecord
from session_fsm.errors import InvalidTransition, KSError
from session_fsm.sandbox import Sandbox
from session_fsm.table import ALL_STATES, State
from session_fsm.trace import Skip, parse_line, read_trace, run_trace

#: Secrets of the sandbox's demo account and shapes of tokens: none may ever be printed.
SECRETS = ("demo-password", "1234", "demo-access-token", "hunter2", "s3cr3t-token")


def run_day(s: KSSession, sb: Sandbox) -> None:
    """A bot's bad day: a rejected one-time token, an expired session, a refused call, logout."""
    sb.control.fault(contract.TWO_FA_ACCESSCODE[1], status=401, code=contract.FAULT_OTT_INVALID)
    s.init()
    s.login()
    with pytest.raises(KSError):
        s.authenticate()  # authenticate failed, then the internal ott_rejected edge
    s.connect()  # login + authenticate again
    s.get(contract.ORDERS_REPORT[1])
    sb.control.expire()
    s.get(contract.ORDERS_REPORT[1])  # 401 -> session_expired -> re-login -> replay
    with pytest.raises(InvalidTransition):
        s.login()  # refused: no edge from Authenticated
    s.logout()


@pytest.fixture
def recorded(
    tmp_path: Path, sb: Sandbox, new_session: Callable[..., KSSession]
) -> Iterator[tuple[Path, tuple[TransitionRecord, ...]]]:
    """A JSON log of :func:`run_day` on the sandbox, and the session's history (the oracle)."""
    log = tmp_path / "bot.log"
    with log.open("w", encoding="utf-8") as f:
        configure_logging(json=True, stream=f)
        try:
            s = new_session()
            run_day(s, sb)
        finally:
            structlog.reset_defaults()
    yield log, s.history


def run(log: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    fmt = args[0] if args else "mermaid"
    output = Path(args[1]) if len(args) > 1 else None
    code = run_trace(log, fmt, output, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def rows(out: str) -> list[list[str]]:
    """The timeline's numbered rows, split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", ln.strip()) for ln in out.splitlines() if re.match(r"\d+\.\s", ln)]


def test_timeline_lists_every_attempt_in_order(
    recorded: tuple[Path, tuple[TransitionRecord, ...]],
) -> None:
    log, history = recorded
    code, out, err = run(log)
    assert code == 0
    got = rows(out)
    assert [r[0] for r in got] == [f"{i}." for i in range(1, len(history) + 1)]
    want = [
        [rec.trigger, f"{rec.src.value} -> {rec.dst.value}", rec.outcome,
         "-" if rec.status is None else str(rec.status)]
        for rec in history
    ]  # fmt: skip
    assert [r[2:6] for r in got] == want
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z", r[1]) for r in got)
    # The day as planned: one rejected OTT, one expiry, one refused login, a logout at the end.
    outcomes = Counter((r[2], r[4]) for r in got)
    assert outcomes[("authenticate", "failed")] == 1 and outcomes[("ott_rejected", "ok")] == 1
    assert outcomes[("session_expired", "ok")] == 1 and outcomes[("login", "refused")] == 1
    assert got[-1][2:5] == ["logout", "Authenticated -> LoggedOut", "ok"]
    failed = next(r for r in got if r[4] == "failed")
    assert failed[5] == "401" and failed[6] == "OneTimeTokenRejected, fault 50001"
    # A refused trigger logs no guards (it evaluated none), not the previous trigger's.
    events = [json.loads(ln) for ln in log.read_text().splitlines() if '"transition"' in ln]
    assert next(e for e in events if e["outcome"] == "refused")["guards"] == {}
    # The real log also holds non-transition events (the replayed request): reported, not shown.
    assert re.fullmatch(
        rf"{re.escape(str(log))}: skipped 1 line, not a transition event: line \d+\n", err
    )


def test_diagram_edges_carry_how_often_each_was_taken(
    recorded: tuple[Path, tuple[TransitionRecord, ...]],
) -> None:
    log, history = recorded
    code, out, _ = run(log)
    assert code == 0
    mermaid = out.split("```mermaid\n", 1)[1].split("```", 1)[0]
    took = [r.outcome == "ok" or r.src != r.dst for r in history]
    moved = Counter((r.src, r.dst, r.trigger) for r, t in zip(history, took, strict=True) if t)
    stalled = Counter(
        (r.src, r.trigger, r.outcome) for r, t in zip(history, took, strict=True) if not t
    )
    assert moved[(State.INITIALISED, State.OTT_ISSUED, "login")] == 3
    for (src, dst, trigger), n in moved.items():
        arrow = "-.->" if trigger in ("session_expired", "ott_rejected") else "-->"
        assert f'    {src.name} {arrow}|"{trigger} x{n}"| {dst.name}' in mermaid.splitlines()
    for (state, trigger, outcome), n in stalled.items():
        assert f'    {state.name} -.->|"{trigger} {outcome} x{n}"| {state.name}' in mermaid
    drawn = re.findall(r"-->|-\.->", mermaid)
    assert len(drawn) == len(moved) + len(stalled) + 1  # + the start arrow
    visited = {r.src for r in history} | {r.dst for r in history}
    for s in ALL_STATES:
        assert (f'    {s.name}("{s.value}")' in mermaid) == (s in visited)
    assert re.findall(r"class (\w+) current", mermaid) == ["LOGGED_OUT"]  # where the day ended
    assert "start(( )) --> UNINITIALISED" in mermaid
    # The busiest arrow is drawn thickest.
    assert "stroke-width:3px" in mermaid


@pytest.mark.parametrize("fmt", ["svg", "png", "dot", "mermaid"])
def test_trace_writes_each_format_to_a_file(
    fmt: str, recorded: tuple[Path, tuple[TransitionRecord, ...]], tmp_path: Path
) -> None:
    if fmt in ("svg", "png"):
        pytest.importorskip("graphviz")
    log, history = recorded
    out_file = tmp_path / f"trace.{fmt}"
    code, out, _ = run(log, fmt, str(out_file))
    assert code == 0 and len(rows(out)) == len(history)
    data = out_file.read_bytes()
    if fmt == "svg":
        source = diagrams.embedded_dot(data.decode())
        assert source is not None and 'label="login x3"' in source
        assert "login x3" in data.decode().split("</metadata>", 1)[1]  # drawn, not just embedded
    elif fmt == "png":
        assert data.startswith(b"\x89PNG")
    elif fmt == "dot":
        assert 'INITIALISED -> OTT_ISSUED [label="login x3"' in data.decode()
    else:
        assert 'INITIALISED -->|"login x3"| OTT_ISSUED' in data.decode()


def test_cli_trace_needs_an_output_file_for_binary_formats(
    recorded: tuple[Path, tuple[TransitionRecord, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    log, _ = recorded
    assert main(["trace", str(log), "--format", "svg"]) == 2
    assert capsys.readouterr().err == (
        "session-fsm trace: error: svg output needs -o FILE: add -o trace.svg\n"
    )
    assert main(["trace", str(log), "--format", "dot"]) == 0
    assert "```dot\ndigraph session {" in capsys.readouterr().out


def test_skipped_lines_are_reported_by_number_and_reason_never_echoed(
    recorded: tuple[Path, tuple[TransitionRecord, ...]],
) -> None:
    log, history = recorded
    real = log.read_text(encoding="utf-8").splitlines()
    event = next(json.loads(ln) for ln in real if '"transition"' in ln)
    junk = [
        "password=hunter2 sessionToken=s3cr3t-token",  # not JSON
        '["hunter2"]',  # not an object
        json.dumps({"event": "login hunter2", "password": "hunter2"}),
        json.dumps({**event, "src": "hunter2"}),
        json.dumps({**event, "dst": None}),
        json.dumps({k: v for k, v in event.items() if k != "outcome"}),
        json.dumps({**event, "trigger": "s3cr3t-token; rm -rf"}),
        "",
        json.dumps({**event, "outcome": "hunter2"}),
        json.dumps({**event, "status": "hunter2"}),
    ]
    log.write_text("\n".join([*real, *junk]) + "\n", encoding="utf-8")
    code, out, err = run(log)
    assert code == 0 and len(rows(out)) == len(history)
    n = len(real)
    name = str(log)
    reported = err.splitlines()
    for why, lines in [
        ("not JSON", f"line {n + 1}"),
        ("not a JSON object", f"line {n + 2}"),
        ("unknown state in src", f"line {n + 4}"),
        ("missing field dst", f"line {n + 5}"),
        ("missing field outcome", f"line {n + 6}"),
        ("bad field trigger", f"line {n + 7}"),
        ("bad field outcome", f"line {n + 9}"),
        ("bad field status", f"line {n + 10}"),
    ]:
        assert f"{name}: skipped 1 line, {why}: {lines}" in reported
    assert re.search(rf"skipped 2 lines, not a transition event: lines \d+, {n + 3}$", err, re.M)
    assert len(reported) == 9  # blank line n + 8 is not worth a report
    for secret in SECRETS:
        assert secret not in out and secret not in err


def test_long_runs_of_skipped_lines_are_ranges(tmp_path: Path) -> None:
    log = tmp_path / "noise.log"
    lines = ["noise"] * 5 + ['{"event": "other"}'] + ["noise"] * 3
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = run(log)
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"{log}: skipped 8 lines, not JSON: lines 1-5, 7-9",
        f"{log}: skipped 1 line, not a transition event: line 6",
        f"session-fsm trace: error: no transition events in {log}",
    ]


def test_missing_log_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(tmp_path / "nope.log")]) == 1  # the CLI's exit code for OSError
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No such file" in err and "nope.log" in err


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{", "not JSON"),
        ("3", "not a JSON object"),
        ('{"event": "request"}', "not a transition event"),
        ('{"event": "transition", "src": "Initialised"}', "missing field trigger"),
        ('{"event": "transition", "trigger": "init", "src": "Initialised", "dst": "Nowhere",'
         ' "outcome": "ok"}', "unknown state in dst"),
        ('{"event": "transition", "trigger": "init", "src": 3, "dst": "Initialised",'
         ' "outcome": "ok"}', "unknown state in src"),
        ('{"event": "transition", "trigger": "init", "src": "Initialised", "dst": "Initialised",'
         ' "outcome": "ok", "status": true}', "bad field status"),
    ],
)  # fmt: skip
def test_parse_line_reasons(line: str, why: str) -> None:
    with pytest.raises(Skip, match=f"^{why}$"):
        parse_line(line, 1)


def test_steps_without_timestamp_still_replay(tmp_path: Path) -> None:
    """Logs from a processor chain without TimeStamper: the time column says '-'."""
    log = tmp_path / "plain.log"
    event = {"event": "transition", "trigger": "init", "src": "Uninitialised",
             "dst": "Initialised", "outcome": "ok", "status": None}  # fmt: skip
    log.write_text(json.dumps(event) + "\n", encoding="utf-8")
    trace = read_trace(log)
    assert trace.counts() == {(State.UNINITIALISED, State.INITIALISED, "init"): 1}
    code, out, err = run(log)
    assert code == 0 and err == ""
    assert rows(out) == [["1.", "-", "init", "Uninitialised -> Initialised", "ok", "-"]]


def test_a_log_of_several_sessions_gets_a_block_per_session(tmp_path: Path) -> None:
    log = tmp_path / "two.log"
    base = {"event": "transition", "trigger": "init", "src": "Uninitialised",
            "dst": "Initialised", "outcome": "ok"}  # fmt: skip
    lines = [{**base, "session_id": "s1"}, {**base, "session_id": "s2"},
             {**base, "session_id": "s1", "reason": "again"}]  # fmt: skip
    log.write_text("".join(json.dumps(e) + "\n" for e in lines), encoding="utf-8")
    code, out, _ = run(log)
    assert code == 0
    heads = [ln for ln in out.splitlines() if ln.startswith("session ")]
    assert heads == ["session s1: 2 transitions", "session s2: 1 transition"]
    assert [r[0] for r in rows(out)] == ["1.", "2.", "1."]
    assert rows(out)[1][-1] == "again"  # s1's second step, in s1's block
    assert 'UNINITIALISED -->|"init x3"| INITIALISED' in out
