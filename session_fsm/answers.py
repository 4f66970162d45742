"""What goes over the wire and what comes back: who calls (:class:`Identity`), the one place a
call's secrets are written into a request (:class:`CallAuth`), the sealing of requests an error
can reach, and the reading of an answer (:class:`Answer`) into a payload or a typed error.

Nothing here sends anything; :class:`~session_fsm.wire.Wire` does, with these.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Iterable, Mapping
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase
from urllib3 import exceptions as urllib3_exceptions

from . import contract as c
from .core.calls import SESSION_CALLS, Answer, retry_after, too_large
from .core.calls import Identity as Identity  # re-exported: the wire's users know it here
from .errors import (
    Call,
    ConfigurationError,
    KSError,
    NetworkError,
    RequestTimeout,
)
from .explain import HINTS, connection_cause, endpoint
from .models import (
    decode_answer,
    valid_token,
)
from .secret import Secret

if TYPE_CHECKING:
    from .wire import WireConfig


#: Request headers that carry our secrets; masked on any request an error can reach.
SECRET_HEADERS = (c.H_AUTHORIZATION, c.H_SESSION_TOKEN, c.H_ONE_TIME_TOKEN)


MASK = "[redacted]"


class CallAuth(AuthBase):
    """Writes a call's secrets into the prepared request: the one place they are revealed.

    Holds the Bearer token, any secret headers (one-time token, session token) and the JSON
    body's fields as Secrets, so no frame of the library that can raise holds one in the
    clear; requests calls it while preparing the request, just before the bytes are written.
    """

    def __init__(
        self,
        who: Identity,
        secret_headers: Mapping[str, Secret] | None = None,
        body: Mapping[str, str | Secret] | None = None,
    ) -> None:
        self.who = who
        self.secret_headers = dict(secret_headers or {})
        self.body = None if body is None else dict(body)

    def __repr__(self) -> str:
        return f"CallAuth(headers={sorted(self.secret_headers)})"

    def reveal(self) -> tuple[dict[str, str], bytes | None]:
        """The call's secret headers (and ``Content-Type`` with a body) and its JSON body,
        revealed: for the transport to write into the request it sends, and nothing else.
        Raises ConfigurationError (naming the header, never the value) for a token that
        HTTP cannot carry."""
        tokens = {c.H_AUTHORIZATION: self.who.access_token, **self.secret_headers}
        for name, value in tokens.items():
            if not valid_token(value.reveal()):  # http.client would raise with the value in it
                raise ConfigurationError(
                    f"the {name} header's token is not 1 to 4096 visible ASCII characters",
                    hint="check the token for pasted spaces, line breaks or invisible characters",
                )
        headers = {c.H_AUTHORIZATION: "Bearer " + self.who.access_token.reveal()}
        for name, value in self.secret_headers.items():
            headers[name] = value.reveal()
        if self.body is None:
            return headers, None
        headers["Content-Type"] = "application/json"
        return headers, _dumps(
            {k: v.reveal() if isinstance(v, Secret) else v for k, v in self.body.items()}
        ).encode()

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        headers, body = self.reveal()
        r.headers.update(headers)
        if body is not None:
            r.body = body  # requests sets Content-Length from it after the auth
        return r


def _body_encoder() -> Callable[[Any], str]:
    """``json.dumps`` (its defaults: ASCII, ``", "`` and ``": "``), with the C encoder made
    once: ``json.dumps`` makes one, and a Python closure, on every call. Without circular
    reference bookkeeping, which only a self-containing value needs: a body is a flat object
    of strings. ``json.dumps`` itself where the json module has no C accelerator."""
    if _c_make_encoder is None:  # pragma: no cover - CPython has it
        return json.dumps
    encode = _c_make_encoder(
        None, json.JSONEncoder().default, encode_basestring_ascii, None, ": ", ", ", False,
        False, True,
    )  # fmt: skip

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    return dumps


#: The JSON text of a call's body, as ``json.dumps`` writes it.
_dumps: Final = _body_encoder()


def seal(request: requests.PreparedRequest | None, *, drop_body: bool = False) -> None:
    """Mask our secret headers on a request that was sent (in place: every frame and response
    holding it sees the masked copy); ``drop_body`` drops its body too (login/2FA bodies)."""
    if request is None:
        return
    for name in SECRET_HEADERS:
        if name in request.headers:
            request.headers[name] = MASK
    if drop_body:
        request.body = None


def forget_below(exc: BaseException) -> None:
    """Clear the locals of the frames ``exc`` passed through below the one catching it (each
    has ended): the HTTP client's frames keep the headers and body sent (the Bearer and session
    tokens, the password, the access code, the one-time token), which a traceback rendered with
    its locals, or walked by a debugger, would show. For an error passed on as it is (an
    interrupt, a cancellation, an unexpected error): the library's own errors are raised
    outside the frames that held the secrets."""
    tb = exc.__traceback__
    if tb is not None:
        traceback.clear_frames(tb.tb_next)


def seal_response(response: requests.Response, *, drop_body: bool = False) -> None:
    """:func:`seal` the request of ``response`` and of every response in its history, and
    the next hop requests prepared for a redirect it did not follow (``response.next``)."""
    for r in (*response.history, response):
        seal(r.request, drop_body=drop_body)
        following = getattr(r, "_next", None)
        if isinstance(following, requests.PreparedRequest):
            seal(following, drop_body=drop_body)


def transport_error(
    method: str, url: str, exc: requests.RequestException, config: WireConfig
) -> KSError:
    """The typed error of a request that got no answer: the call, ``host:port`` and the cause
    in words (refused, DNS, TLS, timeout, dropped), with what to do about that cause."""
    if isinstance(exc, requests.exceptions.InvalidHeader):  # its text quotes the value
        return ConfigurationError(
            f"{method} {urlsplit(url).path}: a header value has line breaks or leading spaces",
            hint="check the credentials and headers for pasted line breaks",
        )
    kind, words = connection_cause(exc)
    if kind == "other" and _timed_out(exc):
        kind = "read-timeout"
    return transport_failure(method, url, kind, words, config)


def transport_failure(method: str, url: str, kind: str, words: str, config: WireConfig) -> KSError:
    """The typed error of a request that got no answer, from its cause (a kind of
    :func:`~session_fsm.explain.connection_cause` and its words): what every transport, sync
    or async, raises for it."""
    if kind == "connect-timeout":
        words = f"connecting timed out after {config.timeout[0]:g}s"
    elif kind == "read-timeout":
        words = f"no answer within {config.timeout[1]:g}s (read timeout)"
    message = f"{method} {urlsplit(url).path}: {endpoint(url)}: {words}"
    if kind in ("connect-timeout", "read-timeout"):
        return RequestTimeout(message, hint=HINTS[kind])
    return NetworkError(message, hint=HINTS[kind])


def passed_deadline(method: str, url: str, config: WireConfig) -> RequestTimeout:
    """The error of a call that passed ``config.deadline`` (connect, answer, retries)."""
    return RequestTimeout(
        f"{method} {urlsplit(url).path}: {endpoint(url)}: passed its deadline of "
        f"{config.deadline:g}s",
        hint="raise deadline= if the API is slow, or retry later",
    )


def tls_files_unusable(method: str, url: str, exc: OSError) -> ConfigurationError:
    """The error of a CA bundle or client certificate file that cannot be read."""
    return ConfigurationError(
        f"{method} {urlsplit(url).path}: TLS files unusable: {exc}",
        hint="fix verify=/cert= or the REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE variable",
    )


def unsendable(method: str, url: str) -> ConfigurationError:
    """The error of a header or body value HTTP cannot carry (the value is never shown)."""
    return ConfigurationError(
        f"{method} {urlsplit(url).path}: a header or body value cannot be sent over HTTP",
        hint="check the credentials and headers for line breaks or invisible characters",
    )


_SESSION_CALLS = SESSION_CALLS


def _where(call: Call, response: requests.Response) -> str:
    """``METHOD /path`` of the call an answer belongs to (never its query string)."""
    request = response.request
    if request is None:
        return where_of(call, "", "")
    return where_of(call, request.method or "", request.url or "")


def where_of(call: Call, method: str, url: str) -> str:
    """``METHOD /path`` of ``call``: a session call's as the API documents it, else the
    request's (never its query string); "" when unknown."""
    known = _SESSION_CALLS.get(call)
    if known is not None:
        return " ".join(known)
    if not method and not url:
        return ""
    return f"{method} {urlsplit(url).path}"


