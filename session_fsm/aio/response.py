"""What the async wire returns: :class:`AsyncResponse`, a whole answer read off the wire, and
(for the wire itself) what a failed attempt means (:func:`failure`), how a body is read under
its cap (:func:`read_body`) and a session call's answer decoded (:func:`session_answer`)."""

from __future__ import annotations

import asyncio
import errno
import json
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
from urllib3 import exceptions as u3

from ..answers import CHUNK, CappedBody, answer_of, passed_deadline, transport_failure, where_of
from ..core.calls import Answer
from ..errors import APIError, Call, KSError
from ..explain import connection_cause
from ..models import DEFAULT_MAX_ANSWER_BYTES
from ..wire import WireConfig

#: The first byte of a JSON object or array: a body starting so, with a second byte that is
#: not NUL, is UTF-8 to ``json.loads``.
_OPENERS = frozenset(b"{[")


class AsyncResponse:
    """A whole answer of the async wire: status, headers and body, read before it is returned.

    It holds no request: the headers sent (Bearer, session token) are on no object an answer
    or an error can reach.
    """

    __slots__ = ("content", "headers", "method", "reason", "status", "url")

    def __init__(
        self,
        method: str,
        url: str,
        status: int,
        reason: str,
        headers: Mapping[str, str],
        content: bytes,
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content

    def __repr__(self) -> str:
        return f"<AsyncResponse [{self.status}]>"

    @property
    def status_code(self) -> int:
        """The status, under requests' name."""
        return self.status

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON (``json.loads``' errors for one that is not)."""
        content = self.content
        if len(content) > 1 and content[0] in _OPENERS and content[1]:
            # what json.loads' encoding detection decides for it: UTF-8 (no BOM, no NUL byte
            # among the first two), decoded as it decodes
            return json.loads(content.decode("utf-8", "surrogatepass"))
        return json.loads(content)

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    def get_redirect_location(self) -> bool:
        """False: the wire never follows a redirect (urllib3's retry asks this)."""
        return False

    def answer(self, call: Call, max_bytes: int = DEFAULT_MAX_ANSWER_BYTES) -> Answer:
        """This answer as the shared :class:`~session_fsm.core.calls.Answer` of ``call``."""
        retry_after = self.headers.get("Retry-After")
        return answer_of(call, self.status, retry_after, self.content, max_bytes)

    def error(
        self, call: Call, max_bytes: int = DEFAULT_MAX_ANSWER_BYTES, where: str = ""
    ) -> APIError | None:
        """The typed error of this answer to ``call`` (None on 2xx), as the sync
        :meth:`Wire.error_of <session_fsm.Wire.error_of>` maps it."""
        if self.ok:
            return None
        return self.answer(call, max_bytes).error(where or where_of(call, self.method, self.url))


class Failure:
    """An attempt that got no usable answer: the typed error to raise if it is the last, and
    the urllib3 error the shared retry policy classifies (None: never retried)."""

    __slots__ = ("error", "retryable")

    def __init__(self, error: KSError, retryable: Exception | None) -> None:
        self.error = error
        self.retryable = retryable


def failure(
    method: str, url: str, exc: BaseException, config: WireConfig, deadline: float
) -> Failure:
    """What a failed attempt means: its typed error (the shared words for its cause) and the
    urllib3 error the retry policy classifies it by."""
    if asyncio.get_running_loop().time() >= deadline:
        return Failure(passed_deadline(method, url, config), None)
    if isinstance(exc, (ssl.SSLError, aiohttp.ClientSSLError)):
        kind, words = connection_cause(exc)
        retryable: Exception = u3.SSLError("TLS failed")  # urllib3 retries it as "other"
        return Failure(transport_failure(method, url, kind, words, config), retryable)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind, words = "connect-timeout", ""
        retryable = u3.ConnectTimeoutError("connecting timed out")
    elif isinstance(exc, aiohttp.ClientConnectorError):
        kind, words = connection_cause(exc)
        retryable = u3.ConnectTimeoutError("connecting failed")  # urllib3 counts these alike
    elif isinstance(exc, aiohttp.SocketTimeoutError | asyncio.TimeoutError):
        kind, words = "read-timeout", ""
        retryable = u3.ReadTimeoutError(None, url, "read timed out")  # type: ignore[arg-type]
    elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        kind, words = "dropped", "the connection closed before the whole answer"
        retryable = u3.ProtocolError("dropped")
    elif isinstance(exc, OSError) and exc.errno in _DROPPED:
        kind, words = "dropped", "the connection was reset"
        retryable = u3.ProtocolError("reset")
    else:
        kind, words = connection_cause(exc)
        retryable = u3.ProtocolError("failed")
    return Failure(transport_failure(method, url, kind, words, config), retryable)


_DROPPED = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE})


def session_answer(call: Call, response: AsyncResponse, cap: int) -> Answer:
    """The Answer of a session call's response; the response keeps no copy of the body (its
    tokens live on only as Secrets in the decoded answer)."""
    content, response.content = response.content, b""
    try:
        return answer_of(call, response.status, response.headers.get("Retry-After"), content, cap)
    finally:
        del content


async def read_error_body(r: aiohttp.ClientResponse, cap: int) -> bytes:
    """The body of a non-2xx trading answer, never read past ``cap`` bytes and one chunk: a
    hostile answer's endless or inflated body is not read whole. Over the cap, the part read
    (longer than ``cap``: the core refuses the answer as too large) is kept and the connection
    closed, not pooled with a body left on it. ``Content-Length`` is not trusted for this."""
    body = CappedBody(cap, None)
    async for chunk in r.content.iter_chunked(CHUNK):
        if not body.add(chunk):
            r.close()
            break
    return body.take()


async def read_body(r: aiohttp.ClientResponse, cap: int | None) -> bytes | None:
    """The whole body of ``r``; None when it is larger than ``cap`` (then left unread)."""
    if cap is None:
        return await r.read()
    length = r.headers.get("Content-Length")
    if (
        length is not None
        and length.isdigit()
        and int(length) <= cap
        and "Content-Encoding" not in r.headers
    ):
        # Exactly that many bytes follow (aiohttp reads no more), none of them inflated: the
        # whole body in one read, as a raw client reads it.
        return await r.read()
    body = CappedBody(cap, length)
    if not body.over:
        async for chunk in r.content.iter_chunked(CHUNK):
            if not body.add(chunk):
                break
    data = body.take()
    return None if body.over else data
