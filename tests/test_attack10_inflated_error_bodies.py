"""A trading call's 401 whose small compressed body inflates: each path bounds what it decodes.

tests/test_hostile_error_bodies.py floods a 401 with plain bytes. Here the body is small on the
wire (``Content-Encoding: gzip`` or ``deflate``, about 1/1000 of its decoded size) and every
path is measured with ``tracemalloc``: what it allocates while reading must stay near the cap
(1 MiB) and a chunk, not near what one read of the network inflates to. Before, httpx's
decoders inflated each network read whole (64 KiB of gzip: 64 MiB), so the httpx auth took
128 to 257 MiB (sync and async) for a 401 it keeps 1 MiB of, and ``Content-Encoding: gzip,
gzip`` made 2 KB on the wire a 1 GiB read (2 GiB at the peak); plain requests (urllib3 >=
2.6), ``s.get`` and the async session took 2 to 3 MiB. A small compressed fault still reads as
one, through stacked encodings too.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import tracemalloc
import zlib
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
CHUNK = 65536
#: What reading a capped error body may allocate at its peak (the cap, a chunk, copies).
PEAK_AT_MOST = 12 << 20
#: The decoded size of the bomb (its body on the wire is about 64 KiB).
INFLATED = 64 << 20
EXPIRED = (
    b'{"fault":{"code":99999,"message":"You have been logged out. Login again",'
    b'"description":"Session token is expired or not valid"}}'
)

pytestmark = pytest.mark.anyio


@functools.cache
def _compressed(size: int, wbits: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(1 << 20)
    return b"".join([*(c.compress(zeros) for _ in range(size >> 20)), c.flush()])


def _encoded(body: bytes, wbits: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return c.compress(body) + c.flush()


class _Encoded:
    """What the trading path answers instead of the server's own: (status, encoding, body)."""

    answer: tuple[int, str, bytes] | None = None


@pytest.fixture
def server() -> Iterator[tuple[AnswerServer, _Encoded]]:
    encoded = _Encoded()
    with answer_server() as api:

        def write(handler: Any, path: str) -> bool:
            answer = encoded.answer
            if answer is None or path != TRADING[1]:
                return False
            encoded.answer = None  # once: the replay (after a re-login) gets the valid one
            status, encoding, body = answer
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Encoding", encoding)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            with contextlib.suppress(OSError):  # the client closed the connection
                handler.wfile.write(body)
            return True

        api.writer = write
        yield api, encoded


def _bomb(encoded: _Encoded, encoding: str) -> None:
    if encoding == "gzip, gzip":  # about 400 bytes on the wire
        encoded.answer = (401, encoding, _encoded(_compressed(INFLATED, 31), 31))
        return
    wbits = 31 if encoding == "gzip" else 15
    encoded.answer = (401, encoding, _compressed(INFLATED, wbits))


def _measure() -> int:
    return tracemalloc.get_traced_memory()[1]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "gzip, gzip"])
def test_an_inflating_401_through_the_httpx_auth_is_decoded_capped(
    server: tuple[AnswerServer, _Encoded], encoding: str
) -> None:
    api, encoded = server
    with connected_session(api) as s, httpx.Client(auth=s.auth, timeout=10) as client:
        _bomb(encoded, encoding)
        gc.collect()
        tracemalloc.start()
        try:
            r = client.get(api.url + TRADING[1])
            peak = _measure()
        finally:
            tracemalloc.stop()
        assert r.status_code == 401
        assert CAP < len(r.content) <= CAP + CHUNK
        assert peak < PEAK_AT_MOST, f"peak {peak >> 20} MiB"  # before: 128 to 257 MiB
        assert client.get(api.url + TRADING[1]).json() == []  # the next call: its own answer