def _timed_out(exc: requests.RequestException) -> bool:
    """True for a timeout, also when urllib3's retries wrapped it in a ConnectionError."""
    if isinstance(exc, requests.Timeout):
        return True
    first = exc.args[0] if exc.args else None
    if isinstance(first, urllib3_exceptions.ReadTimeoutError):  # met reading a streamed body
        return True
    reason = getattr(first, "reason", None)
    # urllib3's NewConnectionError (connection refused) subclasses ConnectTimeoutError.
    refused = isinstance(reason, urllib3_exceptions.NewConnectionError)
    return isinstance(reason, urllib3_exceptions.TimeoutError) and not refused


_too_large = too_large
_retry_after = retry_after


#: The chunk an answer's body is read in, by every transport.
CHUNK: Final = 65536


class CappedBody:
    """An answer's body read in chunks by any transport, refused past ``cap`` bytes (a
    ``Content-Length`` over it refuses it before any is read): :attr:`over` says so."""

    __slots__ = ("cap", "data", "over")

    def __init__(self, cap: int, content_length: str | None) -> None:
        self.cap = cap
        self.data = bytearray()
        length = content_length or ""
        # ASCII digits only: isdigit() also takes "²" (a latin-1 header byte), which int()
        # refuses; such a length is none, as urllib3 takes it (the body is read to its end)
        self.over = length.isascii() and length.isdigit() and int(length) > cap

    def add(self, chunk: bytes) -> bool:
        """Take ``chunk``; False once the body is over the cap (stop reading)."""
        self.data += chunk
        if len(self.data) > self.cap:
            self.over = True
        return not self.over

    def read(self, chunks: Iterable[bytes]) -> bool:
        """Take ``chunks`` (a lazy iterator: nothing is read past the cap, nor at all when a
        ``Content-Length`` refused the body already); False when the body is over the cap."""
        return not self.over and all(self.add(chunk) for chunk in chunks)

    def take(self) -> bytes:
        """The body read (emptied here: a part of a body may hold a token)."""
        data = bytes(self.data)
        self.data = bytearray()
        return data


