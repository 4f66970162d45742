"""AsyncKSSession: the session for asyncio bots. The same core as :class:`~session_fsm.KSSession`
(every decision, the table, the snapshot, re-login, refresh, replay), run by the async driver
(:mod:`session_fsm.aio.driver`) over :class:`~session_fsm.aio.wire.AsyncWire` and an async
token store. The readers (``state``, ``snapshot()``, ``history``, ``diagram()``) are the same
synchronous ones; everything that talks to the server is awaited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import contract, validation
from ..core import connect as flows
from ..core import gateway, relogin
from ..core.cooldown import reset_cooldown
from ..core.effects import Flow, Reply, Send
from ..core.engine import Callback, adopt, ensure_loaded
from ..core.relogin import Outgoing, streamed_body, where
from ..core.snapshot import Snapshot
from ..core.view import SessionView
from ..credentials import Credentials
from ..errors import APIError
from ..hosts import check_url as check_allowed
from ..stores import StoredSession, TokenStore
from ..table import State
from ..wire import check_url
from .driver import AsyncDriver
from .response import AsyncResponse
from .stores import AsyncTokenStore, open_async_store
from .template import TradingTemplate
from .wire import AsyncWire

if TYPE_CHECKING:
    from .heartbeat import AsyncHeartbeat, AsyncWaiter

#: Keyword arguments ``AsyncKSSession.request`` passes on to the wire.
REQUEST_KEYWORDS = frozenset({"headers", "params", "json", "data"})


class AsyncKSSession(SessionView):
    """One trading session with the KS Trade API, for asyncio programs.

    ``AsyncKSSession(credentials, host=..., store=..., **options)``: the constructor arguments
    and options of :class:`~session_fsm.KSSession`; ``wire`` is an
    :class:`~session_fsm.aio.wire.AsyncWire` and ``store`` a store spec, an async store or a
    sync store (run in worker threads). No I/O until a coroutine is awaited. As an async
    context manager it closes its connections on exit (logging out first with
    ``logout_on_exit=True``).
    """

    _auth: Any = None
    _heartbeat: AsyncHeartbeat | None = None
    #: The hot path's request template of the newest (host, session token, identity).
    _template: TradingTemplate | None = None

    def __init__(
        self,
        credentials: Credentials,
        host: str = contract.PRODUCTION_HOST,
        *,
        wire: AsyncWire | None = None,
        store: str | TokenStore | AsyncTokenStore | None = None,
        clock: Callable[[], float] = time.time,
        logger: Any = None,
        on_transition: Callback | list[Callback] | None = None,
        heartbeat_waiter: AsyncWaiter | None = None,
        **options: Any,
    ) -> None:
        if wire is not None:
            validation.instance("wire", wire, AsyncWire)
        wire_config = wire.config if wire is not None else None
        config = self._configure(
            credentials, host, wire_config, options, clock=clock, logger=logger,
            on_transition=on_transition,
        )  # fmt: skip
        self._wire = wire or AsyncWire(config.wire_config())
        self._store = open_async_store(store)
        self._driver = AsyncDriver(self._wire, self._store)
        heartbeat = config.heartbeat
        if heartbeat is not None:
            from .heartbeat import AsyncHeartbeat

            self._heartbeat = AsyncHeartbeat(self, heartbeat, waiter=heartbeat_waiter)
            self._heartbeat.ensure()  # now if a loop runs, else at the first awaited call

    async def _run(self, flow: Flow[Any]) -> Any:
        if self._heartbeat is not None:
            self._heartbeat.ensure()
        return await self._driver.run(flow)

    @property
    def wire(self) -> AsyncWire:
        """The transport (shareable between the sessions of one event loop)."""
        return self._wire

    @property
    def store(self) -> AsyncTokenStore:
        """The token store."""
        return self._store

    @property
    def renewal_waiters(self) -> int:
        """How many tasks are waiting now for this session's re-login to finish."""
        return len(self._driver.waiting)

    @property
    def heartbeat(self) -> AsyncHeartbeat | None:
        """The heartbeat task's keeper (``heartbeat=SECONDS``), or None when off."""
        return self._heartbeat

    # --- triggers ------------------------------------------------------------------------------

    async def init(self) -> None:
        """Uninitialised/LoggedOut -> Initialised: session_init, following an allowed redirect."""
        await self._run(flows.trigger(self._core, "init"))

    async def login(self) -> None:
        """Initialised/OTT-issued -> OTT-issued: login_with_user_id for a one-time token."""
        await self._run(flows.trigger(self._core, "login"))

    async def authenticate(self) -> None:
        """OTT-issued -> Authenticated: generate_session2_fa for the session token."""
        await self._run(flows.trigger(self._core, "authenticate"))

    async def logout(self) -> None:
        """Authenticated -> LoggedOut: session_logout; tokens are forgotten even if it fails.
        A session that is not logged in is left as it is (the attempt is recorded). Stops the
        heartbeat first."""
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        await self._run(flows.logout(self._core))

    async def connect(self) -> Snapshot:
        """Walk the table's shortest path to Authenticated (see :meth:`KSSession.connect
        <session_fsm.KSSession.connect>`); returns the snapshot."""
        snap: Snapshot = await self._run(flows.connect(self._core))
        return snap

    async def resume(self) -> bool:
        """Resume a session saved in the store (no HTTP call); True if one was taken."""
        await self._run(flows.locked(self._core, ensure_loaded(self._core)))
        return self._core.snap.state is State.AUTHENTICATED

    async def adopt(self, record: StoredSession, reason: str) -> None:
        """Take a session token made elsewhere (store, other process) via the restore edge
        (UnsafeRedirect for a record whose host is off this session's allow-list)."""
        await self._run(flows.locked(self._core, adopt(self._core, record, reason), load=False))

    async def reset_cooldown(self) -> None:
        """Forget a remembered login failure, here and in the token store."""
        await self._run(flows.locked(self._core, reset_cooldown(self._core), load=False))

    async def renew(self, seen_generation: int, reason: str) -> Snapshot:
        """Make a new session unless one newer than ``seen_generation`` exists (single flight
        across tasks: callers wait up to ``relogin_timeout`` for whoever is renewing)."""
        snap: Snapshot = await self._run(relogin.renew(self._core, seen_generation, reason))
        return snap

    async def ready(self) -> Snapshot:
        """The one snapshot a trading request would be sent with now, renewing first when
        needed."""
        snap = self._core.usable()
        if snap is None:
            snap = await self._run(relogin.ready(self._core))
        return snap

    async def refresh_bearer(self, rejected: int | None = None) -> bool:
        """Replace the gateway token from ``access_token_provider`` (single flight per
        rejected Bearer generation); False if there is no provider."""
        gen = self._core.snap.bearer_generation if rejected is None else rejected
        return bool(await self._run(gateway.refresh(self._core, gen)))

    # --- requests ------------------------------------------------------------------------------

    @property
    def auth(self) -> Any:
        """An ``httpx.Auth``: ``httpx.AsyncClient(auth=session.auth)`` sends the session's
        headers and gets the re-login on 401 with the replay rule of :meth:`request`; answers
        are returned, never raised. ``httpx.Client(auth=session.auth)`` works from the
        program's other threads, its re-logins run on this session's event loop (see
        :mod:`session_fsm.aio.auth`)."""
        if self._auth is None:
            from .auth import HttpxAuth

            self._auth = HttpxAuth(self._core, self._driver, self)
        return self._auth

    async def request(self, method: str, path: str, **kwargs: Any) -> AsyncResponse:
        """Send an authorised trading request relative to the session's host (or to an
        absolute URL on the allow-list). ``kwargs``: ``headers``, ``params``, ``json``,
        ``data`` (bytes or str). Re-logs in once on an expired session and replays when safe;
        raises the typed error of a non-2xx answer, with the response as ``.response``."""
        if self._heartbeat is not None:
            self._heartbeat.ensure()
        core = self._core
        snap = core.usable()
        reply: Reply | None = None
        if (
            snap is not None
            and "://" not in path
            and (not kwargs or REQUEST_KEYWORDS.issuperset(kwargs))
        ):
            # The hot path: relogin.request's own first step (the usable snapshot, one Send)
            # through the generation's template, without the driver's loop; a 2xx answer
            # (nothing for the core to do) is returned at once, any other goes to the core as
            # in that flow.
            try:
                template = self._template
                if template is None or template.snap is not snap:
                    template = self._template = _template_of(snap, template)
                fast = await self._wire.send_trading(template, method, path, kwargs)
            except Exception as exc:
                self._told(exc)
                raise
            if 200 <= fast.status < 300:
                if self._request_hooks:
                    self._told(None)
                return fast
            reply = Reply(fast.status, fast)
        try:
            response = await self._request(method, path, kwargs, snap, reply)
        except Exception as exc:
            self._told(exc)
            raise
        self._told(None)
        return response

    async def _request(
        self, method: str, path: str, kwargs: dict[str, Any], snap: Snapshot | None,
        reply: Reply | None,
    ) -> AsyncResponse:  # fmt: skip
        """The request through the core: ``reply`` is the hot path's non-2xx answer, sent
        with ``snap`` (None: ``snap`` was not usable, or the request is not the hot path's)."""
        if kwargs and not REQUEST_KEYWORDS.issuperset(kwargs):
            unknown = sorted(set(kwargs) - REQUEST_KEYWORDS)
            raise TypeError(f"request() got unexpected keyword arguments {unknown}")
        wire = self._wire
        absolute = "://" in path
        if absolute:  # the host the request would connect to: the session's list and the wire's
            check_allowed(path, *self._core.allowed)  # (no loopback from a real host)
            check_url(path, wire.config)
        extra = kwargs.get("headers")
        params, body, data = kwargs.get("params"), kwargs.get("json"), kwargs.get("data")

        async def send(effect: Send) -> Reply:
            token = effect.snap.session_token
            assert token is not None  # requests are sent with Authenticated snapshots
            url = path if absolute else effect.snap.host + path
            response = await wire.trading_request(
                method, url, effect.who, token, extra, params=params, json=body, data=data
            )
            return Reply(response.status, response)

        core = self._core
        if reply is None and snap is not None:
            # An absolute URL with a usable snapshot: the same first step, through the wire.
            assert snap.who is not None
            reply = await send(Send(snap, snap.who))
            if 200 <= reply.status < 300:
                fast: AsyncResponse = reply.handle
                return fast
        streamed = streamed_body(data)
        out = Outgoing(method.upper(), where(method, path), streamed, path)
        if snap is None or reply is None:  # a renewal is due first: the core's whole flow
            flow = relogin.request(core, out, map_errors=True)
        else:
            flow = relogin.answered(core, out, reply, snap, map_errors=True)
        final, err = await self._driver.run(flow, send=send)
        response: AsyncResponse = final.handle
        if err is None:
            return response
        if isinstance(err, APIError) and err.response is None:
            err.response = response
        raise err

    async def get(self, path: str, **kwargs: Any) -> AsyncResponse:
        """``request("GET", path, ...)``."""
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> AsyncResponse:
        """``request("POST", path, ...)``."""
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> AsyncResponse:
        """``request("PUT", path, ...)``."""
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> AsyncResponse:
        """``request("DELETE", path, ...)``."""
        return await self.request("DELETE", path, **kwargs)

    # --- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the heartbeat (if any) and close the transport's pooled connections (the
        session stays usable)."""
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        await self._wire.close()

    async def __aenter__(self) -> AsyncKSSession:
        if self._heartbeat is not None:
            self._heartbeat.ensure()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.config.logout_on_exit and self._core.snap.state is State.AUTHENTICATED:
                await self.logout()
        finally:
            await self.close()


def _template_of(snap: Snapshot, old: TradingTemplate | None) -> TradingTemplate:
    """The request template of ``snap``'s host and tokens (an Authenticated snapshot): ``old``
    when it has the same ones (then kept for ``snap``), else a new one."""
    who, token = snap.who, snap.session_token
    assert who is not None and token is not None  # usable() gives Authenticated snapshots
    if old is None or old.token is not token or old.who is not who or old.host != snap.host:
        old = TradingTemplate(snap.host, who, token)
    old.snap = snap
    return old


__all__ = ["AsyncKSSession"]
