"""What goes over the wire and what comes back: who calls (:class:`Identity`), the one place a
call's secrets are written into a request (:class:`CallAuth`), the sealing of requests an error
can reach, and the reading of an answer (:class:`Answer`) into a payload or a typed error.

Nothing here sends anything; :class:`~session_fsm.wire.Wire` does, with these.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase
from urllib3 import exceptions as urllib3_exceptions
from urllib3.util.retry import Retry

from . import contract as c
from .errors import (
    APIError,
    Call,
    ConfigurationError,
    KSError,
    MalformedAnswer,
    NetworkError,
    RequestTimeout,
    error_for,
)
from .explain import HINTS, connection_cause, endpoint
from .models import (
    NOT_JSON,
    Fault,
    ResLogin,
    ResLogout,
    ResSession2FA,
    ResSessionInit,
    Undecodable,
    UserCredentials,
    UserDetails,
    decode_answer,
    unwrap,
    valid_token,
)
from .secret import Secret

if TYPE_CHECKING:
    from .wire import WireConfig


#: Request headers that carry our secrets; masked on any request an error can reach.
SECRET_HEADERS = (c.H_AUTHORIZATION, c.H_SESSION_TOKEN, c.H_ONE_TIME_TOKEN)


MASK = "[redacted]"


@dataclass(frozen=True)
class Identity:
    """Who is calling: the non-secret identifiers and the gateway (Bearer) token."""

    userid: str
    consumer_key: str
    ip: str
    app_id: str
    access_token: Secret

    def plain_headers(self) -> dict[str, str]:
        """The non-secret headers every call sends (the Bearer goes in via :class:`CallAuth`)."""
        return {
            "Accept": "application/json",
            c.H_CONSUMER_KEY: self.consumer_key,
            c.H_IP: self.ip,
            c.H_APP_ID: self.app_id,
        }

    def base_headers(self) -> dict[str, str]:
        """Headers every call sends (reveals the Bearer token: wire use only)."""
        return {
            c.H_AUTHORIZATION: f"Bearer {self.access_token.reveal()}",
            "Accept": "application/json",
            c.H_CONSUMER_KEY: self.consumer_key,
            c.H_IP: self.ip,
            c.H_APP_ID: self.app_id,
        }


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
        return headers, json.dumps(
            {k: v.reveal() if isinstance(v, Secret) else v for k, v in self.body.items()}
        ).encode()

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        headers, body = self.reveal()
        r.headers.update(headers)
        if body is not None:
            r.body = body  # requests sets Content-Length from it after the auth
        return r


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


def seal_response(response: requests.Response, *, drop_body: bool = False) -> None:
    """:func:`seal` the request of ``response`` and of every response in its history, and
    the next hop requests prepared for a redirect it did not follow (``response.next``)."""
    for r in (*response.history, response):
        seal(r.request, drop_body=drop_body)
        following = getattr(r, "_next", None)
        if isinstance(following, requests.PreparedRequest):
            seal(following, drop_body=drop_body)


@dataclass(frozen=True)
class Answer:
    """A session call's answer as read off the wire: status, ``Retry-After`` and the decoded
    body (tokens already Secrets, or :class:`~session_fsm.models.Undecodable`)."""

    call: Call
    status: int
    retry_after: float | None
    body: Any

    def error(self, where: str = "") -> APIError:
        """The typed error of this non-2xx answer, by status and fault code. A body that is no
        JSON at all (a gateway's HTML page) is no fault; one nested too deeply, or a fault of
        the wrong shape, raises MalformedAnswer."""
        body = self.body
        if isinstance(body, Undecodable):
            if body.reason != NOT_JSON:
                unwrap(body, status=self.status, call=self.call.value)  # raises
            body = None
        fault = Fault.parse(body, status=self.status, call=self.call.value)
        message = fault.message if fault else ""
        if fault is None and isinstance(body, dict) and isinstance(body.get("message"), str):
            message = body["message"]  # a gateway's bare {"message": ...}
        return error_for(
            self.call,
            self.status,
            fault.code if fault else None,
            fault.description if fault else "",
            self.retry_after,
            where=where or " ".join(_SESSION_CALLS.get(self.call, ("", ""))).strip(),
            fault_message=message,
        )

    def payload(self, required: str | None) -> Any:
        """The unwrapped Success payload of a 2xx answer; the typed error of any other."""
        if not 200 <= self.status < 300:
            raise self.error()
        return unwrap(self.body, status=self.status, required=required, call=self.call.value)


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


#: Each session call's method and path, as the API documents them.
_SESSION_CALLS = {
    Call.INIT: c.SESSION_INIT,
    Call.LOGIN: c.LOGIN_USERID,
    Call.TWO_FA: c.TWO_FA_ACCESSCODE,
    Call.LOGOUT: c.SESSION_LOGOUT,
}


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


def _too_large(call: Call, status: int, cap: int) -> MalformedAnswer:
    return MalformedAnswer(
        f"{call.value} answer: field 'body' is larger than max_answer_bytes={cap}",
        status=status,
        field="body",
        call=call.value,
    )


class CappedBody:
    """An answer's body read in chunks by any transport, refused past ``cap`` bytes (a
    ``Content-Length`` over it refuses it before any is read): :attr:`over` says so."""

    __slots__ = ("cap", "data", "over")

    def __init__(self, cap: int, content_length: str | None) -> None:
        self.cap = cap
        self.data = bytearray()
        length = content_length or ""
        self.over = length.isdigit() and int(length) > cap

    def add(self, chunk: bytes) -> bool:
        """Take ``chunk``; False once the body is over the cap (stop reading)."""
        self.data += chunk
        if len(self.data) > self.cap:
            self.over = True
        return not self.over

    def take(self) -> bytes:
        """The body read (emptied here: a part of a body may hold a token)."""
        data = bytes(self.data)
        self.data = bytearray()
        return data


def _retry_after(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return Retry.parse_retry_after(Retry(), header)
    except Exception:  # an unparsable header is not worth failing over
        return None


def answer(call: Call, response: requests.Response, max_bytes: int) -> Answer:
    """The :class:`Answer` of an already read ``response`` (a trading call's): a body over
    ``max_bytes`` is not decoded (MalformedAnswer); one that is not JSON decodes to
    :class:`~session_fsm.models.Undecodable`, which a non-2xx answer treats as no fault."""
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
    return Answer(call, status, _retry_after(retry_after), decode_answer(content))


T = TypeVar("T")


@dataclass(frozen=True)
class SessionCall(Generic[T]):
    """One of the four session calls, ready to send: what every transport sends for it and
    how its answer becomes a typed result (:meth:`result`) or a typed error."""

    call: Call
    method: str
    path: str
    headers: dict[str, str]
    auth: CallAuth
    required: str | None
    parse: Callable[..., T]

    def result(self, a: Answer) -> T:
        """The typed result of the answer ``a``; the typed error of a non-2xx one."""
        return self.parse(a.payload(self.required), status=a.status)


def init_call(who: Identity) -> SessionCall[ResSessionInit]:
    """GET session/init: headers userid, consumerKey, ip, appId."""
    method, path = c.SESSION_INIT
    headers = {**who.plain_headers(), c.H_USERID: who.userid}
    return SessionCall(
        Call.INIT, method, path, headers, CallAuth(who), None, ResSessionInit.parse
    )


def login_call(who: Identity, body: UserCredentials) -> SessionCall[ResLogin]:
    """POST session/login/userid with ``{"userid", "password"}``: the one-time token."""
    method, path = c.LOGIN_USERID
    auth = CallAuth(who, body=body.fields())
    return SessionCall(
        Call.LOGIN, method, path, who.plain_headers(), auth, "oneTimeToken", ResLogin.parse
    )


def two_fa_call(
    who: Identity, one_time_token: Secret, body: UserDetails
) -> SessionCall[ResSession2FA]:
    """POST session/2FA/accesscode with the OTT header: the session token."""
    method, path = c.TWO_FA_ACCESSCODE
    auth = CallAuth(who, {c.H_ONE_TIME_TOKEN: one_time_token}, body.fields())
    return SessionCall(
        Call.TWO_FA, method, path, who.plain_headers(), auth, "sessionToken", ResSession2FA.parse
    )


def logout_call(who: Identity, session_token: Secret) -> SessionCall[ResLogout]:
    """DELETE session/logout: invalidates ``session_token`` on the server."""
    method, path = c.SESSION_LOGOUT
    headers = {**who.plain_headers(), c.H_USERID: who.userid}
    auth = CallAuth(who, {c.H_SESSION_TOKEN: session_token})
    return SessionCall(Call.LOGOUT, method, path, headers, auth, None, ResLogout.parse)


def trading_call(
    who: Identity, session_token: Secret, headers: Mapping[str, str] | None = None
) -> tuple[dict[str, str], CallAuth]:
    """The plain headers (``headers`` over the identity's) and the auth of an authorised
    trading request, for any transport."""
    merged = who.plain_headers()
    if headers:
        merged.update(headers)
    return merged, CallAuth(who, {c.H_SESSION_TOKEN: session_token})
