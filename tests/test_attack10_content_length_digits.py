"""A ``Content-Length`` made of digits that are not ASCII digits (``²``, ``١٢``) is no length.

http.client and urllib3 ignore a length ``int()`` refuses and read the body to the close;
``str.isdigit`` says True for ``"²"`` (a superscript two, byte 0xB2 in a latin-1 header), whose
``int()`` raises ValueError. ``CappedBody`` checked the header with ``isdigit`` and then took
``int`` of it: the capped read of ``session.auth``'s 401 in plain requests (67f425d) raised a
bare ValueError out of ``requests.get``, and a session call's answer (login, 2FA) failed the
login with a ConfigurationError blaming "line breaks or invisible characters" in the
credentials (the fast path's mapping of a ValueError). Now such a length is no length (as
urllib3 takes it): the body is read capped to the close.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from session_fsm import AsyncKSSession, KSError, KSSession, contract
from session_fsm.answers import CappedBody
from tests.answer_server import TRADING, AnswerServer, answer_server
from tests.conftest import FAST_RETRY, make_credentials

EXPIRED = (
    b'{"fault":{"code":99999,"message":"You have been logged out. Login again",'
    b'"description":"Session token is expired or not valid"}}'
)

pytestmark = pytest.mark.anyio


class _Odd:
    """The path whose next answer says ``Content-Length: <length>`` (then answers normally)."""

    path: str | None = None
    length = "\u00b2"


@pytest.fixture
def server() -> Iterator[tuple[AnswerServer, _Odd]]:
    odd = _Odd()
    with answer_server() as api:

        def write(handler: Any, path: str) -> bool:
            if path != odd.path:
                return False
            odd.path = None
            if path == TRADING[1]:
                status, body = 401, EXPIRED
            else:
                status, body = api._take(handler.command, path)[:2]
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", odd.length)  # latin-1: one byte, 0xB2
            handler.end_headers()
            handler.wfile.write(body)
            handler.close_connection = True
            return True

        api.writer = write
        yield api, odd


@pytest.mark.parametrize("length", ["\u00b2", "\u0661\u0662", "12"])
def test_a_length_of_other_digits_is_no_length(length: str) -> None:
    assert CappedBody(10, length).over is (length == "12")
    assert not CappedBody(10, "\u00b9\u00b2").over  # "¹²": int() refuses it


def test_session_auth_in_plain_requests_reads_a_401_with_an_odd_length(
    server: tuple[AnswerServer, _Odd],
) -> None:
    api, odd = server
    with KSSession(make_credentials(), host=api.url, retry=FAST_RETRY, timeout=(2.0, 5.0)) as s:
        s.connect()
        generation = s.generation
        odd.path = TRADING[1]
        # before: ValueError: invalid literal for int() with base 10: '²'
        r = requests.get(api.url + TRADING[1], auth=s.auth, timeout=5)
        assert r.status_code == 200 and r.json() == []  # the expired session renewed, replayed
        assert s.generation == generation + 1


@pytest.mark.parametrize("call", [contract.LOGIN_USERID, contract.TWO_FA_ACCESSCODE])
def test_a_session_call_answered_with_an_odd_length_is_read(
    server: tuple[AnswerServer, _Odd], call: tuple[str, str]
) -> None:
    api, odd = server
    with KSSession(make_credentials(), host=api.url, retry=FAST_RETRY, timeout=(2.0, 5.0)) as s:
        odd.path = call[1]
        s.connect()  # before: ConfigurationError ("a header or body value cannot be sent")
        assert s.generation == 1


async def test_the_async_session_reads_an_odd_length_too(
    server: tuple[AnswerServer, _Odd],
) -> None:
    """A guard: aiohttp's parser refuses such a length, a typed error or a retried call."""
    api, odd = server
    async with AsyncKSSession(
        make_credentials(), host=api.url, retry=FAST_RETRY, timeout=(2.0, 5.0)
    ) as s:
        odd.path = contract.LOGIN_USERID[1]
        with contextlib.suppress(KSError):  # a typed error is fine; a ValueError is not
            await s.connect()
