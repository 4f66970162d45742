"""``session-fsm demo --async`` (issue 16): the demo bot's day played on AsyncKSSession in an
asyncio event loop, as a user runs it (the installed command, a real process), checked like the
threaded demo in test_cli.py: the same transitions, the re-login and replay, the 429 waited out,
the same summary, no secret printed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from tests.test_cli import _demo_secrets_absent, cli


def test_demo_async_console(tmp_path: Path) -> None:
    r = cli("demo", "--async", env={}, home=tmp_path)
    assert r.rc == 0, r.all
    out = r.out
    assert "(a real AsyncKSSession over loopback HTTP" in out
    for shown in (
        "transition  authenticate: OTT-issued -> Authenticated",
        "transition  session_expired: Authenticated -> Initialised",
        "request_replayed",
        "waiting 1 s before retrying",
        "transition  logout: Authenticated -> LoggedOut",
        "--session_expired--> Initialised",
    ):
        assert shown in out, shown
    summary = re.search(r"^summary: (.*)$", out, re.M)
    assert summary
    fields = dict(kv.split("=", 1) for kv in summary.group(1).split())
    assert (fields["logins"], fields["relogins"], fields["retries"]) == ("2", "1", "1")
    assert (fields["trading_calls"], fields["final_state"]) == ("7", "LoggedOut")
    _demo_secrets_absent(r.all)


def test_demo_async_json_lines(tmp_path: Path) -> None:
    r = cli("demo", "--async", "--json", env={}, home=tmp_path, module=True)
    assert r.rc == 0, r.all
    events: list[dict[str, Any]] = [json.loads(line) for line in r.out.splitlines()]
    (start,) = [e for e in events if e["event"] == "demo_start"]
    assert start["session"] == "AsyncKSSession"
    triggers = [e["trigger"] for e in events if e["event"] == "transition"]
    assert triggers == ["init", "login", "authenticate", "session_expired", "login",
                        "authenticate", "logout"]  # fmt: skip
    assert any(e["event"] == "request_replayed" for e in events)
    assert any(e["event"] == "retry_wait" and e["seconds"] == 1 for e in events)
    calls = [(e["method"], e["status"]) for e in events if e["event"] == "trading_call"]
    assert calls == [("GET", 200), ("GET", 200), ("POST", 200), ("PUT", 200), ("GET", 200),
                     ("DELETE", 200), ("GET", 200)]  # fmt: skip
    (summary,) = [e for e in events if e["event"] == "demo_summary"]
    assert (summary["logins"], summary["relogins"], summary["retries"]) == (2, 1, 1)
    assert summary["path"][-1] == ["Authenticated", "logout", "LoggedOut"]
    _demo_secrets_absent(r.all)


def test_demo_async_without_aiohttp_names_the_extra(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "aiohttp.py").write_text("raise ImportError('hidden by the test')\n")
    r = cli("demo", "--async", env={"PYTHONPATH": str(blocker)}, home=tmp_path, module=True)
    assert r.rc != 0 and "Traceback" not in r.err
    assert "session_fsm[async]" in r.all
