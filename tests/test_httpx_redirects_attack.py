"""An adversarial review of the httpx auth's redirect guard (``session_fsm/httpx_auth.py``,
``_guarded``): what still broke, and what holds.

Broke (these failed before the fix):

- a request sent again (``client.send(request)`` in a retry loop) nested one guard per send
  in its ``trace`` extension, until Python's recursion limit (a ``RecursionError`` at about
  the 980th send);
- the re-login's replay, a new ``httpx.Request``, had none of the first request's extensions:
  no timeout at all (a stalled replay hung for as long as the server held it) and the
  application's ``trace`` callback never heard of it;
- a redirect off the allow-list is sent without the session's headers, but the answer of that
  host, which got no token, was read as the API's: its 401 "session expired" re-logged the
  session in (one login per request, whenever a host off the list said so), and on a replay
  its 401 "invalid Bearer token" sent the session back to re-initialise;
- an application's ``trace`` callback of the wrong kind (async on a sync client, sync on an
  async one) was not refused by httpcore's clear ``TypeError`` any more: the guard dropped the
  async one's coroutine (the callback silently never ran) and awaited the sync one's None.

Holds (passed before too, kept as regressions): a forward proxy's request for a hop off the
list names that hop's URL as its target and goes without the secrets, for 302, 307 and 308;
the check reads the URL httpcore sends to (https -> http, trailing dots, look-alike domains,
IPv6 literals). Also tried over loopback, and held: Location with user info, backslashes,
percent-encoded or decimal or short-form IPv4 hosts, an upper-case scheme, a fragment;
``client.send(request, follow_redirects=True)``.

Real httpx clients over loopback: the scripted API (``tests/answer_server.py``), HTTP servers
at 127.0.0.1 (on the allow-list: loopback) and 127.0.0.2 (off it) that record what they get.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore
import httpx
import pytest

from session_fsm import KSSession
from session_fsm.aio.session import AsyncKSSession
from session_fsm.httpx_auth import _strip_off_list
from tests.answer_server import SESSION_TOKEN, TRADING, AnswerServer, answer_server
from tests.conftest import make_credentials

BEARER = "demo-access-token"
EXPIRED = (
    b'{"fault":{"code":99999,"message":"You have been logged out. Login again",'
    b'"description":"Session token is expired or not valid"}}'
)
BEARER_REJECTED = (
    b'{"fault":{"code":900901,"message":"Invalid Credentials",'
    b'"description":"Invalid Credentials. Make sure you have provided the correct token"}}'
)
LOGIN = "POST /session/1.0/session/login/userid"


class Host:
    """An HTTP server on ``ip`` whose answer to each request is ``answer(path, n)`` (status,
    extra headers, body; n counts from 1); it records every request's path and headers."""

    def __init__(
        self, ip: str, answer: Callable[[str, int], tuple[int, dict[str, str], bytes]]
    ) -> None:
        outer = self
        self.seen: list[tuple[str, dict[str, str]]] = []

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.seen.append((self.path, dict(self.headers.items())))
                status, headers, body = answer(self.path, len(outer.seen))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((ip, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{ip}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def secrets_seen(self) -> list[str]:
        return [
            v for _, h in self.seen for v in h.values() if SESSION_TOKEN in v or BEARER in v
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def redirect_to(url: str, status: int = 302) -> Callable[[str, int], Any]:
    return lambda path, n: (status, {"Location": url}, b"")


def always(status: int, body: bytes) -> Callable[[str, int], Any]:
    return lambda path, n: (status, {"Content-Type": "application/json"}, body)


@pytest.fixture
def api() -> Iterator[AnswerServer]:
    with answer_server() as server:
        yield server


@pytest.fixture
def session(api: AnswerServer) -> Iterator[KSSession]:
    s = KSSession(make_credentials(), host=api.url, timeout=(2.0, 2.0))
    s.connect()
    yield s
    s.close()


# --- a request sent again -----------------------------------------------------------------------


def test_a_request_sent_again_and_again_keeps_one_guard(
    api: AnswerServer, session: KSSession
) -> None:
    """The application's trace callback is called at the same stack depth on every send:
    before, each send wrapped the last send's guard, one frame more each time."""
    depths: list[int] = []

    def theirs(name: str, info: dict[str, Any]) -> None:
        if name.endswith("send_request_headers.started"):
            depths.append(len(_stack()))

    with httpx.Client(auth=session.auth, timeout=5.0) as client:
        request = client.build_request("GET", api.url + TRADING[1])
        request.extensions["trace"] = theirs
        for _ in range(5):
            assert client.send(request).status_code == 200
    assert len(depths) == 5 and len(set(depths)) == 1, depths


def _stack() -> list[Any]:
    frame, frames = sys._getframe(1), []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back  # type: ignore[assignment]
    return frames


# --- the replay keeps its request's extensions ----------------------------------------------------


def _expire_then(api: AnswerServer, then_stall: float) -> Callable[[httpx.Response], None]:
    """Script the trading call to answer "expired" once; a response hook (run before the auth
    sees the 401) scripts its next answer: a 200 that stalls ``then_stall`` seconds mid-body."""
    api.script(*TRADING, 401, EXPIRED)

    def hook(response: httpx.Response) -> None:
        if response.status_code == 401:
            api.script(*TRADING, 200, b"[]", stall=then_stall)

    return hook


def test_a_replay_keeps_the_timeout_of_its_request(api: AnswerServer, session: KSSession) -> None:
    hook = _expire_then(api, then_stall=4.0)
    with httpx.Client(auth=session.auth, timeout=0.5, event_hooks={"response": [hook]}) as c:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):  # before: no timeout, RemoteProtocolError at 4 s
            c.get(api.url + TRADING[1])
    assert time.monotonic() - started < 3.0
    assert api.calls[LOGIN] == 2  # renewed, then replayed


def test_a_replay_keeps_the_applications_trace(api: AnswerServer, session: KSSession) -> None:
    hook = _expire_then(api, then_stall=0.0)
    names: list[str] = []
    with httpx.Client(auth=session.auth, timeout=5.0, event_hooks={"response": [hook]}) as c:
        r = c.get(api.url + TRADING[1], extensions={"trace": lambda n, i: names.append(n)})
    assert r.status_code == 200 and [h.status_code for h in r.history] == [401]
    assert names.count("http11.send_request_headers.started") == 2  # the first and the replay


# --- an answer from a host off the allow-list is not the API's ---------------------------------


def test_a_401_from_a_host_off_the_list_renews_nothing(
    api: AnswerServer, session: KSSession
) -> None:
    evil = Host("127.0.0.2", always(401, EXPIRED))
    hop = Host("127.0.0.1", redirect_to(evil.url + "/x"))
    try:
        with httpx.Client(auth=session.auth, follow_redirects=True, timeout=5.0) as client:
            r = client.get(hop.url + "/r")
    finally:
        hop.close()
        evil.close()
    assert r.status_code == 401 and str(r.url).startswith(evil.url)  # returned as it came
    assert api.calls[LOGIN] == 1 and session.generation == 1  # before: a login per request
    assert len(evil.seen) == 1 and evil.secrets_seen() == []


@pytest.mark.anyio
async def test_a_401_from_a_host_off_the_list_renews_no_async_session(
    api: AnswerServer,
) -> None:
    evil = Host("127.0.0.2", always(401, EXPIRED))
    hop = Host("127.0.0.1", redirect_to(evil.url + "/x"))
    s = AsyncKSSession(make_credentials(), host=api.url, timeout=(2.0, 2.0))
    try:
        await s.connect()
        async with httpx.AsyncClient(auth=s.auth, follow_redirects=True, timeout=5.0) as c:
            r = await c.get(hop.url + "/r")
        assert r.status_code == 401
        assert api.calls[LOGIN] == 1 and s.generation == 1
    finally:
        await s.close()
        hop.close()
        evil.close()
    assert evil.secrets_seen() == []


def test_a_replay_redirected_off_the_list_leaves_the_session_alone(
    api: AnswerServer, session: KSSession
) -> None:
    """The API says "expired"; the session is renewed; the replay is redirected to a host off
    the list that answers "Bearer token rejected": its answer is returned, and the renewed
    session stays (before, the session was sent back to re-initialise)."""
    evil = Host("127.0.0.2", always(401, BEARER_REJECTED))
    first = {True: (401, {"Content-Type": "application/json"}, EXPIRED)}
    hop = Host(
        "127.0.0.1", lambda path, n: first.get(n == 1, (302, {"Location": evil.url}, b""))
    )
    try:
        with httpx.Client(auth=session.auth, follow_redirects=True, timeout=5.0) as client:
            r = client.get(hop.url + "/orders")
        state, generation = session.state, session.generation
        again = httpx.get(api.url + TRADING[1], auth=session.auth, timeout=5.0)
    finally:
        hop.close()
        evil.close()
    assert r.status_code == 401 and str(r.url).startswith(evil.url)
    assert (state.name, generation) == ("AUTHENTICATED", 2)
    assert again.status_code == 200 and api.calls[LOGIN] == 2  # no third login
    assert evil.secrets_seen() == []


# --- what holds: a forward proxy, 307/308 -------------------------------------------------------


@pytest.mark.parametrize("status", [302, 307, 308])
def test_a_forward_proxys_hop_off_the_list_goes_without_the_secrets(
    api: AnswerServer, session: KSSession, status: int
) -> None:
    """Through a plain-HTTP forward proxy, httpcore's request names the URL in full as its
    target: the hop to 127.0.0.2 reaches the proxy without the session's headers."""

    def answer(path: str, n: int) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("http://127.0.0.2"):
            return 200, {}, b"[]"
        return status, {"Location": "http://127.0.0.2:9/steal"}, b""

    proxy = Host("127.0.0.1", answer)
    try:
        with httpx.Client(
            auth=session.auth, follow_redirects=True, timeout=5.0, proxy=proxy.url
        ) as client:
            r = client.post(api.url + TRADING[1], content=b"{}")
    finally:
        proxy.close()
    assert r.status_code == 200
    (to_api, api_headers), (to_evil, evil_headers) = proxy.seen
    assert to_api == api.url + TRADING[1] and api_headers["sessionToken"] == SESSION_TOKEN
    assert to_evil == "http://127.0.0.2:9/steal"
    assert not {"sessionToken", "Authorization"} & set(evil_headers)


def test_an_async_client_through_a_forward_proxy_too(
    api: AnswerServer, session: KSSession
) -> None:
    proxy = Host(
        "127.0.0.1",
        lambda path, n: (200, {}, b"[]") if "127.0.0.2" in path else
        (302, {"Location": "http://127.0.0.2:9/steal"}, b""),
    )  # fmt: skip

    async def follow() -> httpx.Response:
        async with httpx.AsyncClient(
            auth=session.auth, follow_redirects=True, timeout=5.0, proxy=proxy.url
        ) as client:
            return await client.get(api.url + TRADING[1])

    try:
        r = asyncio.run(follow())
    finally:
        proxy.close()
    assert r.status_code == 200 and len(proxy.seen) == 2
    assert proxy.secrets_seen() == [f"Bearer {BEARER}", SESSION_TOKEN]  # the API's hop only


# --- the application's trace callback of the wrong kind -----------------------------------------


def test_an_async_trace_on_a_sync_client_is_refused_as_httpcore_refuses_it(
    api: AnswerServer, session: KSSession
) -> None:
    """Before, the guard called the application's callback and dropped the coroutine it
    returned: the application's trace silently never ran."""
    made: list[Any] = []

    async def nothing() -> None:
        pass

    def theirs(name: str, info: dict[str, Any]) -> Any:  # what an async def callback returns
        made.append(nothing())
        return made[-1]

    try:
        with (
            httpx.Client(auth=session.auth, timeout=5.0) as client,
            pytest.raises(TypeError, match="synchronous interface"),
        ):
            client.get(api.url + TRADING[1], extensions={"trace": theirs})
    finally:
        for coroutine in made:
            coroutine.close()
    assert len(made) == 1  # refused at the first trace point


def test_a_sync_trace_on_an_async_client_is_refused_as_httpcore_refuses_it(
    api: AnswerServer, session: KSSession
) -> None:
    """httpcore's own message names the mistake; before, the guard's ``await`` said only
    "object NoneType can't be used in 'await' expression"."""

    async def follow() -> None:
        async with httpx.AsyncClient(auth=session.auth, timeout=5.0) as client:
            await client.get(api.url + TRADING[1], extensions={"trace": lambda n, i: None})

    with pytest.raises(TypeError, match="asynchronous interface"):
        asyncio.run(follow())


# --- what holds: the check reads the very URL httpcore sends to (a narrow unit test) ---------


@pytest.mark.parametrize(
    ("scheme", "host", "port", "target", "kept"),
    [
        (b"https", b"tradeapi.kotaksecurities.com", None, b"/apim/x", True),
        (b"https", b"tradeapi.kotaksecurities.com.", None, b"/apim/x", True),
        (b"http", b"tradeapi.kotaksecurities.com", None, b"/apim/x", False),  # https -> http
        (b"https", b"kotaksecurities.com.evil.example", None, b"/", False),
        (b"https", b"evilkotaksecurities.com", 443, b"/", False),
        (b"https", b"127.0.0.2", 443, b"/", False),
        (b"https", b"::1", 8443, b"/", True),  # loopback, allowed
        (b"https", b"::ffff:127.0.0.1", None, b"/", False),
        (b"https", b"localhost.", None, b"/", False),  # a DNS lookup
        (b"http", b"127.0.0.1", 3128, b"http://127.0.0.2:9/steal", False),  # forward proxy
        (b"http", b"127.0.0.1", 3128, b"http://127.0.0.1:9/apim", True),
        # the checked origin passes at once, but only as the target of a plain request
        (b"http", b"127.0.0.9", 80, b"/apim", True),
        (b"http", b"127.0.0.9", 80, b"http://127.0.0.2:9/", False),
    ],
)
def test_the_check_reads_the_url_httpcore_sends_to(
    scheme: bytes, host: bytes, port: int | None, target: bytes, kept: bool
) -> None:
    secret = [(b"Authorization", b"Bearer b"), (b"SESSIONTOKEN", b"s"), (b"oneTimeToken", b"o")]
    request = httpcore.Request(
        "GET", httpcore.URL(scheme=scheme, host=host, port=port, target=target),
        headers=[*secret, (b"Accept", b"*/*")],
    )  # fmt: skip
    checked = (b"http", b"127.0.0.9", 80)  # as if the auth had checked it (it would refuse it)
    _strip_off_list(request, (("kotaksecurities.com",), True), checked)
    assert request.headers == ([*secret] if kept else []) + [(b"Accept", b"*/*")]