def read_capped(response: requests.Response, cap: int) -> bool:
    """Read the body of ``response`` now, unless it was read: never more than ``cap`` bytes
    and one chunk past them, so a hostile answer's endless or inflated body is not read whole.
    True when the body is over ``cap``: the connection is then closed (not returned to the
    pool with a body left on it) and ``response.content`` is the part read. (requests reads a
    body after the response hooks have run, and an auth's hook reads a 401's fault code.)"""
    read: Any = response._content  # False until read
    if read is not False:  # read already (the session's own paths read with the cap)
        return len(read or b"") > cap
    body = CappedBody(cap, response.headers.get("Content-Length"))
    body.read(response.iter_content(CHUNK))
    response._content = body.take()
    response._content_consumed = True  # type: ignore[attr-defined]
    if body.over:
        # requests' close() only releases a consumed response's connection (to the pool, the
        # rest of the body on it): the connection itself is closed first
        raw = response.raw
        if raw is not None:
            raw.close()
        response.close()
    return body.over




def answer(call: Call, response: requests.Response, max_bytes: int) -> Answer:
    """The :class:`Answer` of a ``response`` (a trading call's), its body read now if it was
    not (:func:`read_capped`): a body over ``max_bytes`` is not decoded (MalformedAnswer); one
    that is not JSON decodes to :class:`~session_fsm.models.Undecodable`, which a non-2xx
    answer treats as no fault."""
    if read_capped(response, max_bytes):
        raise _too_large(call, response.status_code, max_bytes)
    return answer_of(
        call,
        response.status_code,
        response.headers.get("Retry-After"),
        response.content or b"",
        max_bytes,
    )


def answer_of(
    call: Call, status: int, retry_after: str | None, content: bytes, max_bytes: int
) -> Answer:
    """The :class:`Answer` of a read answer of any transport: its status, its ``Retry-After``
    header and its body (over ``max_bytes``: MalformedAnswer, never decoded)."""
    if len(content) > max_bytes:
        raise _too_large(call, status, max_bytes)
    wait = None if retry_after is None else _retry_after(retry_after)  # (None: no call)
    return Answer(call, status, wait, decode_answer(content))


def trading_call(
    who: Identity, session_token: Secret, headers: Mapping[str, str] | None = None
) -> tuple[dict[str, str], CallAuth]:
    """The plain headers (``headers`` over the identity's) and the auth of an authorised
    trading request, for any transport."""
    merged = who.plain_headers()
    if headers:
        merged.update(headers)
    return merged, CallAuth(who, {c.H_SESSION_TOKEN: session_token})
