"""The HTTP side of auto re-login: a ``requests`` auth whose response hook handles 401s.

Like requests' own ``HTTPDigestAuth``, :class:`SessionAuth` decorates the prepared request and
registers a response hook; on a 401 the hook renews the session (single flight, in
:meth:`KSSession.renew <session_fsm.session.KSSession.renew>`) and sends the request once more
on the same connection adapter. Any ``requests`` code gets this by passing ``auth=session.auth``.

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

from .errors import (
    APIError,
    Call,
    GatewayAuthError,
    NotReplayable,
    SessionExpired,
    WrongDomain,
    error_for,
)
from .logs import emit
from .models import Fault
from .snapshot import Snapshot
from .wire import IDEMPOTENT_METHODS, Wire, check_url

if TYPE_CHECKING:
    from .session import KSSession


def replayable(request: requests.PreparedRequest, replay_posts: bool = True) -> bool:
    """Whether ``request`` may be sent again after a re-login (the documented rule above)."""
    if not (request.body is None or isinstance(request.body, (bytes, str))):
        return False
    return (request.method or "GET").upper() in IDEMPOTENT_METHODS or replay_posts


def _fault_code(response: requests.Response) -> int | None:
    try:
        fault = Fault.parse(response.json())
    except ValueError:
        return None
    return fault.code if fault else None


class SessionAuth(AuthBase):
    """Adds the session's headers; on a 401 renews the session and replays once."""

    def __init__(self, session: KSSession) -> None:
        self.session = session

    def __repr__(self) -> str:
        return f"SessionAuth(session={self.session.session_id})"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        snap = self.session.ready()
        self._apply(r, snap)
        r.register_hook(  # type: ignore[no-untyped-call]
            "response", functools.partial(self._on_response, snap)
        )
        return r

    def _apply(self, r: requests.PreparedRequest, snap: Snapshot) -> None:
        assert snap.session_token is not None  # ready() returns Authenticated snapshots
        check_url(r.url or "", self.session.wire.config)  # the prepared URL: what is sent
        r.headers.update(Wire.trading_headers(self.session.identity(), snap.session_token))

    def _on_response(
        self, sent_with: Snapshot, response: requests.Response, **kwargs: Any
    ) -> requests.Response:
        if response.status_code != 401:
            return response
        session = self.session
        err = error_for(
            Call.TRADING, 401, _fault_code(response), where=_call_name(response, sent_with)
        )
        if isinstance(err, GatewayAuthError):
            if not session.refresh_bearer():
                _release(response)
                session.gateway_rejected(err)
                raise err
            return self._replay(response, session.snapshot(), kwargs, "gateway token refreshed")
        if not isinstance(err, SessionExpired):
            return response
        _release(response)
        fresh = session.renew(
            sent_with.generation, "expired", cause=err, call=_call_name(response, sent_with)
        )
        if not replayable(response.request, session.config.replay_posts):
            raise NotReplayable(
                f"session renewed, but the {response.request.method} body is a stream and was "
                "not sent again",
                status=401,
                fault_code=err.fault_code,
            )
        return self._replay(response, fresh, kwargs, "session renewed", sent_with)

    def _replay(
        self,
        first: requests.Response,
        snap: Snapshot,
        kwargs: dict[str, Any],
        why: str,
        sent_with: Snapshot | None = None,
    ) -> requests.Response:
        prep = first.request.copy()
        if sent_with is not None and prep.url and sent_with.host != snap.host:
            prep.url = snap.host + prep.url[len(sent_with.host) :]
        self._apply(prep, snap)
        emit(self.session._log, "info", "request_replayed", session_id=self.session.session_id,
             method=prep.method, path=urlsplit(prep.url or "").path, reason=why,
             generation=snap.generation)  # fmt: skip
        assert first.connection is not None
        again: requests.Response = first.connection.send(prep, **kwargs)
        again.history.append(first)
        again.request = prep
        if again.status_code == 401:
            _release(again)
            err = error_for(Call.TRADING, 401, _fault_code(again), where=_call_name(again, snap))
            if isinstance(err, (GatewayAuthError, WrongDomain)):
                self.session.gateway_rejected(err)  # same edge as on a first answer
            raise err
        return again


def _call_name(response: requests.Response, sent_with: Snapshot) -> str:
    """``"GET /reports/1.0/orders"``: the request's method and path below the session's host
    (no query string: it may carry anything)."""
    request = response.request
    url = request.url or ""
    path = url[len(sent_with.host) :] if url.startswith(sent_with.host) else urlsplit(url).path
    return f"{request.method} {path.partition('?')[0]}"


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
    """``session.request``: send through the session's auth; typed error on non-2xx."""
    if "://" in path:
        check_url(path, session.wire.config)  # the host urllib3 would connect to
        url = path
    else:
        url = session.ready().host + path
    response = session.wire.send(method, url, auth=session.auth, **kwargs)
    try:
        Wire.raise_for(Call.TRADING, response, _where(method, path))
    except APIError as exc:
        exc.response = response
        if isinstance(exc, WrongDomain):  # the user moved host: re-init on the next request
            session.gateway_rejected(exc)
        raise
    return response
