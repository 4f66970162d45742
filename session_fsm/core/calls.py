"""The four session calls as data: who calls (:class:`Identity`), what each call sends
(:class:`SessionCall`: method, path, plain headers, secret headers and body fields) and how its
answer is read (:class:`Answer`: status, ``Retry-After`` and decoded body, mapped to a payload
or a typed error). No I/O: the sync and async wires send what :meth:`SessionCall.shape` gives
and hand back an :class:`Answer`; the core reads it with :func:`result_of`.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import contract as c
from ..errors import APIError, Call, MalformedAnswer, error_for
from ..frozen import quick_init
from ..models import (
    NOT_JSON,
    Fault,
    ResLogin,
    ResLogout,
    ResSession2FA,
    ResSessionInit,
    Undecodable,
    UserCredentials,
    UserDetails,
    unwrap,
)
from ..secret import Secret


@dataclass(frozen=True)
class Identity:
    """Who is calling: the non-secret identifiers and the gateway (Bearer) token."""

    userid: str
    consumer_key: str
    ip: str
    app_id: str
    access_token: Secret

    def plain_headers(self) -> dict[str, str]:
        """The non-secret headers every call sends (the Bearer is written in at send time)."""
        return {
            "Accept": "application/json",
            c.H_CONSUMER_KEY: self.consumer_key,
            c.H_IP: self.ip,
            c.H_APP_ID: self.app_id,
        }

    def base_headers(self) -> dict[str, str]:
        """Headers every call sends (reveals the Bearer token: wire use only)."""
        headers = {c.H_AUTHORIZATION: f"Bearer {self.access_token.reveal()}"}
        headers.update(self.plain_headers())
        return headers

    def trading_headers(self, session_token: Secret) -> dict[str, str]:
        """Headers of an authorised trading call (reveals the tokens: wire use only)."""
        headers = self.base_headers()
        headers[c.H_SESSION_TOKEN] = session_token.reveal()
        return headers


#: Each session call's method and path, as the API documents them.
SESSION_CALLS: Mapping[Call, tuple[str, str]] = {
    Call.INIT: c.SESSION_INIT,
    Call.LOGIN: c.LOGIN_USERID,
    Call.TWO_FA: c.TWO_FA_ACCESSCODE,
    Call.LOGOUT: c.SESSION_LOGOUT,
}


@quick_init
@dataclass(frozen=True, slots=True)
class SessionCall:
    """One session call to make: the effect a flow yields; a driver answers with an
    :class:`Answer` (or raises a transport error into the flow)."""

    call: Call
    host: str
    who: Identity
    body: UserCredentials | UserDetails | None = None
    token: Secret | None = None  # the one-time token (2FA) or the session token (logout)

    def __repr__(self) -> str:
        return f"SessionCall({self.call.value})"

    def shape(self) -> tuple[str, str, dict[str, str], dict[str, Secret], dict[str, Any] | None]:
        """(method, path, plain headers, secret headers, JSON body fields) of the call; the
        secrets stay Secrets until the wire writes them into the request."""
        method, path = SESSION_CALLS[self.call]
        plain = self.who.plain_headers()
        if self.call in (Call.INIT, Call.LOGOUT):
            plain[c.H_USERID] = self.who.userid
        secret: dict[str, Secret] = {}
        if self.token is not None:
            name = c.H_ONE_TIME_TOKEN if self.call is Call.TWO_FA else c.H_SESSION_TOKEN
            secret[name] = self.token
        body = None if self.body is None else dict(self.body.fields())
        return method, path, plain, secret, body


def retry_after(header: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); None when
    absent or unparsable (not worth failing over)."""
    if not header:
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    wait = when - time.time()
    return max(0.0, wait) if math.isfinite(wait) else None


def too_large(call: Call, status: int, cap: int) -> MalformedAnswer:
    """The error of an answer body over ``max_answer_bytes`` (never decoded)."""
    return MalformedAnswer(
        f"{call.value} answer: field 'body' is larger than max_answer_bytes={cap}",
        status=status,
        field="body",
        call=call.value,
    )


@quick_init
@dataclass(frozen=True)
class Answer:
    """An answer as read off the wire: status, ``Retry-After`` and the decoded body (tokens
    already Secrets, or :class:`~session_fsm.models.Undecodable`)."""

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
            where=where or " ".join(SESSION_CALLS.get(self.call, ("", ""))).strip(),
            fault_message=message,
        )

    def payload(self, required: str | None) -> Any:
        """The unwrapped Success payload of a 2xx answer; the typed error of any other."""
        if not 200 <= self.status < 300:
            raise self.error()
        # (``_value_``, not ``.value``: Enum's property is a Python call)
        return unwrap(self.body, status=self.status, required=required, call=self.call._value_)


def result_of(answer: Answer) -> Any:
    """The typed result of a session call's answer (``ResSessionInit``, ``ResLogin``, ...), or
    its typed error."""
    call = answer.call
    if call is Call.INIT:
        return ResSessionInit.parse(answer.payload(None), status=answer.status)
    if call is Call.LOGIN:
        return ResLogin.parse(answer.payload("oneTimeToken"), status=answer.status)
    if call is Call.TWO_FA:
        return ResSession2FA.parse(answer.payload("sessionToken"), status=answer.status)
    if call is Call.LOGOUT:
        return ResLogout.parse(answer.payload(None), status=answer.status)
    raise ValueError(f"{call.value} is not a session call")
