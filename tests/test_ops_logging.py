"""Logging follows library conventions (issue 17, section 2), seen from real child processes.

Each child connects a session to a sandbox over loopback, meets an expiry on a GET (the session
re-logs in and replays), and logs out; the child's logging set-up is the variable: none at all,
the standard library's ``basicConfig`` only, or the application's own structlog chain.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import structlog

from session_fsm import KSSession, configure_logging
from session_fsm.sandbox import Sandbox
from session_fsm.trace import run_trace
from tests.conftest import LogCapture, make_credentials

#: The bot every child runs; ``SETUP`` is replaced by the child's logging configuration.
BOT = """
import sys
SETUP
from session_fsm import Credentials, KSSession
creds = Credentials(userid="demo-user", consumer_key="demo-consumer-key",
                    access_token="demo-access-token", password="demo-password",
                    access_code="1234", app_id="tests")
with KSSession(creds, host=sys.argv[1]) as s:
    s.connect()
    import requests
    requests.post(sys.argv[1].rsplit("/apim", 1)[0] + "/_sandbox/expire", json={}, timeout=5)
    s.get("/reports/1.0/orders")
    s.logout()
from session_fsm import LoginRejected
wrong = Credentials(userid="demo-user", consumer_key="demo-consumer-key",
                    access_token="demo-access-token", password="wrong", access_code="1234")
try:  # a failed transition: a warning-level event (stdlib's last resort would print it)
    KSSession(wrong, host=sys.argv[1]).connect()
except LoginRejected:
    pass
"""
SECRETS = ("demo-password", "demo-access-token", "demo-consumer-key")


def run_bot(sb: Sandbox, setup: str, tmp_path: Path, env: dict[str, str] | None = None) -> Any:
    script = tmp_path / "bot.py"
    script.write_text(BOT.replace("SETUP", textwrap.dedent(setup)), encoding="utf-8")
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KS_", "NO_COLOR"))}
    p = subprocess.run(
        [sys.executable, str(script), sb.url],
        env={**full, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    for secret in SECRETS:
        assert secret not in p.stdout + p.stderr
    return p


def test_unconfigured_the_library_prints_nothing(sb: Sandbox, tmp_path: Path) -> None:
    p = run_bot(sb, "", tmp_path)
    assert p.stdout == "" and p.stderr == ""
    assert sb.control.stats()["logins"] == 2  # it did log in, and again after the expiry


def test_with_stdlib_logging_only_events_go_to_the_session_fsm_logger(
    sb: Sandbox, tmp_path: Path
) -> None:
    setup = """
    import logging
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(name)s|%(levelname)s|%(message)s")
    class Keep(logging.Handler):
        def emit(self, record):
            print("FIELDS", __import__("json").dumps(record.session_fsm))
    logging.getLogger("session_fsm").addHandler(Keep())
    """
    p = run_bot(sb, setup, tmp_path)
    lines = p.stdout.splitlines()
    shown = [ln for ln in lines if ln.startswith("session_fsm|")]
    first = "session_fsm|INFO|transition trigger=init src=Uninitialised dst=Initialised"
    assert shown[0].startswith(first), shown[:1]
    assert any("trigger=session_expired" in ln and "status=401" in ln for ln in shown), shown
    fields = [json.loads(ln[len("FIELDS ") :]) for ln in lines if ln.startswith("FIELDS ")]
    expired = [f for f in fields if f.get("trigger") == "session_expired"]
    assert len(expired) == 1
    assert expired[0]["call"] == "GET /reports/1.0/orders" and expired[0]["status"] == 401
    assert p.stderr == ""  # nothing printed by the library itself


def test_with_the_applications_structlog_events_go_through_its_chain(
    sb: Sandbox, tmp_path: Path
) -> None:
    setup = """
    import json, structlog
    def mark(logger, name, event_dict):
        event_dict["app_chain"] = True
        return event_dict
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, mark,
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
    )
    structlog.contextvars.bind_contextvars(api_token="ctx-tok-123456789")
    """
    p = run_bot(sb, setup, tmp_path)
    events = [json.loads(line) for line in p.stdout.splitlines()]
    transitions = [e for e in events if e["event"] == "transition"]
    assert transitions and all(e["app_chain"] for e in events)
    # the library's events are clean even though this chain has no redaction of its own
    assert "ctx-tok-123456789" in p.stdout  # (the application's own context is its business)
    (expired,) = [e for e in transitions if e["trigger"] == "session_expired"]
    assert (expired["status"], expired["fault_code"], expired["call"]) == (
        401, 99999, "GET /reports/1.0/orders",
    )  # fmt: skip
    assert expired["error"] == "SessionExpired" and expired["reason"] == "expired"


def test_the_applications_chain_with_redact_masks_its_context(
    sb: Sandbox, tmp_path: Path
) -> None:
    setup = """
    import structlog
    from session_fsm import redact
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, redact,
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
    )
    structlog.contextvars.bind_contextvars(api_token="ctx-tok-123456789")
    """
    p = run_bot(sb, setup, tmp_path)
    assert "ctx-tok-123456789" not in p.stdout and '"api_token": "[redacted]"' in p.stdout


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "coloured"),
    [({}, True), ({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False)],
)
def test_configure_logging_on_a_terminal_reads_like_the_demo(
    sb: Sandbox, env: dict[str, str], coloured: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = _Tty()
    configure_logging(stream=out)
    try:
        with KSSession(make_credentials(), host=sb.url) as s:
            s.connect()
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    plain = _strip_ansi(text)
    assert "transition  init: Uninitialised -> Initialised" in plain
    assert "transition  authenticate: OTT-issued -> Authenticated" in plain
    assert "duration_ms" not in plain and "guards" not in plain  # not a dump of every field
    assert ("\x1b[" in text) is coloured


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_session_ids_differ_across_processes(sb: Sandbox, tmp_path: Path) -> None:
    """Three runs of the same bot logging JSON to one file: trace keeps them apart."""
    setup = """
    from session_fsm import configure_logging
    configure_logging(json=True, stream=sys.stdout)
    """
    log = tmp_path / "three.log"
    for _ in range(3):
        with log.open("a", encoding="utf-8") as f:
            f.write(run_bot(sb, setup, tmp_path).stdout)
    ids = {
        json.loads(line)["session_id"]
        for line in log.read_text().splitlines()
        if '"transition"' in line
    }
    assert len(ids) == 6  # two sessions per run (the bot's and the wrong-password one)
    assert len({sid.split("-")[0] for sid in ids}) == 3  # one prefix per process
    out, err = io.StringIO(), io.StringIO()
    assert run_trace(log, "mermaid", None, out=out, err=err) == 0
    text = out.getvalue()
    for sid in ids:
        assert f"session {sid}" in text


def test_expiry_record_carries_status_fault_and_call(sb: Sandbox, logs: LogCapture) -> None:
    with KSSession(make_credentials(), host=sb.url) as s:
        s.connect()
        sb.control.expire()
        s.get("/positions/1.0/positions/todays")
        (rec,) = [r for r in s.history if r.trigger == "session_expired"]
    assert (rec.status, rec.fault_code, rec.call, rec.error) == (
        401, 99999, "GET /positions/1.0/positions/todays", "SessionExpired",
    )  # fmt: skip
    (event,) = [e for e in logs.events() if e.get("trigger") == "session_expired"]
    assert event["call"] == "GET /positions/1.0/positions/todays" and event["status"] == 401
