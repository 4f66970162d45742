"""What comes back on the fast path (:mod:`session_fsm.fast_send`): the ``requests.Response``
built from urllib3's answer as requests builds it, an error answer's body read within its cap,
and the Wire's typed error for a failure.

``HTTPAdapter.build_response`` and ``Session.send`` make a ``Response`` with a fresh empty
``CaseInsensitiveDict``, cookie jar and ``timedelta`` and then replace them; here each
attribute is set once. ``HTTPAdapter.send`` (and reading the body) turn urllib3's exceptions
into requests' own, which :func:`~session_fsm.answers.transport_error` reads; :func:`failure`
makes the same ones, and the same typed errors, in a frame of its own.
"""

from __future__ import annotations

import datetime
import functools
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.cookies import RequestsCookieJar, extract_cookies_to_jar
from requests.exceptions import (
    ChunkedEncodingError,
    ConnectTimeout,
    ContentDecodingError,
    InvalidHeader,
    ProxyError,
    ReadTimeout,
    RetryError,
    SSLError,
)
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3 import exceptions as u3

from .answers import CHUNK, CappedBody, passed_deadline, transport_error
from .errors import ConfigurationError, KSError
from .transport import Call, GuardedAdapter
from .wire import WireConfig

__all__ = ["build_response", "failure", "read_error_body"]



def build_response(
    prep: PreparedRequest, raw: Any, content: bytes, adapter: GuardedAdapter, elapsed: float,
    session_jar: Any,
) -> requests.Response:
    """The ``requests.Response`` of ``raw``, as ``HTTPAdapter.build_response`` and
    ``Session.send`` make it (the body already read; no redirect prepared)."""
    response: requests.Response = requests.Response.__new__(requests.Response)
    store: OrderedDict[str, tuple[str, str]] = OrderedDict()
    container = getattr(raw.headers, "_container", None)
    if type(container) is dict:
        # urllib3's HTTPHeaderDict keeps {lower-case name: [name as sent, value, ...]}: what
        # ``itermerged()`` yields, read without its generator (repeated values joined as it
        # joins them, as requests does)
        for key, values in container.items():
            store[key] = (values[0], ", ".join(values[1:]))
    else:
        for name, value in raw.headers.itermerged():
            store[name.lower()] = (name, value)
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict.__new__(CaseInsensitiveDict)
    headers._store = store  # type: ignore[attr-defined]
    response.__dict__.update(
        _content=content,
        _content_consumed=True,
        _next=None,
        status_code=raw.status,
        headers=headers,
        raw=raw,
        url=prep.url,
        encoding=_encoding(headers.get("content-type")),
        history=[],
        reason=raw.reason,
        cookies=RequestsCookieJar(),
        elapsed=datetime.timedelta(seconds=elapsed),
        request=prep,
        connection=adapter,
    )
    if "set-cookie" in store:  # as requests: into the answer's jar and the session's
        extract_cookies_to_jar(response.cookies, prep, raw)  # type: ignore[no-untyped-call]
        extract_cookies_to_jar(session_jar, prep, raw)  # type: ignore[no-untyped-call]
    return response


def read_error_body(raw: Any, cap: int) -> bytes:
    """The body of a non-2xx answer, read within the call's deadline but never past ``cap``
    bytes and one chunk: a hostile answer's endless or inflated body is not read whole. Over
    the cap, what was read (longer than ``cap``: the answer is refused as too large) is kept
    and the connection closed, not pooled with a body left on it. ``Content-Length`` is not
    trusted for this: the part read says it."""
    body = CappedBody(cap, None)
    if not body.read(raw.stream(CHUNK, decode_content=True)):
        raw.close()
    return body.take()


@functools.lru_cache(maxsize=64)
def _encoding(content_type: str | None) -> str | None:
    """``get_encoding_from_headers`` for one Content-Type value (answers repeat a few)."""
    return get_encoding_from_headers(CaseInsensitiveDict({"content-type": content_type or ""}))


def failure(
    exc: Exception, call: Call, method: str, url: str, config: WireConfig
) -> KSError | None:
    """The error ``Wire.send`` raises for ``exc`` met sending (None: let it through). A frame
    of its own: the exception, and what its traceback holds, are not kept by the caller's."""
    if call.expired:
        return passed_deadline(method, url, config)
    if isinstance(exc, ValueError):  # http.client refused a header value: its text holds the
        # value, so only its kind is kept (as Wire.send does)
        return ConfigurationError(
            f"{method} {urlsplit(url).path}: a header or body value cannot be sent over HTTP",
            hint="check the credentials and headers for line breaks or invisible characters",
        )
    mapped = _requests_error(exc)
    return None if mapped is None else transport_error(method, url, mapped, config)


def _requests_error(exc: Exception) -> requests.RequestException | None:
    """The requests exception ``HTTPAdapter.send`` (and reading the body) would raise for
    ``exc``, or None for one it lets through."""
    if isinstance(exc, u3.MaxRetryError):
        reason = exc.reason
        if isinstance(reason, u3.ConnectTimeoutError) and not isinstance(
            reason, u3.NewConnectionError
        ):
            return ConnectTimeout(exc)
        if isinstance(reason, u3.ResponseError):
            return RetryError(exc)
        if isinstance(reason, u3.ProxyError):
            return ProxyError(exc)
        if isinstance(reason, u3.SSLError):
            return SSLError(exc)
        return requests.ConnectionError(exc)
    if isinstance(exc, u3.ProxyError):
        return ProxyError(exc)
    if isinstance(exc, u3.SSLError):
        return SSLError(exc)
    if isinstance(exc, u3.ReadTimeoutError):
        return ReadTimeout(exc)
    if isinstance(exc, u3.InvalidHeader):
        return InvalidHeader(exc)
    if isinstance(exc, u3.DecodeError):
        return ContentDecodingError(exc)
    if isinstance(exc, u3.ProtocolError):  # the body broke off (requests: reading it)
        return ChunkedEncodingError(exc)
    if isinstance(exc, (u3.ClosedPoolError, OSError)):
        return requests.ConnectionError(exc)
    return None
