"""``session-fsm trace`` on logs of several runs: per-session blocks, ``--session``, stdin, and a
console log named as such (issue 17, section 2). The logs are written by real sessions on the
sandbox; the command runs as a real process."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import structlog

from session_fsm import KSSession, configure_logging
from session_fsm.sandbox import Sandbox
from tests.conftest import make_credentials

SCRIPT = Path(sys.executable).with_name("session-fsm")


def _log_of_two_sessions(sb: Sandbox, json_lines: bool) -> tuple[str, list[str]]:
    out = io.StringIO()
    configure_logging(json=json_lines, stream=out)
    ids = []
    try:
        for _ in range(2):
            with KSSession(make_credentials(), host=sb.url) as s:
                s.connect()
                s.logout()
                ids.append(s.session_id)
    finally:
        structlog.reset_defaults()
    return out.getvalue(), ids


def trace(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "trace", *args], input=stdin, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def test_trace_reads_stdin_and_groups_by_session(sb: Sandbox) -> None:
    log, (first, second) = _log_of_two_sessions(sb, json_lines=True)
    assert first != second
    p = trace("-", stdin=log)
    assert p.returncode == 0, p.stderr
    assert f"session {first}: 4 transitions" in p.stdout
    assert f"session {second}: 4 transitions" in p.stdout
    assert p.stdout.index(first) < p.stdout.index(second)


def test_trace_session_filter(sb: Sandbox, tmp_path: Path) -> None:
    log, (first, second) = _log_of_two_sessions(sb, json_lines=True)
    path = tmp_path / "bot.log"
    path.write_text(log, encoding="utf-8")
    p = trace(str(path), "--session", second)
    assert p.returncode == 0, p.stderr
    assert first not in p.stdout and "session " not in p.stdout.split("```")[0]
    steps = [ln for ln in p.stdout.splitlines() if ln[:2] in ("1.", "2.", "3.", "4.", "5.")]
    assert len(steps) == 4
    assert '"init x1"' in p.stdout or '|"init"|' in p.stdout  # one session's edges only
    none = trace(str(path), "--session", "nope-1")
    assert none.returncode == 1
    assert "no transition events of session nope-1" in none.stderr
    assert first in none.stderr and second in none.stderr  # what it could have been


def test_trace_names_a_console_log_and_says_what_to_do(sb: Sandbox) -> None:
    log, _ = _log_of_two_sessions(sb, json_lines=False)
    assert "transition  init: Uninitialised -> Initialised" in log
    p = trace("-", stdin=log)
    assert p.returncode == 1
    assert "log JSON with configure_logging(json=True)" in p.stderr
    assert p.stdout == ""


def test_trace_of_json_shows_the_cause_of_an_expiry(sb: Sandbox) -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    try:
        with KSSession(make_credentials(), host=sb.url) as s:
            s.connect()
            sb.control.expire()
            s.get("/reports/1.0/orders")
    finally:
        structlog.reset_defaults()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert any(e.get("call") == "GET /reports/1.0/orders" for e in events)
    p = trace("-", stdin=out.getvalue())
    (row,) = [ln for ln in p.stdout.splitlines() if "session_expired" in ln and ln[0].isdigit()]
    assert "401" in row and "SessionExpired, fault 99999, GET /reports/1.0/orders" in row
