"""Trading requests over ``requests``: :func:`send_call` (``session.request``) and
:class:`SessionAuth` (``auth=session.auth`` for any ``requests`` code). Both run the core's
request flow (:mod:`session_fsm.core.relogin`); this module only sends.

Like requests' own ``HTTPDigestAuth``, :class:`SessionAuth` decorates the prepared request and
registers a response hook that, on an expired session or a rejected Bearer token, lets the
core renew and then sends the request once more on the same connection adapter. It never
raises: when the session cannot be renewed the original answer is returned.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase

from ..answers import seal_response, transport_error
from ..core import relogin
from ..core.effects import Flow, Reply, Send
from ..core.engine import SessionCore
from ..core.relogin import Outgoing, streamed_body, where
from ..core.snapshot import Snapshot
from ..errors import APIError, KSError, NotReplayable
from ..hosts import check_url as check_allowed
from ..hosts import refusal
from ..wire import check_url, redirect_guard
from .driver import Driver

if TYPE_CHECKING:
    from ..httpx_auth import FlowAuth
else:
    try:  # with httpx installed (the async extra), session.auth is an httpx.Auth too
        from ..httpx_auth import FlowAuth
    except ImportError:  # pragma: no cover - a threaded install without httpx
        FlowAuth = object

T = TypeVar("T")

def replayable(request: requests.PreparedRequest, replay_posts: bool = True) -> bool:
    """Whether ``request`` may be sent again after a re-login: its body can be sent twice (no
    body, bytes or str; ``json=`` bodies are bytes once prepared; never a file or generator)
    and its method is idempotent, or it is a POST/PATCH and ``replay_posts`` is on (the server
    refused it with a 401 before acting on it). The rule is the core's
    (:func:`session_fsm.core.relogin.replayable`)."""
    return relogin.replayable(request.method or "GET", streamed_body(request.body), replay_posts)


def send_call(
    core: SessionCore, driver: Driver, method: str, path: str, kwargs: dict[str, Any]
) -> requests.Response:
    """``session.request``: one snapshot for host and tokens; the typed error of a non-2xx
    answer raised with the response on it as ``.response``."""
    if kwargs and kwargs.get("allow_redirects"):  # each hop, under the session's own allow-list too
        kwargs = _hops_checked(kwargs, core, driver)
    # The hot path: a usable snapshot and a 2xx answer are the request flow's first step and
    # its end (relogin.request: usable -> Send -> answered), taken here without making the
    # flow; any other answer continues in the flow exactly where the Send would have left it.
    absolute = "://" in path
    snap = core.usable() if not absolute else None
    first: Reply | None = None
    if snap is not None:
        assert snap.who is not None
        sent = driver.template(snap, snap.who).send(method, path, **kwargs)
        if 200 <= sent.status_code < 300:
            return sent
        first = Reply(sent.status_code, sent)
    wire = driver.wire
    if absolute:
        _check(path, core, driver)  # the host urllib3 would connect to

    def send(effect: Send) -> Reply:
        if absolute:  # an absolute URL: requests' own path
            token = effect.snap.session_token
            assert token is not None
            extra = kwargs.get("headers")
            rest = {k: v for k, v in kwargs.items() if k != "headers"}
            response = wire.trading_request(method, path, effect.who, token, extra, **rest)
        else:
            response = driver.template(effect.snap, effect.who).send(method, path, **kwargs)
        if effect.replay_of is not None:
            response.history.insert(0, effect.replay_of.handle)
        return Reply(response.status_code, response)

    streamed = streamed_body(kwargs.get("data")) or "files" in kwargs
    out = Outgoing(method.upper(), where(method, path), streamed, path)
    if first is not None and snap is not None:
        flow = relogin.answered(core, out, first, snap, map_errors=True)
    else:
        flow = relogin.request(core, out, map_errors=True)
    reply, err = driver.run(flow, send=send)
    response: requests.Response = reply.handle
    if err is None:
        return response
    seal_response(response)  # the error carries the response: never our tokens with it
    if isinstance(err, APIError) and err.response is None:
        err.response = response
    raise err


class SessionAuth(AuthBase, FlowAuth):
    """Adds the session's headers; on an expired session renews it and replays once.

    requests' auth contract holds, as with ``HTTPDigestAuth``: answers are returned, never
    raised. The response hook returns the replay's answer, or the original one when the
    session could not be renewed; when no usable session can be had before sending (past the
    hard deadline with the login failing, say), the request goes without the session's
    headers and the server's 401 is returned, the failure being in ``session.history`` and
    the log (``request_not_renewed``). Before the first ``connect()`` and after ``logout()``
    it raises InvalidTransition (a program's mistake), and a URL off the allow-list raises
    UnsafeRedirect (nothing is sent there).

    With httpx installed it is an ``httpx.Auth`` as well, with the same behaviour:
    ``httpx.Client(auth=session.auth)`` (and ``httpx.AsyncClient``, whose renewals run in a
    worker thread); see :mod:`session_fsm.httpx_auth`.
    """

    def __init__(self, core: SessionCore, driver: Driver, session: Any = None) -> None:
        self._core = core
        self._driver = driver
        self._session = session  # (kept alive with its auth: the core holds it weakly)

    def __repr__(self) -> str:
        return f"SessionAuth(session={self._core.session_id})"

    def run(self, flow: Flow[T]) -> T:
        """Run one of the core's flows for ``httpx.Client``."""
        return self._driver.run(flow)

    async def arun(self, flow: Flow[T]) -> T:
        """Run one of the core's flows for ``httpx.AsyncClient``, in a worker thread (the
        sync driver blocks)."""
        import asyncio

        return await asyncio.to_thread(self._driver.run, flow)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        core, driver = self._core, self._driver
        snap = core.usable()
        if snap is None:
            method, url = (r.method or "GET").upper(), r.url or ""
            _check(url, core, driver)  # first: a refused URL is worth no re-login
            out = Outgoing(method, where(method, url), streamed_body(r.body), url)
            snap = driver.run(relogin.ready_or_none(core, out))
            if snap is None:  # no usable session now (recorded, logged): the server answers
                return r  # the request without session headers
        _apply(r, snap, core, driver)
        r.register_hook(  # type: ignore[no-untyped-call]
            "response", redirect_guard(functools.partial(_check, core=core, driver=driver),
                                       refuse=False),  # a redirect requests follows: no tokens
        )  # fmt: skip
        r.register_hook(  # type: ignore[no-untyped-call]
            "response", functools.partial(self._on_response, snap)
        )
        return r

    def _on_response(
        self, snap: Snapshot, response: requests.Response, **kwargs: Any
    ) -> requests.Response:
        if response.status_code not in (401, 403):
            return response
        if refusal(response.url or "", *self._core.allowed) is not None:
            return response  # a redirect's hop off the list got no token: its 401 says nothing
        request = response.request
        method = (request.method or "GET").upper()
        out = Outgoing(
            method,
            f"{method} {_where_sent(request.url or '', snap)}",
            streamed_body(request.body),
        )

        def replay(effect: Send) -> Reply:
            first: requests.Response = effect.replay_of.handle  # type: ignore[union-attr]
            prep = first.request.copy()
            if prep.url and snap.host != effect.snap.host and prep.url.startswith(snap.host):
                prep.url = effect.snap.host + prep.url[len(snap.host) :]
            _apply(prep, effect.snap, self._core, self._driver, effect)
            if first.connection is None:  # pragma: no cover - requests always sets it
                raise NotReplayable("the answer has no connection to send the replay on")
            try:
                again: requests.Response = first.connection.send(prep, **kwargs)
            except requests.RequestException as exc:
                raise transport_error(
                    prep.method or "GET", prep.url or "", exc, self._driver.wire.config
                ) from None
            again.history.append(first)
            again.request = prep
            return Reply(again.status_code, again)

        flow = relogin.answered(self._core, out, Reply(response.status_code, response), snap,
                                map_errors=False)  # fmt: skip
        try:
            reply, _err = self._driver.run(flow, send=replay)
        except KSError:  # pragma: no cover - the flow returns its errors
            return response
        final: requests.Response = reply.handle
        return final


def _check(url: str, core: SessionCore, driver: Driver) -> None:
    """UnsafeRedirect unless ``url`` may receive the session's tokens: the session's own
    allow-list (a session on a real host never sends to loopback, whatever the wire's
    ``allow_loopback`` says) and its wire's (which may have been narrowed since)."""
    check_allowed(url, *core.allowed)
    check_url(url, driver.wire.config)


def _hops_checked(kwargs: dict[str, Any], core: SessionCore, driver: Driver) -> dict[str, Any]:
    """``kwargs`` with a response hook that refuses a redirect hop off the session's
    allow-list before requests sends it (the wire's own hook checks the wire's list only)."""
    hooks = dict(kwargs.get("hooks") or {})
    theirs = hooks.get("response") or []
    theirs = [theirs] if callable(theirs) else list(theirs)
    guard = redirect_guard(functools.partial(_check, core=core, driver=driver))
    hooks["response"] = [guard, *theirs]
    return {**kwargs, "hooks": hooks}


def _apply(
    r: requests.PreparedRequest, snap: Snapshot, core: SessionCore, driver: Driver,
    effect: Send | None = None,
) -> None:  # fmt: skip
    _check(r.url or "", core, driver)  # the prepared URL: what is sent
    who = effect.who if effect is not None else snap.who
    token = snap.session_token
    assert who is not None and token is not None  # ready() gives Authenticated snapshots
    r.headers.update(who.trading_headers(token))


def _where_sent(url: str, sent_with: Snapshot) -> str:
    """``"GET /reports/1.0/orders"``'s path part: the URL below the session's host."""
    path = url[len(sent_with.host) :] if url.startswith(sent_with.host) else urlsplit(url).path
    return path.partition("?")[0]
