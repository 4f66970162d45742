"""A session on a real host sends no token to loopback by any road, not just the three of
tests/test_loopback_origin.py (an init redirect, a stored session, the httpx ``s.auth``).

Each road below, before the fix, checked the URL against the *wire's* allow-list, where
``allow_loopback`` is still on (the default), instead of the session's own (the core's, without
loopback for a session on a real host): a session configured on
``https://tradeapi.kotaksecurities.com/apim`` sent its Bearer and session tokens to a real
loopback listener through

- ``requests.get(url, auth=s.auth)`` (the requests auth: only the httpx one was fixed);
- ``s.request("GET", "http://127.0.0.1:PORT/...")`` (an absolute URL), sync and async;
- ``s.adopt(record)`` of a record on a loopback host (a foreign writer of a shared store, handed
  over by the application): its next ``s.request(path)`` went there;
- a redirect to loopback that ``requests`` follows: with ``auth=s.auth`` the hop kept the
  session token (requests drops only ``Authorization``), with
  ``s.request(path, allow_redirects=True)`` likewise.

The listener is real (tests/answer_server.py) and records every header it is sent. The first
hop of a redirect must come from the broker's host, which cannot be reached here: a narrow
requests adapter mounted for that host answers the 302 (the hop to loopback is real).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.models import PreparedRequest, Response

from session_fsm import AsyncKSSession, KSSession, MemoryStore, State, UnsafeRedirect
from session_fsm.secret import Secret
from session_fsm.stores import StoredSession
from tests.answer_server import recording_server
from tests.conftest import make_credentials

PRODUCTION = "https://tradeapi.kotaksecurities.com/apim"
TOKEN = "st-" + "e" * 32
BEARER = "demo-access-token"


def _resumed(kind: Any) -> Any:
    """A ``kind`` session on the broker's host, Authenticated from its store (no HTTP)."""
    store = MemoryStore()
    s = kind(make_credentials(), host=PRODUCTION, store=store)
    store.save(s.store_key(), StoredSession(PRODUCTION, "demo-user", Secret(TOKEN), 3, time.time()))
    return s


def _leaked(seen: list[dict[str, str]]) -> bool:
    return any(TOKEN in v or BEARER in v for headers in seen for v in headers.values())


def _refuses_loopback(err: UnsafeRedirect) -> None:
    """The error says why and what to do, and holds no token."""
    text = f"{err} {err!r} {err.hint} {vars(err)}"
    assert "loopback" in str(err) and err.hint is not None and "sandbox" in err.hint
    assert "allowed_domains if you trust" not in text  # no domain would let loopback in
    assert TOKEN not in text and BEARER not in text


def test_requests_auth_sends_nothing_to_loopback() -> None:
    s = _resumed(KSSession)
    assert s.resume()
    with recording_server() as (server, seen), pytest.raises(UnsafeRedirect) as caught:
        requests.get(server.url + "/x", auth=s.auth, timeout=5)
    assert seen == []
    _refuses_loopback(caught.value)


def test_an_absolute_loopback_url_gets_no_token() -> None:
    s = _resumed(KSSession)
    assert s.resume()
    with recording_server() as (server, seen), pytest.raises(UnsafeRedirect) as caught:
        s.request("GET", server.url + "/x")
    assert seen == []
    _refuses_loopback(caught.value)


def test_an_absolute_loopback_url_gets_no_token_async() -> None:
    async def go(url: str) -> None:
        s = _resumed(AsyncKSSession)
        try:
            assert await s.resume()
            await s.request("GET", url)
        finally:
            await s.close()

    with recording_server() as (server, seen), pytest.raises(UnsafeRedirect) as caught:
        asyncio.run(go(server.url + "/x"))
    assert seen == []
    _refuses_loopback(caught.value)


def test_adopting_a_record_on_loopback_is_refused() -> None:
    s = KSSession(make_credentials(), host=PRODUCTION)
    with recording_server() as (server, seen):
        record = StoredSession(server.url, "demo-user", Secret(TOKEN), 3, time.time())
        with pytest.raises(UnsafeRedirect) as caught:
            s.adopt(record, "handed over")
        assert s.state is State.UNINITIALISED and s.snapshot().host == PRODUCTION
    assert seen == []
    _refuses_loopback(caught.value)


def test_adopting_a_record_on_loopback_is_refused_async() -> None:
    async def go(url: str) -> AsyncKSSession:
        s = AsyncKSSession(make_credentials(), host=PRODUCTION)
        record = StoredSession(url, "demo-user", Secret(TOKEN), 3, time.time())
        try:
            with pytest.raises(UnsafeRedirect) as caught:
                await s.adopt(record, "handed over")
            _refuses_loopback(caught.value)
        finally:
            await s.close()
        return s

    with recording_server() as (server, seen):
        s = asyncio.run(go(server.url))
    assert s.state is State.UNINITIALISED and seen == []


