"""The HTTP side of auto re-login: a ``requests`` auth whose response hook handles 401s.

Like requests' own ``HTTPDigestAuth``, :class:`SessionAuth` decorates the prepared request and
registers a response hook; on an expired session (401, or a 403 "Invalid session") the hook
renews the session (single flight, in :meth:`KSSession.renew
<session_fsm.session.KSSession.renew>`), on a rejected Bearer token (900901) it asks the
provider for a new one (single flight per Bearer generation), and it sends the request once
more on the same connection adapter. It never raises: when the session cannot be renewed the
original answer is returned. Any ``requests`` code gets this by passing ``auth=session.auth``.

The replay rule (see :func:`replayable`): after a re-login a request is sent again only if its
body can be sent twice: no body, bytes or str (``json=`` bodies are bytes once prepared).
Idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS) replay; a POST (or PATCH) replays too,
because the server refused it with a 401 before acting on it, unless ``replay_posts=False``.
A streamed body (a file or generator) is never replayed: the caller gets ``NotReplayable``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase

from .answers import Identity, seal_response, transport_error
from .errors import (
    APIError,
    Call,
    GatewayAuthError,
    InvalidTransition,
    KSError,
    MalformedAnswer,
    NotReplayable,
    SessionExpired,
    WrongDomain,
)
from .logs import emit
from .retry import IDEMPOTENT_METHODS
from .snapshot import Snapshot
from .table import State
from .wire import Wire, check_url, redirect_guard

if TYPE_CHECKING:
    from .config import SessionConfig
    from .session import KSSession


def replayable(request: requests.PreparedRequest, replay_posts: bool = True) -> bool:
    """Whether ``request`` may be sent again after a re-login (the documented rule above)."""
    if not (request.body is None or isinstance(request.body, (bytes, str))):
        return False
    return (request.method or "GET").upper() in IDEMPOTENT_METHODS or replay_posts


class _Exchange:
    """One request's view of the session: the snapshot and Bearer generation it was sent with,
    and the error the hook met (read by :func:`send`; plain ``requests`` callers get the
    response and the session's records)."""

    __slots__ = ("bearer", "error", "snap")

    def __init__(self, snap: Snapshot, bearer: int) -> None:
        self.snap = snap
        self.bearer = bearer
        self.error: KSError | None = None


class SessionAuth(AuthBase):
    """Adds the session's headers; on an expired session renews it and replays once.

    The response hook never raises (requests' auth contract, as with ``HTTPDigestAuth``): it
    returns the replay's answer, or the original one when the session could not be renewed.
    """

    def __init__(self, session: KSSession, snap: Snapshot | None = None) -> None:
        self.session = session
        self._snap = snap  # bound by session.request: the one snapshot of that request
        self._exchange: _Exchange | None = None  # a bound auth's exchange, once sent

    def __repr__(self) -> str:
        return f"SessionAuth(session={self.session.session_id})"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        snap = self._snap or self.session.ready()
        bearer, who = self.session._gateway()
        ex = _Exchange(snap, bearer)
        _apply(r, who, snap, self.session)
        check = functools.partial(check_url, config=self.session.wire.config)
        guard = redirect_guard(check, refuse=False)  # a redirect requests follows: no tokens
        r.register_hook("response", guard)  # type: ignore[no-untyped-call]
        if self._snap is not None:
            self._exchange = ex
        r.register_hook(  # type: ignore[no-untyped-call]
            "response", functools.partial(self._on_response, ex)
        )
        return r

    def _on_response(
        self, ex: _Exchange, response: requests.Response, **kwargs: Any
    ) -> requests.Response:
        if response.status_code not in (401, 403):
            return response
        session = self.session
        seal_response(response)  # from here on, anything raised leaves only masked headers behind
        try:
            err = Wire.error_of(
                Call.TRADING,
                response,
                session.wire.config.max_answer_bytes,
                where=_call_name(response, ex.snap),
            )
        except MalformedAnswer as exc:  # a fault body of the wrong shape: recorded, answer kept
            session.answer_refused(exc)
            ex.error = exc
            return response
        if not isinstance(err, (GatewayAuthError, SessionExpired)):
            return response
        try:
            return self._recover(ex, response, err, kwargs)
        except KSError as exc:  # the session could not be renewed: the answer goes back as is
            ex.error = exc
            sent = response.request
            emit(self.session._log, "warning", "request_not_renewed",
                 session_id=self.session.session_id, method=sent.method,
                 path=urlsplit(sent.url or "").path, error=type(exc).__name__)  # fmt: skip
            return response

    def _recover(
        self, ex: _Exchange, response: requests.Response, err: APIError, kwargs: dict[str, Any]
    ) -> requests.Response:
        session = self.session
        _release(response)
        if isinstance(err, GatewayAuthError):
            try:
                refreshed = session.refresh_bearer(ex.bearer)
            except GatewayAuthError:
                session.gateway_rejected(err, ex.snap)
                raise
            if not refreshed:
                session.gateway_rejected(err, ex.snap)
                raise err
            _check_replayable(response, err, "gateway token refreshed", session.config)
            now = session.snapshot()  # a newer session, if another thread renewed meanwhile
            snap = now if now.state is State.AUTHENTICATED else ex.snap
            return self._replay(response, snap, kwargs, "gateway token refreshed", ex.snap)
        fresh = session.renew(
            ex.snap.generation, "expired", cause=err, call=_call_name(response, ex.snap)
        )
        _check_replayable(response, err, "session renewed", session.config)
        return self._replay(response, fresh, kwargs, "session renewed", ex.snap)

    def _replay(
        self,
        first: requests.Response,
        snap: Snapshot,
        kwargs: dict[str, Any],
        why: str,
        sent_with: Snapshot,
    ) -> requests.Response:
        session = self.session
        prep = first.request.copy()
        if prep.url and sent_with.host != snap.host:
            prep.url = snap.host + prep.url[len(sent_with.host) :]
        bearer, who = session._gateway()
        _apply(prep, who, snap, session)
        emit(session._log, "info", "request_replayed", session_id=session.session_id,
             method=prep.method, path=urlsplit(prep.url or "").path, reason=why,
             generation=snap.generation)  # fmt: skip
        if first.connection is None:  # pragma: no cover - requests always sets it
            raise NotReplayable("the answer has no connection to send the replay on")
        try:
            again: requests.Response = first.connection.send(prep, **kwargs)
        except requests.RequestException as exc:
            raise transport_error(
                prep.method or "GET", prep.url or "", exc, session.wire.config
            ) from None
        again.history.append(first)
        again.request = prep
        if again.status_code == 401:
            err = Wire.error_of(
                Call.TRADING,
                again,
                session.wire.config.max_answer_bytes,
                where=_call_name(again, snap),
            )
            # Same edge as on a first answer, unless another thread replaced the token since.
            if isinstance(err, GatewayAuthError) and bearer == session._gateway()[0]:
                session.gateway_rejected(err, snap)
        return again


def _call_name(response: requests.Response, sent_with: Snapshot) -> str:
    """``"GET /reports/1.0/orders"``: the request's method and path below the session's host
    (no query string: it may carry anything)."""
    request = response.request
    url = request.url or ""
    path = url[len(sent_with.host) :] if url.startswith(sent_with.host) else urlsplit(url).path
    return f"{request.method} {path.partition('?')[0]}"


def _check_replayable(
    response: requests.Response, err: APIError, done: str, config: SessionConfig
) -> None:
    request = response.request
    if replayable(request, config.replay_posts):
        return
    streamed = not (request.body is None or isinstance(request.body, (bytes, str)))
    why = "its body is a stream" if streamed else "replay_posts is off"
    raise NotReplayable(
        f"{done}, but the {request.method} was not sent again ({why})",
        status=response.status_code,
        fault_code=err.fault_code,
    )


def _apply(r: requests.PreparedRequest, who: Identity, snap: Snapshot, session: KSSession) -> None:
    check_url(r.url or "", session.wire.config)  # the prepared URL: what is sent
    token = snap.session_token
    if token is None:  # pragma: no cover - ready() returns Authenticated snapshots only
        raise InvalidTransition(
            "requests need Authenticated: call connect() first",
            state=snap.state.value,
            trigger="request",
        )
    r.headers.update(Wire.trading_headers(who, token))


def _where(method: str, path: str) -> str:
    """``"GET /reports/1.0/orders"`` for a path below the host (an absolute URL: its path);
    never the query string."""
    if "://" in path:
        path = urlsplit(path).path
    return f"{method.upper()} {path.partition('?')[0].partition('#')[0]}"


def _release(response: requests.Response) -> None:
    _ = response.content  # read the body so the connection returns to the pool
    response.close()


def send(session: KSSession, method: str, path: str, **kwargs: Any) -> requests.Response:
    """``session.request``: one snapshot for host and tokens; typed error on non-2xx, with the
    response on it as ``.response``."""
    if "://" in path:
        check_url(path, session.wire.config)  # the host urllib3 would connect to
        snap = session.ready()
        url = path
    else:
        snap = session.ready()
        url = snap.host + path
    auth = SessionAuth(session, snap)
    response = session.wire.send(method, url, auth=auth, **kwargs)
    ex = auth._exchange
    err: KSError | None = ex.error if ex is not None and ex.error is not None else None
    if err is None:
        if 200 <= response.status_code < 300:
            return response
        seal_response(response)  # the error carries the response: never our tokens with it
        try:
            err = Wire.error_of(
                Call.TRADING,
                response,
                session.wire.config.max_answer_bytes,
                where=_where(method, path),
            )
        except MalformedAnswer as exc:
            session.answer_refused(exc)
            raise
        if err is None:  # pragma: no cover - non-2xx always maps to an error
            return response
        if isinstance(err, WrongDomain):  # the user moved host: re-init on the next request
            session.gateway_rejected(err)
    seal_response(response)
    if isinstance(err, APIError) and err.response is None:
        err.response = response
    raise err
