"""examples/async_bot.py runs as a user would run it, briefly, and survives session expiries:
on its embedded sandbox (which it makes expire the session under four concurrent requests a
tick), and on a sandbox of this test reached through ``KS_*`` settings, with its status page
and heartbeat on."""

from __future__ import annotations

import pytest

pytest.importorskip("aiohttp")

from session_fsm.sandbox import Sandbox
from tests.test_examples import events, only, run_example


def test_async_bot_survives_expiries_met_by_concurrent_requests() -> None:
    out = run_example("async_bot.py", "--iterations", "12", "--expire-every", "4",
                      "--interval", "0.01", "--json")  # fmt: skip
    evs = events(out)
    summary = only(evs, "bot_summary")
    # Expired before ticks 5 and 9, each met by the tick's four concurrent requests: one
    # re-login per expiry for all four (single flight), every request replayed, none lost.
    assert summary == {**summary, "ticks": 12, "relogins": 2, "errors": 0, "generation": 3}
    assert summary["calls"] == 12 * 4 + 4  # four GETs a tick, an order every third tick
    assert only(evs, "sandbox_stats")["logins"] == 3
    assert sum(e["event"] == "request_replayed" for e in evs) == 2 * 4
    assert all(e["answers"] == [200] * 4 for e in evs if e["event"] == "tick")
    assert [e["trigger"] for e in evs if e["event"] == "transition"][-1] == "logout"


def test_async_bot_on_an_outside_sandbox_with_its_status_page(sb: Sandbox) -> None:
    env = {"KS_HOST": sb.url, "KS_USERID": "demo-user",
           "KS_CONSUMER_KEY": "demo-consumer-key", "KS_ACCESS_TOKEN": "demo-access-token",
           "KS_PASSWORD": "demo-password", "KS_ACCESS_CODE": "1234"}  # fmt: skip
    out = run_example("async_bot.py", "--iterations", "5", "--interval", "0.01", "--json",
                      "--status", "--heartbeat", "60", env=env)  # fmt: skip
    evs = events(out)
    assert only(evs, "status_page")["url"].startswith("http://127.0.0.1:")
    summary = only(evs, "bot_summary")
    assert summary == {**summary, "ticks": 5, "relogins": 0, "errors": 0, "generation": 1}
    assert sb.control.stats()["logins"] == 1
    last = [e for e in evs if e["event"] == "transition"][-1]
    assert (last["trigger"], last["outcome"]) == ("logout", "ok")