def test_the_sandbox_still_adopts_and_sends_to_loopback() -> None:
    # Configured on loopback, a session adopts a loopback record and sends there (not pinned
    # elsewhere for adopt() with a record on another loopback port than the session's own).
    with recording_server() as (server, seen):
        s = KSSession(make_credentials(), host="http://127.0.0.1:9/apim")
        s.adopt(StoredSession(server.url, "demo-user", Secret(TOKEN), 3, time.time()), "mine")
        assert s.request("GET", "/x").status_code == 200
    assert len(seen) == 1 and seen[0]["sessiontoken"] == TOKEN


class _Redirect(BaseAdapter):
    """The broker's host (unreachable here) answering 302 to ``to``: a narrow stand-in."""

    def __init__(self, to: str) -> None:
        super().__init__()
        self.to = to

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        answer = Response()
        answer.status_code, answer.url, answer.request = 302, request.url, request
        answer.headers["Location"] = self.to
        answer._content = b""
        return answer

    def close(self) -> None:
        pass


def test_a_redirect_requests_follows_to_loopback_carries_no_token() -> None:
    s = _resumed(KSSession)
    assert s.resume()
    with recording_server() as (server, seen), requests.Session() as http:
        http.mount(PRODUCTION, _Redirect(server.url + "/x"))
        answer = http.get(PRODUCTION + "/quick/user/orders", auth=s.auth, timeout=5)
    assert answer.status_code == 200  # an auth never raises: the hop went without tokens
    assert len(seen) == 1 and not _leaked(seen)


def test_s_request_following_a_redirect_to_loopback_is_refused() -> None:
    s = _resumed(KSSession)
    assert s.resume()
    with recording_server() as (server, seen):
        s.wire.http.mount(PRODUCTION, _Redirect(server.url + "/x"))
        with pytest.raises(UnsafeRedirect) as caught:
            s.request("GET", "/quick/user/orders", allow_redirects=True)
    assert seen == []
    _refuses_loopback(caught.value)


def test_a_refused_loopback_redirect_says_what_to_do() -> None:
    # Before: "loopback hosts are not allowed (allow_loopback)" with allow_loopback on, and the
    # hint "add its domain to allowed_domains", which can never let loopback in.
    from tests.test_loopback_origin import _connect

    s = KSSession(make_credentials(), host=PRODUCTION)
    _, outcome = _connect(s, {"Success": {"redirect": {"host": "http://127.0.0.1:8080/apim"}}})
    assert isinstance(outcome, UnsafeRedirect), outcome
    assert "session's host is not loopback" in str(outcome)
    _refuses_loopback(outcome)


# Guards (pass before and after this module's fix): the httpx auth's strip of a redirect hop
# with follow_redirects=True, for a session on a real host redirected to loopback. It failed
# before b38c53d (the hop kept sessionToken); test_loopback_origin pins only a direct request.
def _to_loopback(url: str) -> Any:
    import httpx

    return httpx.MockTransport(lambda request: httpx.Response(302, headers={"Location": url}))


def test_httpx_follows_a_redirect_to_loopback_without_the_token() -> None:
    import httpx

    s = _resumed(KSSession)
    assert s.resume()
    with recording_server() as (server, seen):
        mounts = {"https://tradeapi.kotaksecurities.com": _to_loopback(server.url + "/x")}
        with httpx.Client(auth=s.auth, follow_redirects=True, mounts=mounts, timeout=5) as c:
            assert c.get(PRODUCTION + "/quick/user/orders").status_code == 200
    assert len(seen) == 1 and not _leaked(seen)  # the hop went, without the session's tokens


def test_httpx_async_follows_a_redirect_to_loopback_without_the_token() -> None:
    import httpx

    async def go(url: str) -> int:
        s = _resumed(AsyncKSSession)
        try:
            assert await s.resume()
            mounts = {"https://tradeapi.kotaksecurities.com": _to_loopback(url)}
            async with httpx.AsyncClient(
                auth=s.auth, follow_redirects=True, mounts=mounts, timeout=5
            ) as c:
                return (await c.get(PRODUCTION + "/quick/user/orders")).status_code
        finally:
            await s.close()

    with recording_server() as (server, seen):
        assert asyncio.run(go(server.url + "/x")) == 200
    assert len(seen) == 1 and not _leaked(seen)