@pytest.mark.parametrize("encoding", ["gzip", "gzip, gzip"])
async def test_an_inflating_401_through_the_async_httpx_auth_is_decoded_capped(
    server: tuple[AnswerServer, _Encoded], encoding: str
) -> None:
    api, encoded = server
    async with (
        connected_async_session(api) as s,
        httpx.AsyncClient(auth=s.auth, timeout=10) as client,
    ):
        _bomb(encoded, encoding)
        gc.collect()
        tracemalloc.start()
        try:
            r = await client.get(api.url + TRADING[1])
            peak = _measure()
        finally:
            tracemalloc.stop()
        assert r.status_code == 401
        assert CAP < len(r.content) <= CAP + CHUNK
        assert peak < PEAK_AT_MOST, f"peak {peak >> 20} MiB"
        assert (await client.get(api.url + TRADING[1])).json() == []


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "gzip, gzip"])
def test_an_inflating_401_on_the_other_sync_paths_is_decoded_capped(
    server: tuple[AnswerServer, _Encoded], encoding: str
) -> None:
    """A guard: ``s.get`` and plain requests stay bounded (urllib3 bounds what it inflates)."""
    api, encoded = server
    with connected_session(api) as s:
        for call in ("get", "auth"):
            _bomb(encoded, encoding)
            gc.collect()
            tracemalloc.start()
            try:
                if call == "get":
                    with pytest.raises(MalformedAnswer):
                        s.get(TRADING[1])
                else:
                    r = requests.get(api.url + TRADING[1], auth=s.auth, timeout=10)
                    assert r.status_code == 401 and CAP < len(r.content) <= CAP + CHUNK
                peak = _measure()
            finally:
                tracemalloc.stop()
            assert peak < PEAK_AT_MOST, f"{call}: peak {peak >> 20} MiB"
        assert s.get(TRADING[1]).json() == []


async def test_an_inflating_401_to_the_async_session_is_decoded_capped(
    server: tuple[AnswerServer, _Encoded],
) -> None:
    api, encoded = server
    async with connected_async_session(api) as s:
        _bomb(encoded, "gzip")
        gc.collect()
        tracemalloc.start()
        try:
            with pytest.raises(MalformedAnswer):
                await s.get(TRADING[1])
            peak = _measure()
        finally:
            tracemalloc.stop()
        assert peak < PEAK_AT_MOST, f"peak {peak >> 20} MiB"
        assert (await s.get(TRADING[1])).json() == []


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_expired_401_through_the_httpx_auth_renews_and_replays(
    server: tuple[AnswerServer, _Encoded], encoding: str
) -> None:
    """The capped decoding reads a small compressed fault as the whole one: the session is
    renewed and the request replayed; the user's 401 (none here) would read as sent."""
    api, encoded = server
    with connected_session(api) as s, httpx.Client(auth=s.auth, timeout=10) as client:
        generation = s.generation
        encoded.answer = (401, encoding, _encoded(EXPIRED, 31 if encoding == "gzip" else 15))
        r = client.get(api.url + TRADING[1])
        assert r.status_code == 200 and r.json() == []
        assert s.generation == generation + 1


def test_a_compressed_401_the_session_cannot_renew_reads_whole_for_the_user(
    server: tuple[AnswerServer, _Encoded],
) -> None:
    """A raw-deflate body (no zlib header, as some servers send ``deflate``) and a 403 that is
    not about the session: the user gets it with its decoded body."""
    api, encoded = server
    fault = json.dumps({"fault": {"code": 403, "message": "Segment not enabled"}}).encode()
    with connected_session(api) as s, httpx.Client(auth=s.auth, timeout=10) as client:
        encoded.answer = (403, "deflate", _encoded(fault, -15))
        r = client.get(api.url + TRADING[1])
        assert r.status_code == 403 and r.content == fault


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "deflate, gzip"])
def test_a_compressed_403_under_the_cap_reads_exactly_through_the_httpx_auth(
    server: tuple[AnswerServer, _Encoded], encoding: str
) -> None:
    """Decoded a chunk at a time, a body of several chunks (long runs: zlib holds output back
    at each chunk's end) is the body sent, to its last byte."""
    api, encoded = server
    fault = json.dumps({"fault": {"code": 403, "message": "x" * 300_001}}).encode()
    with connected_session(api) as s, httpx.Client(auth=s.auth, timeout=10) as client:
        body = fault
        for name in encoding.split(", "):  # applied in the order named
            body = _encoded(body, 31 if name == "gzip" else 15)
        encoded.answer = (403, encoding, body)
        r = client.get(api.url + TRADING[1])
        assert r.status_code == 403 and r.content == fault
        assert r.json()["fault"]["code"] == 403


def test_a_corrupt_gzip_401_through_the_httpx_auth_is_httpxs_decoding_error(
    server: tuple[AnswerServer, _Encoded],
) -> None:
    """As httpx's own decoders: a body that is not the gzip it says is a DecodingError."""
    api, encoded = server
    with connected_session(api) as s, httpx.Client(auth=s.auth, timeout=10) as client:
        encoded.answer = (401, "gzip", b"\x1f\x8b" + bytes(range(200)))
        with pytest.raises(httpx.DecodingError):
            client.get(api.url + TRADING[1])
        assert client.get(api.url + TRADING[1]).json() == []
