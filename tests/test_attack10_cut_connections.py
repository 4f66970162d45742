"""After a 401 whose body was cut at the cap, the next request on the same client gets its own
answer: the connection with the rest of that body on it is closed, not pooled.

The server keeps connections alive (HTTP/1.1) and writes the cut answer slowly: its headers,
then a pause, then the body (``Content-Length`` larger than the cap, or chunked). A connection
pooled with that body on it is not readable yet when the next request takes it, so urllib3's
check of a pooled connection does not drop it. Before, ``session.auth`` in plain requests
pooled it when its ``Content-Length`` was over the cap (``read_capped`` marked the body
consumed, so ``Response.close`` released the connection instead of closing it) and the next
request on the same ``requests.Session`` failed with ``ConnectionError(ResponseNotReady)``. A
chunked one was closed by luck (urllib3 closes a connection whose chunked read is abandoned);
``s.get``, the httpx auth and the async session close it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from session_fsm import MalformedAnswer
from tests.answer_server import (
    TRADING,
    AnswerServer,
    answer_server,
    connected_async_session,
    connected_session,
)

CAP = 1 << 20
#: The cut answer's body: three times the cap, a fault the session reads no code from.
BODY = b'{"fault": {"code": 1, "message": "' + b"y" * (3 << 20) + b'"}}'
#: What a client reading in 64 KiB chunks has read when it stops: the cap and one chunk.
READ = CAP + 65536
#: The pause before the body, and after READ bytes of it: the next request is sent in it.
PAUSE = 0.4

pytestmark = pytest.mark.anyio


class _Cut:
    """How the next trading answer is framed: "length", "chunked", or None (the valid one)."""

    framing: str | None = None


@pytest.fixture
def server() -> Iterator[tuple[AnswerServer, _Cut]]:
    cut = _Cut()
    with answer_server(keep_alive=True) as api:

        def write(handler: Any, path: str) -> bool:
            framing = cut.framing
            if framing is None or path != TRADING[1]:
                return False
            cut.framing = None
            handler.send_response(401)
            handler.send_header("Content-Type", "application/json")
            if framing == "length":
                handler.send_header("Content-Length", str(len(BODY)))
            else:
                handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            handler.wfile.flush()
            with contextlib.suppress(OSError):  # the client closed the connection
                # headers, a pause; what a client reads (cap and chunk), a pause; the rest
                for piece in (b"", BODY[:READ], BODY[READ:]):
                    if piece and framing == "chunked":
                        piece = b"%x\r\n%s\r\n" % (len(piece), piece)
                    handler.wfile.write(piece)
                    handler.wfile.flush()
                    if len(piece) < len(BODY) // 2:
                        time.sleep(PAUSE)
                if framing == "chunked":
                    handler.wfile.write(b"0\r\n\r\n")
            return True

        api.writer = write
        yield api, cut


FRAMINGS = ["length", "chunked"]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_session_auth_in_plain_requests_does_not_pool_a_cut_connection(
    server: tuple[AnswerServer, _Cut], framing: str
) -> None:
    api, cut = server
    with connected_session(api) as s, requests.Session() as http:
        cut.framing = framing
        r = http.get(api.url + TRADING[1], auth=s.auth, timeout=10)
        assert r.status_code == 401 and len(r.content) <= CAP + 65536
        # before: ConnectionError(ProtocolError('Connection aborted.', ResponseNotReady))
        assert http.get(api.url + TRADING[1], auth=s.auth, timeout=10).json() == []


def test_a_cut_answer_in_plain_requests_is_read_no_further(
    server: tuple[AnswerServer, _Cut],
) -> None:
    """The rest of the body is not read (the server's writes are cut short, not waited for)."""
    api, cut = server
    with connected_session(api) as s, requests.Session() as http:
        cut.framing = "chunked"
        started = time.monotonic()
        r = http.get(api.url + TRADING[1], auth=s.auth, timeout=10)
        assert r.status_code == 401 and CAP < len(r.content) <= CAP + 65536
        r.close()
        assert time.monotonic() - started < 2 * PAUSE + 1.0


@pytest.mark.parametrize("framing", FRAMINGS)
def test_session_get_does_not_pool_a_cut_connection(
    server: tuple[AnswerServer, _Cut], framing: str
) -> None:
    api, cut = server
    with connected_session(api) as s:
        cut.framing = framing
        with pytest.raises(MalformedAnswer):
            s.get(TRADING[1])
        assert s.get(TRADING[1]).json() == []
        cut.framing = framing  # the general path (a keyword the fast path does not take)
        with pytest.raises(MalformedAnswer):
            s.get(TRADING[1], stream=False)
        assert s.get(TRADING[1], stream=False).json() == []


@pytest.mark.parametrize("framing", FRAMINGS)
def test_the_httpx_auth_does_not_pool_a_cut_connection(
    server: tuple[AnswerServer, _Cut], framing: str
) -> None:
    api, cut = server
    with connected_session(api) as s, httpx.Client(auth=s.auth, timeout=10) as client:
        cut.framing = framing
        assert client.get(api.url + TRADING[1]).status_code == 401
        assert client.get(api.url + TRADING[1]).json() == []


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_the_async_session_does_not_pool_a_cut_connection(
    server: tuple[AnswerServer, _Cut], framing: str
) -> None:
    api, cut = server
    async with connected_async_session(api) as s:
        cut.framing = framing
        with pytest.raises(MalformedAnswer):
            await s.get(TRADING[1])
        assert (await s.get(TRADING[1])).json() == []
        async with httpx.AsyncClient(auth=s.auth, timeout=10) as client:
            cut.framing = framing
            assert (await client.get(api.url + TRADING[1])).status_code == 401
            assert (await client.get(api.url + TRADING[1])).json() == []


def test_the_server_answers_in_the_pause(server: tuple[AnswerServer, _Cut]) -> None:
    """The premise: a second connection is answered while the cut one is paused."""
    api, cut = server
    cut.framing = "length"
    done = threading.Event()

    def first() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.get(api.url + TRADING[1], timeout=10).close()
        done.set()

    threading.Thread(target=first, daemon=True).start()
    time.sleep(0.05)
    assert requests.get(api.url + TRADING[1], timeout=10).json() == []
    assert done.wait(10)
