"""The one exception hierarchy of session_fsm, and the mapping from an HTTP answer to it.

Every error carries ``status`` (HTTP status, ``None`` when no answer came) and ``fault_code``
(the KS fault code, ``None`` when there was none), and its message ends with what to do next.
No message ever contains a secret: only names, statuses, codes, host names and fingerprints.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NoReturn

from . import contract


class Call(str, Enum):
    """Which kind of call an answer belongs to; the same status means different things."""

    INIT = "session_init"
    LOGIN = "login_with_user_id"
    TWO_FA = "generate_session2_fa"
    LOGOUT = "session_logout"
    TRADING = "trading"


class KSError(Exception):
    """Base class of every error raised by session_fsm."""

    #: What the caller should do next; appended to the message.
    hint: str = ""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        fault_code: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.fault_code = fault_code
        if hint is not None:
            self.hint = hint
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.message]
        tags = []
        if self.status is not None:
            tags.append(f"HTTP {self.status}")
        if self.fault_code is not None:
            tags.append(f"fault {self.fault_code}")
        if tags:
            parts[0] += f" ({', '.join(tags)})"
        if self.hint:
            parts.append(self.hint)
        return ": ".join(parts) if len(parts) > 1 else parts[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._render()!r})"

    def unchained(self) -> NoReturn:
        """Raise this error with no ``__context__``, from inside the ``except`` clause (or the
        ``__exit__``) of another error: ``raise ... from None`` only hides that error, whose
        traceback's frames keep their locals (a record being written with its session token,
        the values sent to Redis, a provider's secret), still reachable from this one by a
        debugger or an error reporter."""
        try:
            raise self from None
        except KSError:
            self.__context__ = None
            raise


# --- local refusals: nothing was sent -------------------------------------------------------


class InvalidTransition(KSError):
    """A trigger was called in a state whose table has no edge for it. Nothing was sent."""

    def __init__(self, message: str, *, state: str, trigger: str, hint: str = "") -> None:
        self.state = state
        self.trigger = trigger
        super().__init__(message, hint=hint)


class GuardFailed(InvalidTransition):
    """The edge exists but one of its guards is false (no password, stale one-time token...)."""

    def __init__(
        self, message: str, *, state: str, trigger: str, guard: str, hint: str = ""
    ) -> None:
        self.guard = guard
        super().__init__(message, state=state, trigger=trigger, hint=hint)


class ConfigurationError(KSError):
    """A setting is missing or invalid; the message names it (and, where it helps, a hint
    says how to write it)."""


class UnsafeRedirect(KSError):
    """A URL (a session_init redirect, the configured host, an absolute request URL) is not
    one credentials may go to; nothing was sent to it. ``host`` never holds user info."""

    hint = "check the host, or add its domain to allowed_domains if you trust it"

    def __init__(
        self, host: str, reason: str = "not on the allow-list", hint: str | None = None
    ) -> None:
        from .masking import mask_url

        self.host = mask_url(host)  # a host may carry userinfo (``u:pw@h``): never shown
        self.reason = reason
        super().__init__(f"refusing to send credentials to {self.host!r}: {reason}", hint=hint)


class ReloginNeedsHuman(KSError):
    """An automatic re-login needs a secret that only a person can give again."""

    hint = "supply a fresh access code (or a TOTP secret) and call connect()"


class EventLoopUnavailable(KSError):
    """An :class:`~session_fsm.AsyncKSSession`'s work (a re-login, a first read of its store)
    was asked for from synchronous code (``httpx.Client(auth=session.auth)``) where it cannot
    run: on the session's own event loop thread (waiting there would stop the loop the work
    needs), or when the session has no running event loop (never awaited yet, or its loop has
    ended). That work is done on the session's loop; nothing was sent for it."""

    hint = (
        "use httpx.AsyncClient on the session's event loop, call httpx.Client from another "
        "thread while that loop runs, or use a KSSession in threaded code"
    )


# --- transport ---------------------------------------------------------------------------------


class TransportError(KSError):
    """No usable HTTP answer arrived. The message names the call, ``host:port`` and the cause
    (connection refused, DNS lookup failed, TLS handshake failed, timed out, dropped)."""

    hint = "check the network; the call may be retried"


class NetworkError(TransportError):
    """The connection failed or was dropped before an answer."""


class RequestTimeout(TransportError):
    """Connecting or reading took longer than the configured timeout."""

    hint = "raise timeout= if the API is slow, or retry later"


class MalformedAnswer(KSError):
    """The answer was not JSON, was too large or too deeply nested, had no envelope, or had a
    field missing or of the wrong type. ``call`` and ``field`` name where (never the value)."""

    hint = "the API answered in an unexpected shape; retry later or report it"

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        field: str | None = None,
        call: str | None = None,
    ) -> None:
        self.field = field
        self.call = call
        super().__init__(message, status=status)


# --- answers from the API ----------------------------------------------------------------------


