"""The examples run as a user would run them, briefly, and survive session expiries.

``examples/bot.py`` runs on its embedded sandbox (which it makes expire the session), and on a
sandbox of this test reached through ``KS_*`` settings while the test expires its sessions from
outside. ``examples/multiprocess.py`` runs its workers over a file store and over Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from session_fsm.sandbox import Sandbox, run_sandbox
from tests import redis_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``examples/name`` with the test's Python; return stdout after checking exit 0."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KS_")}
    p = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    return p.stdout


def events(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def only(evs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [e for e in evs if e["event"] == name]
    return found


def test_bot_survives_expiries_on_its_embedded_sandbox() -> None:
    out = run_example("bot.py", "--iterations", "12", "--expire-every", "4", "--interval",
                      "0.01", "--json")  # fmt: skip
    evs = events(out)
    summary = only(evs, "bot_summary")
    # Expired before ticks 5 and 9: two re-logins, no tick lost, no error.
    assert summary == {**summary, "ticks": 12, "relogins": 2, "errors": 0, "generation": 3}
    assert sum(e["event"] == "request_replayed" for e in evs) == 2
    assert [e["trigger"] for e in evs if e["event"] == "transition"][-1] == "logout"


def test_bot_on_an_outside_sandbox_survives_expiries_made_behind_its_back(
    sandbox: Sandbox,
) -> None:
    sandbox.control.reset()
    env = {"KS_HOST": sandbox.url, "KS_USERID": "demo-user",
           "KS_CONSUMER_KEY": "demo-consumer-key", "KS_ACCESS_TOKEN": "demo-access-token",
           "KS_PASSWORD": "demo-password", "KS_ACCESS_CODE": "1234"}  # fmt: skip
    stop = threading.Event()

    def expire_now_and_then() -> None:
        # Expire only once the bot made a few calls on its current session, so the chaos never
        # hits the window between a re-login and its replay (that would be a second expiry).
        sessions, baseline = -1, 0
        while not stop.wait(0.05):
            stats = sandbox.control.stats()
            trading = sum(n for k, n in stats["calls"].items() if "/session/" not in k)
            if stats["sessions"] != sessions:
                sessions, baseline = stats["sessions"], trading
            elif trading >= baseline + 6:
                sandbox.control.expire()
                baseline = 1 << 62  # until the next session

    chaos = threading.Thread(target=expire_now_and_then)
    chaos.start()
    try:
        out = run_example("bot.py", "--duration", "2", "--interval", "0.02", "--json", env=env)
    finally:
        stop.set()
        chaos.join()
    evs = events(out)
    summary = only(evs, "bot_summary")
    assert summary["errors"] == 0 and summary["ticks"] > 10
    assert summary["relogins"] >= 1
    assert sandbox.control.stats()["logins"] == 1 + summary["relogins"]
    last = [e for e in evs if e["event"] == "transition"][-1]
    assert (last["trigger"], last["outcome"]) == ("logout", "ok")  # the chaos may beat it to it


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with run_sandbox() as sb:
        yield sb


def summary_line(out: str) -> dict[str, Any]:
    (line,) = [x for x in out.splitlines() if x.startswith("SUMMARY ")]
    result: dict[str, Any] = json.loads(line[len("SUMMARY ") :])
    return result


def test_multiprocess_shares_one_session_through_a_file_store(tmp_path: Path) -> None:
    store = tmp_path / "tokens.json"
    out = run_example("multiprocess.py", "--workers", "3", "--rounds", "2", "--calls", "2",
                      "--store", f"file:{store}", "--json")  # fmt: skip
    s = summary_line(out)
    assert s["ok"] and s["calls"] == 3 * 3 * 2
    # One login at the start and one per expiry, whatever the number of processes.
    assert s["sandbox_logins"] == 1 + 2
    assert s["relogins_seen"] == 2
    workers = {e["worker"] for e in events(out) if e["event"] == "worker_done"}
    assert workers == {1, 2, 3}
    assert store.exists()


def test_multiprocess_over_redis() -> None:
    with redis_server.running() as server:
        out = run_example("multiprocess.py", "--workers", "3", "--rounds", "1", "--calls", "2",
                          "--store", server.url)  # fmt: skip
    s = summary_line(out)
    assert s["ok"] and s["sandbox_logins"] == 2 and s["store"] == server.url
