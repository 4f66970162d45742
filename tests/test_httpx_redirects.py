"""httpx with ``follow_redirects=True`` and a session's auth never carries the session's
secrets to a host off the allow-list.

httpx drops only ``Authorization`` when a redirect leaves the origin: the session token
header, and ``Authorization`` itself on an http -> https hop, were copied into the next
request and sent to whatever host the ``Location`` named. The auth now checks every request
as its headers are written (httpcore's ``trace`` extension, which httpx copies into each hop):
a hop to a URL off the allow-list goes without the session's headers. A redirect within the
allow-list keeps them.

Real httpx clients, a loopback API and redirector, and a raw listener standing in for the
attacker's host (it records what it receives).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from session_fsm import KSSession
from session_fsm.aio.session import AsyncKSSession
from tests.answer_server import SESSION_TOKEN, AnswerServer, answer_server
from tests.conftest import make_credentials
from tests.loopback_listeners import listening
from tests.test_attack_findings import _Redirector

BEARER = b"demo-access-token"


@pytest.fixture
def api() -> Iterator[AnswerServer]:
    with answer_server() as server:
        yield server


@pytest.fixture
def redirector() -> Iterator[_Redirector]:
    r = _Redirector()
    yield r
    r.close()


def _sync_session(api: AnswerServer) -> KSSession:
    s = KSSession(make_credentials(), host=api.url, timeout=(2.0, 2.0))
    s.connect()
    return s


def _clean(received: bytes) -> bool:
    return SESSION_TOKEN.encode() not in received and BEARER not in received


@pytest.mark.parametrize("target", ["http://127.0.0.2:{port}/steal", "//127.0.0.2:{port}/steal"])
def test_httpx_client_following_a_redirect_sends_no_secret_off_the_allow_list(
    api: AnswerServer, redirector: _Redirector, target: str
) -> None:
    with listening() as evil:
        redirector.target = target.format(port=evil.port)
        s = _sync_session(api)
        try:
            with (
                httpx.Client(auth=s.auth, follow_redirects=True, timeout=5.0) as client,
                pytest.raises(httpx.TransportError),  # the listener drops the hop
            ):
                client.get(redirector.url + "/r")
        finally:
            s.close()
        assert evil.connections == 1
        assert b"GET /steal" in evil.received
        assert _clean(evil.received)


@pytest.mark.anyio
async def test_httpx_async_client_following_a_redirect_sends_no_secret_off_the_allow_list(
    api: AnswerServer, redirector: _Redirector
) -> None:
    with listening() as evil:
        redirector.target = f"http://127.0.0.2:{evil.port}/steal"
        s = AsyncKSSession(make_credentials(), host=api.url, timeout=(2.0, 2.0))
        try:
            await s.connect()
            async with httpx.AsyncClient(auth=s.auth, follow_redirects=True, timeout=5.0) as c:
                with pytest.raises(httpx.TransportError):
                    await c.get(redirector.url + "/r")
        finally:
            await s.close()
        assert evil.connections == 1
        assert b"GET /steal" in evil.received
        assert _clean(evil.received)


def test_a_sync_sessions_auth_in_an_async_client_seals_too(
    api: AnswerServer, redirector: _Redirector
) -> None:
    import asyncio

    with listening() as evil:
        redirector.target = f"http://127.0.0.2:{evil.port}/steal"
        s = _sync_session(api)

        async def follow() -> None:
            async with httpx.AsyncClient(auth=s.auth, follow_redirects=True, timeout=5.0) as c:
                await c.get(redirector.url + "/r")

        try:
            with pytest.raises(httpx.TransportError):
                asyncio.run(follow())
        finally:
            s.close()
        assert evil.connections == 1
        assert _clean(evil.received)


def test_a_redirect_within_the_allow_list_keeps_the_session_headers(
    api: AnswerServer, redirector: _Redirector
) -> None:
    redirector.target = "/landed"
    seen: list[Any] = []
    s = _sync_session(api)
    try:
        with httpx.Client(
            auth=s.auth, follow_redirects=True, timeout=5.0,
            event_hooks={"request": [seen.append]},
        ) as client:  # fmt: skip
            r = client.get(redirector.url + "/r")
    finally:
        s.close()
    assert r.status_code == 200
    assert [str(q.url.path) for q in seen] == ["/r", "/landed"]
    landed = seen[1].headers
    assert landed.get("Authorization") == "Bearer " + BEARER.decode()
    assert SESSION_TOKEN in landed.values()


def test_every_hop_is_checked_a_second_redirect_off_the_list_too(
    api: AnswerServer, redirector: _Redirector
) -> None:
    second = _Redirector()  # on the allow-list (loopback): the first hop keeps the headers
    events: list[str] = []
    try:
        with listening() as evil:
            redirector.target = second.url + "/r"
            second.target = f"http://127.0.0.2:{evil.port}/steal"
            s = _sync_session(api)
            try:
                with (
                    httpx.Client(auth=s.auth, follow_redirects=True, timeout=5.0) as client,
                    pytest.raises(httpx.TransportError),
                ):
                    client.get(
                        redirector.url + "/r",
                        extensions={"trace": lambda name, info: events.append(name)},
                    )
            finally:
                s.close()
            assert (redirector.hits, second.hits, evil.connections) == (1, 1, 1)
            assert b"GET /steal" in evil.received
            assert _clean(evil.received)
    finally:
        second.close()
    # The application's own trace callback still sees every hop.
    assert events.count("http11.send_request_headers.started") == 3