def test_a_401_from_a_redirect_hop_off_the_list_is_not_the_sessions() -> None:
    # requests' auth=s.auth: a hostile redirect to loopback whose 401 is taken for the
    # session's expiry drops a live session and logs in again (the user's other sessions at
    # the broker are logged out), and the replay would go to the hop's URL with the new token.
    # That hop got no token: its 401 says nothing of the session (as httpx_auth's _off_list).
    s = _resumed(KSSession)
    assert s.resume()
    with recording_server() as (server, seen), requests.Session() as http:

        def unauthorised(handler: Any, path: str) -> bool:
            seen.append({k.lower(): v for k, v in handler.headers.items()})
            body = b'{"message": "Invalid session", "code": "900901"}'
            handler.send_response(401)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return True

        server.writer = unauthorised
        http.mount(PRODUCTION, _Redirect(server.url + "/x"))
        answer = http.get(PRODUCTION + "/quick/user/orders", auth=s.auth, timeout=5)
    assert answer.status_code == 401  # the hop's answer, returned as an auth returns answers
    assert [r.trigger for r in s.history] == ["restore"]  # no expiry, no re-login
    assert s.state is State.AUTHENTICATED and s.generation == 3
    assert len(seen) == 1 and not _leaked(seen)


# Another spelling of this machine, listed in allowed_domains (KS_ALLOWED_DOMAINS, or a test
# server's address kept in a setting): before, a session on a real host refused 127.0.0.1 and
# localhost but followed an init redirect to 127.0.0.2, 127.1 or api.localhost, and sent the
# password there. Without such an entry these were refused already (not on the list).
ALIASES = [
    ("127.0.0.2", "https://127.0.0.2:8443/apim"),
    ("127.1", "https://127.1/apim"),
    ("2130706433", "https://2130706433/apim"),
    ("0.0.0.0", "https://0.0.0.0/apim"),
    ("localhost", "https://api.localhost/apim"),
]


@pytest.mark.parametrize(("listed", "where"), ALIASES)
def test_a_listed_loopback_alias_gets_no_login_from_a_real_host(listed: str, where: str) -> None:
    from session_fsm.core.calls import Call
    from tests.test_loopback_origin import _connect

    s = KSSession(make_credentials(), host=PRODUCTION,
                  allowed_domains=("kotaksecurities.com", listed))  # fmt: skip
    asked, outcome = _connect(s, {"Success": {"redirect": {"host": where}}})
    assert isinstance(outcome, UnsafeRedirect), outcome
    _refuses_loopback(outcome)
    assert asked == [(Call.INIT, PRODUCTION)]  # no login, anywhere


def test_an_absolute_url_to_a_listed_loopback_alias_is_refused() -> None:
    s = _resumed(KSSession)
    s = KSSession(make_credentials(), host=PRODUCTION, store=s.store,
                  allowed_domains=("kotaksecurities.com", "127.1"))  # fmt: skip
    assert s.resume()
    with recording_server() as (server, seen), pytest.raises(UnsafeRedirect) as caught:
        port = server.url.split(":")[2].split("/")[0]
        s.request("GET", f"https://127.1:{port}/x")  # before: a TLS hello to the listener
    _refuses_loopback(caught.value)
    assert seen == []


def test_a_session_configured_on_a_listed_loopback_alias_is_a_sandbox() -> None:
    # Its own host is this machine: it may go to loopback, as a session on 127.0.0.1 may.
    from tests.test_loopback_origin import _connect

    s = KSSession(make_credentials(), host="https://127.0.0.2/apim",
                  allowed_domains=("kotaksecurities.com", "127.0.0.2"))  # fmt: skip
    _, outcome = _connect(s, {"Success": {"redirect": {"host": "http://127.0.0.1:9/apim"}}})
    assert outcome.state is State.AUTHENTICATED, outcome


def test_requests_auth_refuses_a_loopback_url_before_any_re_login() -> None:
    # Past its hard deadline, a session's requests auth logged in again (the password to the
    # broker, the user's other sessions logged out) for a request it then refused: httpx's
    # auth checks the URL first, and now so does requests'.
    now = [time.time()]
    store = MemoryStore()
    s = KSSession(make_credentials(), host=PRODUCTION, store=store, clock=lambda: now[0],
                  max_session_age=3600)  # fmt: skip
    store.save(s.store_key(), StoredSession(PRODUCTION, "demo-user", Secret(TOKEN), 3, now[0]))
    assert s.resume()
    now[0] += 7200  # past the deadline: the next request renews first
    with recording_server() as (server, seen), pytest.raises(UnsafeRedirect) as caught:
        requests.get(server.url + "/x", auth=s.auth, timeout=5)
    _refuses_loopback(caught.value)
    assert [r.trigger for r in s.history] == ["restore"] and seen == []
