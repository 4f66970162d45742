"""A 401 whose body breaks off (connection reset after 100 KB) or stalls (headers, 100 KB, then
nothing): the capped read of an error body keeps the call's typed errors and its deadline.

``s.get`` (the fast path) and the async session read a trading call's error body with a cap
since 67f425d; these check that a reset mid-body is still the library's typed error (or a
retried call's answer), that a stall is bounded by ``deadline`` (the most one call may take,
whatever the read timeout), and that no secret reaches the error (``tests.secret_hunt``).
``session.auth`` in plain requests and the httpx auth answer or raise their client's own errors,
bounded by the client's timeout.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from session_fsm import AsyncKSSession, KSError, KSSession
from tests.answer_server import OTT, SESSION_TOKEN, TRADING, AnswerServer, answer_server
from tests.conftest import FAST_RETRY, make_credentials
from tests.secret_hunt import hunt

PASSWORD, ACCESS_CODE, BEARER = "pw-7c1e9a40b2", "73519046", "bearer-5d2f8e71c0aa"
SECRETS = [PASSWORD, ACCESS_CODE, BEARER, OTT, SESSION_TOKEN]
#: The read timeout is long; the deadline (the most one call may take) is what bounds a stall.
OPTIONS: dict[str, Any] = {"retry": FAST_RETRY, "timeout": (2.0, 10.0), "deadline": 1.0}
STALL = 4.0

pytestmark = pytest.mark.anyio


class _Broken:
    """How the trading answers break: "reset" or "stall", and how many times (then valid)."""

    how: str | None = None
    times = 0


@pytest.fixture
def server() -> Iterator[tuple[AnswerServer, _Broken]]:
    broken = _Broken()
    with answer_server() as api:

        def write(handler: Any, path: str) -> bool:
            how = broken.how
            if how is None or path != TRADING[1]:
                return False
            broken.times -= 1
            if broken.times <= 0:
                broken.how = None
            handler.send_response(401)
            handler.send_header("Content-Type", "application/json")
            if how == "stall":
                handler.send_header("Content-Length", str(3 << 20))
            handler.end_headers()
            with contextlib.suppress(OSError):
                handler.wfile.write(b'{"fault": {"message": "' + b"z" * 100_000)
                handler.wfile.flush()
                if how == "stall":
                    time.sleep(STALL)
                else:  # an RST, not a FIN: the client's read fails
                    linger = struct.pack("ii", 1, 0)
                    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            handler.close_connection = True
            return True

        api.writer = write
        yield api, broken


def _credentials() -> Any:
    return make_credentials(password=PASSWORD, access_code=ACCESS_CODE, access_token=BEARER)


def _clean(exc: BaseException) -> None:
    assert hunt(exc, SECRETS) == []


@pytest.mark.parametrize("times", [1, 9])
def test_a_reset_mid_401_body_to_session_get_is_typed_or_retried(
    server: tuple[AnswerServer, _Broken], times: int
) -> None:
    api, broken = server
    with KSSession(_credentials(), host=api.url, **OPTIONS) as s:
        s.connect()
        broken.how, broken.times = "reset", times
        try:
            assert s.get(TRADING[1]).json() == []  # retried (a GET), the next answer is valid
        except KSError as exc:
            _clean(exc)
            assert times > 1  # only when every attempt is reset
        else:
            assert times == 1


def test_a_stalled_401_body_to_session_get_is_bounded_by_the_deadline(
    server: tuple[AnswerServer, _Broken],
) -> None:
    api, broken = server
    with KSSession(_credentials(), host=api.url, **OPTIONS) as s:
        s.connect()
        broken.how, broken.times = "stall", 9
        started = time.monotonic()
        with pytest.raises(KSError) as caught:
            s.get(TRADING[1])
        assert time.monotonic() - started < OPTIONS["deadline"] + 1.0
        _clean(caught.value)


@pytest.mark.parametrize("how", ["reset", "stall"])
async def test_a_broken_401_body_to_the_async_session_is_typed_and_bounded(
    server: tuple[AnswerServer, _Broken], how: str
) -> None:
    api, broken = server
    async with AsyncKSSession(_credentials(), host=api.url, **OPTIONS) as s:
        await s.connect()
        broken.how, broken.times = how, 9
        started = time.monotonic()
        with pytest.raises(KSError) as caught:
            await s.get(TRADING[1])
        assert time.monotonic() - started < OPTIONS["deadline"] + 1.0
        _clean(caught.value)
        broken.how = None
        assert (await s.get(TRADING[1])).json() == []


@pytest.mark.parametrize("how", ["reset", "stall"])
def test_a_broken_401_body_through_the_auths_is_bounded_by_the_clients_timeout(
    server: tuple[AnswerServer, _Broken], how: str
) -> None:
    """A reset body reads as an expired session's (renewed, replayed: 200); a stalled one
    with a ``Content-Length`` over the cap is returned at once by plain requests (401, no body
    read) and is httpx's ReadTimeout after its read timeout."""
    api, broken = server
    with KSSession(_credentials(), host=api.url, **OPTIONS) as s:
        s.connect()
        broken.how, broken.times = how, 1
        started = time.monotonic()
        r = requests.get(api.url + TRADING[1], auth=s.auth, timeout=(2.0, 0.5))
        assert (r.status_code, r.content) == ((200, b"[]") if how == "reset" else (401, b""))
        broken.how, broken.times = how, 1
        with httpx.Client(auth=s.auth, timeout=0.5) as client:
            if how == "reset":
                assert client.get(api.url + TRADING[1]).json() == []
            else:
                with pytest.raises(httpx.ReadTimeout):
                    client.get(api.url + TRADING[1])
        assert time.monotonic() - started < 3.0
        assert requests.get(api.url + TRADING[1], auth=s.auth, timeout=5).json() == []


def test_a_large_2xx_is_the_users_data_read_whole_on_every_sync_path(
    server: tuple[AnswerServer, _Broken],
) -> None:
    """A guard: only error answers are read capped; a 3 MiB 200 is returned whole."""
    api, _ = server
    body = b'["' + b"o" * (3 << 20) + b'"]'
    with KSSession(_credentials(), host=api.url, **OPTIONS) as s:
        s.connect()
        api.script(*TRADING, 200, body)
        assert s.get(TRADING[1]).content == body
        assert s.get(TRADING[1], stream=False).content == body
        assert requests.get(api.url + TRADING[1], auth=s.auth, timeout=5).content == body
        with httpx.Client(auth=s.auth, timeout=5) as client:
            assert client.get(api.url + TRADING[1]).content == body


async def test_a_large_2xx_is_the_users_data_read_whole_on_the_async_session(
    server: tuple[AnswerServer, _Broken],
) -> None:
    api, _ = server
    body = b'["' + b"o" * (3 << 20) + b'"]'
    async with AsyncKSSession(_credentials(), host=api.url, **OPTIONS) as s:
        await s.connect()
        api.script(*TRADING, 200, body)
        assert (await s.get(TRADING[1])).content == body
        async with httpx.AsyncClient(auth=s.auth, timeout=5) as client:
            assert (await client.get(api.url + TRADING[1])).content == body