class APIError(KSError):
    """The API answered with a non-2xx status (and usually a fault envelope).

    Made by :func:`error_for`, the message names the call as ``METHOD /path`` (``where``) and
    ends with the server's own explanation (``explanation``: its fault message and
    description, shortened, printable, never a token-like string), then what to do.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        fault_code: int | None = None,
        description: str = "",
        retry_after: float | None = None,
        hint: str | None = None,
        where: str = "",
        explanation: str = "",
    ) -> None:
        self.description = description
        self.retry_after = retry_after
        #: The call as ``METHOD /path`` ("" when not known).
        self.where = where
        #: What the server said about the fault (made safe to show; "" when it said nothing).
        self.explanation = explanation
        #: The ``requests.Response`` when the error came from ``session.request`` (a trading
        #: call); ``None`` for the session calls. Its ``.request`` has the Authorization,
        #: sessionToken and oneTimeToken headers masked: the error never carries a token.
        self.response: Any = None
        super().__init__(message, status=status, fault_code=fault_code, hint=hint)

    def _render(self) -> str:
        if not self.where:
            return super()._render()
        tags = [] if self.status is None else [f"HTTP {self.status}"]
        if self.fault_code is not None:
            tags.append(f"fault {self.fault_code}")
        text = f"{self.message} -> {', '.join(tags)}" if tags else self.message
        if self.explanation:
            text += f": {self.explanation}"
        return f"{text}; {self.hint}" if self.hint else text


class BadRequest(APIError):
    """400: a header or body field was missing or invalid."""

    hint = "check consumer_key, ip, app_id and userid"


class AuthError(APIError):
    """401 family."""


class GatewayAuthError(AuthError):
    """The gateway (Bearer) token was rejected (fault 900901). Logging in again cannot help."""

    hint = "get a fresh access token from the API portal, or configure access_token_provider"


class SessionExpired(AuthError):
    """The trading session is no longer valid (fault 99999, or a bare 401 on a trading call)."""

    hint = "the session re-logs in by itself on the next call; call connect() to do it now"


class NotReplayable(SessionExpired):
    """The session was renewed, but the request could not be sent again (streamed body)."""

    hint = "send the request again yourself: its body was a stream that cannot be replayed"


class OneTimeTokenRejected(AuthError):
    """The one-time token was expired or wrong (fault 50001)."""

    hint = "call login() for a fresh one-time token, or connect()"


class LoginRejected(AuthError):
    """Wrong userid, password or access code."""

    hint = (
        "check the user id and password (Credentials(userid=..., password=...)) and the "
        "access code or TOTP secret (access_code=/totp_secret=)"
    )


class WrongDomain(APIError):
    """The user belongs to another API host (fault 999024)."""

    hint = "call connect(): the session re-initialises and follows the redirect"


class NotAuthorized(APIError):
    """The user may not use this platform (fault 999003)."""

    hint = "ask the broker to enable API access for this user"


class RateLimited(APIError):
    """429: too many requests. ``retry_after`` holds the server's wait in seconds, if given."""

    hint = "slow down; wait retry_after seconds"


class ServiceUnavailable(APIError):
    """500, 502, 503 or 504: the service or its gateway failed."""

    hint = "retry later"


class UnexpectedStatus(APIError):
    """Any other non-2xx status."""

    hint = "check the method and path against the KS Trade API reference"


#: The session calls in words, for messages.
_CALL_WORDS = {
    Call.INIT: "session init",
    Call.LOGIN: "login",
    Call.TWO_FA: "2FA (access code)",
    Call.LOGOUT: "logout",
}


def _says_invalid_session(*texts: str) -> bool:
    return any(contract.INVALID_SESSION_TEXT in t.lower() for t in texts)


def error_for(
    call: Call,
    status: int,
    fault_code: int | None,
    description: str = "",
    retry_after: float | None = None,
    message: str = "",
    *,
    where: str = "",
    fault_message: str = "",
) -> APIError:
    """Map one non-2xx answer of ``call`` to its typed error (no I/O, no secrets).

    ``where`` names the call (``"GET /reports/1.0/orders"``); ``fault_message`` (or
    ``message``, the same) and ``description`` are the server's fault texts, shown shortened and
    made safe (see :func:`session_fsm.explain.safe_text`). A trading call's 403 that says
    "Invalid session" is an expired session, like a 401 with fault 99999. A fault code of 0 is
    no fault code.
    """
    from .explain import safe_text, server_text

    fault_message = fault_message or message
    message = fault_message
    if fault_code == 0:  # the gateway's "no recognised code": say nothing rather than "fault 0"
        fault_code = None
    cls: type[APIError]
    if fault_code == contract.FAULT_GATEWAY_TOKEN:
        cls = GatewayAuthError
    elif fault_code == contract.FAULT_SESSION_EXPIRED:
        cls = SessionExpired
    elif fault_code == contract.FAULT_OTT_INVALID:
        cls = OneTimeTokenRejected
    elif fault_code == contract.FAULT_WRONG_DOMAIN:
        cls = WrongDomain
    elif fault_code == contract.FAULT_NOT_AUTHORIZED:
        cls = NotAuthorized
    elif status == 401:
        cls = {
            Call.LOGIN: LoginRejected,
            Call.TWO_FA: LoginRejected,
            Call.INIT: GatewayAuthError,
        }.get(call, SessionExpired)
    elif status == 403 and call is Call.TRADING and _says_invalid_session(message, description):
        cls = SessionExpired
    elif status == 400:
        cls = BadRequest
    elif status == 429:
        cls = RateLimited
    elif status in (500, 502, 503, 504):
        cls = ServiceUnavailable
    else:
        cls = UnexpectedStatus
    hint = None
    if cls is LoginRejected and call is Call.TWO_FA:  # the password was accepted already
        hint = "check the access code or TOTP secret (access_code=/totp_secret=)"
    words = _CALL_WORDS.get(call)
    if words is None:  # a trading call: its method and path say what it was
        message = where or "trading call"
    else:
        outcome = "rejected" if cls is LoginRejected else "failed"
        message = f"{words} {outcome}: {where}" if where else f"{words} {outcome}"
    return cls(
        message,
        status=status,
        fault_code=fault_code,
        description=safe_text(description),
        retry_after=retry_after,
        where=where or call.value,
        explanation=server_text(fault_message, description),
        hint=hint,
    )
