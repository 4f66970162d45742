"""A trading call's 401 or 403 is read for its fault code, and never read whole.

The session reads the body of an error answer to tell an expired session from a rejected
Bearer token. A hostile or broken server can answer 401 with an endless body (or a small
one that inflates): before, every path read it whole (``s.get``'s fast path, ``session.auth``
in a plain requests call, the httpx auth, the async session), holding all of it in memory.
Now each reads at most ``max_answer_bytes`` and one chunk, closes the connection, and the
answer is refused as too large (``MalformedAnswer``) or, through an auth, returned with the
part read. The server here writes a body with no ``Content-Length`` while the client reads, and
counts what it managed to write: the kernel's socket buffers hold a few MB, far below the body.
"""

from __future__ import annotations

from collections.abc import Iterator

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

#: The body the server would write: far more than the cap (1 MiB) and any socket buffers.
FLOOD = 96 << 20
#: What the server may manage to write before the client has stopped reading and closed.
WRITTEN_AT_MOST = 40 << 20
CAP = 1 << 20
CHUNK = 65536

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Iterator[AnswerServer]:
    with answer_server() as s:
        yield s


def _flood(server: AnswerServer, status: int = 401) -> None:
    server.flood(*TRADING, status, FLOOD)


@pytest.mark.parametrize("status", [401, 403])
def test_a_flooded_error_answer_to_session_get_is_refused_without_reading_it_whole(
    server: AnswerServer, status: int
) -> None:
    with connected_session(server) as s:
        _flood(server, status)
        with pytest.raises(MalformedAnswer) as caught:
            s.get(TRADING[1])
    assert server.flooded < WRITTEN_AT_MOST, server.flooded
    assert "max_answer_bytes" in (caught.value.hint or "") + str(caught.value)


def test_a_flooded_401_through_session_auth_in_plain_requests_is_returned_cut(
    server: AnswerServer,
) -> None:
    with connected_session(server) as s:
        _flood(server)
        r = requests.get(server.url + TRADING[1], auth=s.auth, timeout=10)
    assert r.status_code == 401
    assert CAP < len(r.content) <= CAP + CHUNK
    assert server.flooded < WRITTEN_AT_MOST, server.flooded


def test_a_flooded_401_through_the_httpx_auth_is_returned_cut(server: AnswerServer) -> None:
    with connected_session(server) as s, httpx.Client(auth=s.auth, timeout=10) as client:
        _flood(server)
        r = client.get(server.url + TRADING[1])
    assert r.status_code == 401
    assert CAP < len(r.content) <= CAP + CHUNK
    assert server.flooded < WRITTEN_AT_MOST, server.flooded


async def test_a_flooded_401_to_the_async_session_is_refused_without_reading_it_whole(
    server: AnswerServer,
) -> None:
    async with connected_async_session(server) as s:
        _flood(server)
        with pytest.raises(MalformedAnswer):
            await s.get(TRADING[1])
    assert server.flooded < WRITTEN_AT_MOST, server.flooded


async def test_a_flooded_401_through_the_async_httpx_auth_is_returned_cut(
    server: AnswerServer,
) -> None:
    async with connected_async_session(server) as s:
        _flood(server)
        async with httpx.AsyncClient(auth=s.auth, timeout=10) as client:
            r = await client.get(server.url + TRADING[1])
    assert r.status_code == 401
    assert CAP < len(r.content) <= CAP + CHUNK
    assert server.flooded < WRITTEN_AT_MOST, server.flooded


def test_after_a_flooded_answer_the_next_call_goes_through(server: AnswerServer) -> None:
    """The connection left with a body on it was closed, not pooled: the next call on the
    same session gets its own answer."""
    with connected_session(server) as s:
        _flood(server)
        with pytest.raises(MalformedAnswer):
            s.get(TRADING[1])
        server.reset()
        assert s.get(TRADING[1]).json() == []
