"""Issue 14, item 5: a total deadline bounds each call, and every wait for a lock is bounded.

A loopback server drips its answer a byte at a time, so per-read timeouts never fire; the
call must end at its deadline all the same (and not be retried past it). A second thread
calling connect() while another is logging in waits ``relogin_timeout``, not the login.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from session_fsm import (
    ConfigurationError,
    KSSession,
    RateLimited,
    RequestTimeout,
    SessionExpired,
    Wire,
    WireConfig,
)
from session_fsm.sandbox import Sandbox
from session_fsm.secret import Secret
from session_fsm.wire import Identity
from tests.conftest import FAST_RETRY, SLEEPS, Clock, make_credentials
from tests.loopback_listeners import dripping, wait_until

ORDERS = "/reports/1.0/orders"
LOGIN = "/session/1.0/session/login/userid"
DEADLINE = 0.6


def who() -> Identity:
    return Identity("demo-user", "demo-consumer-key", "127.0.0.1", "tests", Secret("t"))


@pytest.mark.parametrize("what", ["headers", "body"])
def test_a_dripped_answer_ends_at_the_deadline(what: str, clock: Clock) -> None:
    # 0.05 s a byte: the whole answer takes ~25 s; per-read timeouts of 1 s never fire.
    with dripping(what) as drip:
        s = KSSession(
            make_credentials(), host=drip.url, clock=clock, timeout=(1.0, 1.0),
            retry=FAST_RETRY, deadline=DEADLINE,
        )  # fmt: skip
        started = time.monotonic()
        with pytest.raises(RequestTimeout, match=r"deadline of 0\.6s"):
            s.init()
        took = time.monotonic() - started
        s.close()
        assert DEADLINE <= took < DEADLINE + 1.0
        assert drip.connections == 1  # a GET that passed its deadline is not retried
        assert 0 < drip.sent < 40  # it was really dripping, and we stopped listening
    assert s.history[-1].error == "RequestTimeout" and s.state.value == "Uninitialised"


def test_the_wire_deadline_covers_session_calls_and_requests_alike() -> None:
    with dripping("body") as drip:
        wire = Wire(WireConfig(timeout=(1.0, 1.0), deadline=DEADLINE))
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            wire.session_init(drip.url, who())
        with pytest.raises(RequestTimeout):
            wire.send("GET", drip.url + ORDERS)
        assert time.monotonic() - started < 2 * DEADLINE + 1.5
        wire.close()


def test_a_retry_wait_past_the_deadline_is_not_taken(
    new_session: Callable[..., KSSession], sb: Sandbox
) -> None:
    s = new_session(deadline=5.0)
    s.connect()
    sb.control.fault(ORDERS, status=429, retry_after=7, count=4)
    with pytest.raises(RateLimited) as info:
        s.get(ORDERS)
    assert info.value.retry_after == 7 and SLEEPS == []  # answered at once, no wait
    sb.control.reset()
    s.connect()
    sb.control.fault(ORDERS, status=429, retry_after=2)  # a wait that fits is still taken
    assert s.get(ORDERS).status_code == 200 and SLEEPS == [2.0]


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "5", True, None])
def test_the_deadline_option_is_checked(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="deadline must be a finite number"):
        KSSession(make_credentials(), host="http://127.0.0.1:9/apim", deadline=bad)
    with pytest.raises(ConfigurationError, match="deadline"):
        WireConfig(deadline=bad)


# --- locks -------------------------------------------------------------------------------------


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(target())
        except Exception as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, out


@pytest.mark.parametrize("second", ["connect", "init", "logout"])
def test_a_second_caller_waits_relogin_timeout_not_the_whole_login(
    second: str, new_session: Callable[..., KSSession], sb: Sandbox
) -> None:
    s = new_session(relogin_timeout=0.3)
    sb.control.fault(LOGIN, delay=2.5)  # the first caller's login is slow
    first, result = in_thread(s.connect)
    assert wait_until(lambda: sb.control.stats()["calls"].get(f"POST {LOGIN}", 0) == 1)
    started = time.monotonic()
    with pytest.raises(SessionExpired, match=r"gave up after 0\.3s waiting") as info:
        getattr(s, second)()
    took = time.monotonic() - started
    first.join(10)
    assert 0.3 <= took < 1.5  # not the 2.5 s the login took
    assert "relogin_timeout" in str(info.value)
    assert result and result[0].state.value == "Authenticated"  # the first caller finished
