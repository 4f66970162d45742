"""A session on a real host never goes to loopback, whatever ``allow_loopback`` says.

``allow_loopback`` (on by default) is there for the sandbox: a session configured on
``http://127.0.0.1:PORT/apim``. A session configured on the broker's host that followed a
hostile ``session/init`` redirect to ``http://127.0.0.1:PORT`` would send its user id and
password (then the access code and tokens) in plain http to whatever listens on this machine;
one that adopted a stored session on a loopback host (a foreign writer of a shared store) would
send its tokens there on every request; its ``s.auth`` would add them to an httpx request to
loopback. Each of these is refused now.

The redirect and the stored host are decisions of the sans-IO core: the flows are run here with
the answers a server would give (the core makes no I/O; the real wire is not what is tested).
The ``s.auth`` case is a real httpx client against a real loopback listener.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from session_fsm import AsyncKSSession, KSSession, MemoryStore, State, UnsafeRedirect
from session_fsm.answers import answer_of
from session_fsm.core import connect as flows
from session_fsm.core import effects as fx
from session_fsm.core.calls import SessionCall
from session_fsm.errors import Call
from session_fsm.secret import Secret
from session_fsm.stores import StoredSession
from tests.answer_server import recording_server
from tests.conftest import make_credentials

PRODUCTION = "https://tradeapi.kotaksecurities.com/apim"
LOOPBACK_URLS = [
    "http://127.0.0.1:8080/apim",
    "https://127.0.0.1/apim",
    "http://localhost:8080/apim",
    "http://[::1]:8080/apim",
]
_ANSWERS = {
    Call.LOGIN: {"Success": {"oneTimeToken": "ott-" + "a" * 32}},
    Call.TWO_FA: {"Success": {"sessionToken": "st-" + "b" * 32}},
}


def _connect(session: Any, init: dict[str, Any]) -> tuple[list[tuple[Call, str]], Any]:
    """Run ``session``'s connect flow with ``init`` as session/init's answer and valid answers
    to the rest; (the calls it asked for, as (call, host)), and what it raised or returned."""
    core = session._core
    store = MemoryStore()
    asked: list[tuple[Call, str]] = []
    steps = fx.Steps(flows.connect(core))
    try:
        for effect in steps:
            if type(effect) is SessionCall:
                asked.append((effect.call, effect.host))
                body = init if effect.call is Call.INIT else _ANSWERS[effect.call]
                steps.value = answer_of(effect.call, 200, None, json.dumps(body).encode(), 1 << 20)
            elif type(effect) in fx.STORE_OPS:
                steps.value = effect.apply(store)
            else:  # the locks
                steps.value = True
    except Exception as exc:
        return asked, exc
    return asked, steps.result


@pytest.mark.parametrize("kind", [KSSession, AsyncKSSession])
@pytest.mark.parametrize("where", LOOPBACK_URLS)
def test_a_redirect_to_loopback_from_a_real_host_gets_no_login(kind: Any, where: str) -> None:
    s = kind(make_credentials(), host=PRODUCTION)
    asked, outcome = _connect(s, {"Success": {"redirect": {"host": where, "port": 443}}})
    assert isinstance(outcome, UnsafeRedirect), outcome
    assert "loopback" in str(outcome)
    assert asked == [(Call.INIT, PRODUCTION)]  # no login, anywhere
    assert s.state is State.UNINITIALISED


def test_the_sandbox_still_follows_a_redirect_to_loopback() -> None:
    # Configured on loopback, a session may be redirected to another loopback host or port.
    s = KSSession(make_credentials(), host="http://127.0.0.1:9/apim")
    asked, outcome = _connect(s, {"Success": {"redirect": {"host": LOOPBACK_URLS[2]}}})
    assert outcome.state is State.AUTHENTICATED, outcome
    assert [host for _, host in asked] == ["http://127.0.0.1:9/apim"] + [LOOPBACK_URLS[2]] * 2


def test_a_redirect_to_an_allowed_domain_is_still_followed_from_a_real_host() -> None:
    s = KSSession(make_credentials(), host=PRODUCTION)
    other = "https://ctradeapi.kotaksecurities.com/apim"
    asked, outcome = _connect(s, {"Success": {"redirect": {"host": other, "port": 443}}})
    assert outcome.state is State.AUTHENTICATED, outcome
    assert [host for _, host in asked] == [PRODUCTION, other, other]


@pytest.mark.parametrize("where", LOOPBACK_URLS[:2])
def test_a_stored_session_on_loopback_is_not_adopted_by_a_session_on_a_real_host(
    where: str,
) -> None:
    store = MemoryStore()
    s = KSSession(make_credentials(), host=PRODUCTION, store=store)
    record = StoredSession(where, "demo-user", Secret("st-" + "c" * 32), 7, time.time())
    store.save(s.store_key(), record)
    assert s.resume() is False  # ignored (event stored_session_ignored), not adopted
    assert s.state is State.UNINITIALISED and s.snapshot().host == PRODUCTION


def test_s_auth_of_a_session_on_a_real_host_sends_nothing_to_loopback() -> None:
    store = MemoryStore()
    s = KSSession(make_credentials(), host=PRODUCTION, store=store)
    record = StoredSession(PRODUCTION, "demo-user", Secret("st-" + "d" * 32), 3, time.time())
    store.save(s.store_key(), record)
    assert s.resume() and s.state is State.AUTHENTICATED  # no HTTP: adopted from the store
    with (
        recording_server() as (server, seen),
        httpx.Client(auth=s.auth) as client,
        pytest.raises(UnsafeRedirect) as caught,
    ):
        client.get(server.url + "/quick/user/orders")
    assert "loopback" in str(caught.value)
    assert seen == []  # nothing was sent, let alone a token
