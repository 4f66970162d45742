"""Which answers the sans-IO core maps, and how: what the third mutation run (docs/mutation.md)
found untested.

A companion of :mod:`tests.test_core_mutants3` (split off at 400 lines): each test pins
something a surviving mutant of ``session_fsm/core`` changed while every other test of the
selection still passed.
Through the public API, against the sandbox over real loopback HTTP.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
import requests

from session_fsm import (
    APIError,
    KSSession,
    MalformedAnswer,
    SessionExpired,
    State,
    TransitionRecord,
    contract,
)
from session_fsm.core.calls import retry_after
from session_fsm.sandbox import Sandbox
from tests.answer_server import TRADING, answered_session

Factory = Callable[..., KSSession]
ORDERS = contract.ORDERS_REPORT[1]
LOGIN = contract.LOGIN_USERID[1]
PLACE = contract.ORDER_NORMAL[1]


# --- a trading answer of the wrong shape --------------------------------------------------------


def test_a_malformed_trading_answer_is_recorded_as_such() -> None:
    with answered_session() as (server, s):
        s.connect()
        server.script(*TRADING, 401, json.dumps({"fault": "expired"}).encode())
        with pytest.raises(MalformedAnswer):
            s.get(TRADING[1])
        rec = s.history[-1]
        assert (rec.trigger, rec.outcome, rec.error, rec.reason) == (
            "request", "failed", "MalformedAnswer", "malformed_answer",
        )  # fmt: skip


# --- which answers the core maps ------------------------------------------------------------------


def test_the_auth_renews_a_session_answered_403_invalid_session(
    new_session: Factory, sb: Sandbox
) -> None:
    """A plain ``requests`` call through ``session.auth`` meets the 403 "Invalid session" the
    API's docs list: renewed and replayed, as with a 401."""
    s = new_session()
    s.connect()
    sb.control.settings(invalid_session=403)
    sb.control.expire()
    r = requests.get(s.snapshot().host + ORDERS, auth=s.auth, timeout=5)
    assert r.status_code == 200 and [h.status_code for h in r.history] == [403]
    assert s.generation == 2 and s.state is State.AUTHENTICATED


def test_a_300_answer_to_a_trading_call_is_an_error(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    s.connect()
    sb.control.fault(ORDERS, status=300)
    with pytest.raises(APIError) as info:
        s.get(s.snapshot().host + ORDERS)  # an absolute URL: the core's request flow
    assert info.value.status == 300 and info.value.response is not None


def test_a_300_answer_to_a_replay_is_an_error(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    s.connect()
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_SESSION_EXPIRED)  # the first send
    sb.control.fault(ORDERS, status=300)  # the replay, after the renewal
    with pytest.raises(APIError) as info:
        s.get(ORDERS)
    assert info.value.status == 300 and info.value.response is not None
    assert [h.status_code for h in info.value.response.history] == [401]
    assert s.generation == 2


def test_a_malformed_answer_to_a_replay_is_recorded_as_such() -> None:
    expired = json.dumps({"fault": {"code": contract.FAULT_SESSION_EXPIRED}}).encode()
    wrong_shape = json.dumps({"fault": "expired"}).encode()

    def renewed(_s: object, rec: TransitionRecord) -> None:
        if rec.trigger == "session_expired":  # the replay meets a fault of the wrong shape
            server.script(*TRADING, 401, wrong_shape)

    with answered_session(on_transition=renewed) as (server, s):
        s.connect()
        server.script(*TRADING, 401, expired)
        with pytest.raises(MalformedAnswer) as info:
            s.get(TRADING[1])
        assert info.value.status == 401 and s.generation == 2
        rec = s.history[-1]
        assert (rec.trigger, rec.outcome, rec.error, rec.reason) == (
            "request", "failed", "MalformedAnswer", "malformed_answer",
        )  # fmt: skip


def test_an_error_of_a_request_to_an_absolute_url_names_its_path(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    host = s.snapshot().host
    sb.control.fault(ORDERS, status=400)
    with pytest.raises(APIError) as info:
        s.get(host + ORDERS + "?q=1")
    assert f"GET {urlsplit(host).path}{ORDERS} -> HTTP 400" in str(info.value)
    assert "://" not in str(info.value)


@pytest.mark.parametrize("tail", ["?q=1", "#part"])
def test_an_error_names_the_path_without_its_query_or_fragment(
    new_session: Factory, sb: Sandbox, tail: str
) -> None:
    s = new_session()
    s.connect()
    sb.control.fault(ORDERS, status=400)
    with pytest.raises(APIError) as info:
        s.get(ORDERS + tail)
    assert f"GET {ORDERS} -> HTTP 400" in str(info.value)
    assert tail not in str(info.value)


def test_a_login_fault_of_the_wrong_shape_names_the_login_call() -> None:
    with answered_session(cooldown=0) as (server, s):
        s.init()
        server.script(*contract.LOGIN_USERID, 401, json.dumps({"fault": "x"}).encode())
        with pytest.raises(MalformedAnswer) as info:
            s.login()
        assert (info.value.call, info.value.status) == ("login_with_user_id", 401)


def test_a_gateways_bare_invalid_session_message_is_an_expiry() -> None:
    """A 403 whose body is a gateway's bare ``{"message": ...}`` (no fault) is read by its
    message: "Invalid session" is an expired session, renewed and replayed once."""
    bare = json.dumps({"message": "Invalid session, please re-login to continue"}).encode()
    with answered_session() as (server, s):
        s.connect()
        server.script(*TRADING, 403, bare)  # the replay meets it too
        with pytest.raises(SessionExpired) as info:
            s.get(TRADING[1])
        assert info.value.status == 403 and s.generation == 2


def test_a_retry_after_date_is_the_seconds_until_then() -> None:
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past: no wait
    soon = email.utils.formatdate(time.time() + 120, usegmt=True)
    wait = retry_after(soon)
    assert wait is not None and 110 <= wait <= 120
    assert (retry_after("30"), retry_after(None), retry_after("soon")) == (30.0, None, None)


def test_a_300_answer_to_a_session_call_is_its_status_error_not_a_shape_error() -> None:
    with answered_session(cooldown=0) as (server, s):
        s.init()
        server.script(*contract.LOGIN_USERID, 300, b"{}")
        with pytest.raises(APIError) as info:
            s.login()
        assert info.value.status == 300 and not isinstance(info.value, MalformedAnswer)


def test_a_malformed_2xx_login_answer_names_its_own_status() -> None:
    body = json.dumps({"Success": {"oneTimeToken": True}}).encode()
    with answered_session(cooldown=0) as (server, s):
        s.init()
        server.script(*contract.LOGIN_USERID, 201, body)
        with pytest.raises(MalformedAnswer) as info:
            s.login()
        assert (info.value.status, info.value.call) == (201, "login_with_user_id")


def test_a_malformed_2xx_logout_answer_names_its_own_status() -> None:
    body = json.dumps({"Success": {"message": 5}}).encode()
    with answered_session() as (server, s):
        s.connect()
        server.script(*contract.SESSION_LOGOUT, 201, body)
        with pytest.raises(MalformedAnswer) as info:
            s.logout()
        assert (info.value.status, info.value.call) == (201, "session_logout")
