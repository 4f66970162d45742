"""KSSession: the public, synchronous session. It holds a :class:`~session_fsm.core.engine.
SessionCore` (which decides everything) and a :class:`~session_fsm.sync.driver.Driver` (which
performs what the core asks with ``requests``, the token store and a lock). Every public
method is a core flow run by the driver; readers (``state``, ``snapshot()``, ``history``)
never block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests

from .. import contract, validation
from ..core import connect as flows
from ..core import gateway, relogin
from ..core.cooldown import reset_cooldown
from ..core.effects import Flow
from ..core.engine import Callback, adopt, ensure_loaded
from ..core.snapshot import Snapshot
from ..core.view import SessionView
from ..credentials import Credentials, refuse_async_providers
from ..errors import KSError
from ..stores import StoredSession, TokenStore, open_store
from ..table import State
from ..wire import Wire
from .auth import SessionAuth, send_call
from .driver import Driver

if TYPE_CHECKING:
    from ..heartbeat import Heartbeat, Waiter


class KSSession(SessionView):
    """One trading session with the KS Trade API, as a guarded state machine.

    ``KSSession(credentials, host=..., store=..., **options)``: see
    :class:`~session_fsm.config.SessionConfig` for the options. No network I/O until a trigger
    (``init``, ``login``, ``authenticate``, ``logout``, ``connect``) or a request is made. As a
    context manager it closes connections on exit and does not log out (like
    ``requests.Session``): a session kept in a store stays usable by other processes and the
    next run. Call :meth:`logout` first, or pass ``logout_on_exit=True``, to end it.
    """

    _auth: SessionAuth | None = None
    _heartbeat: Heartbeat | None = None

    def __init__(
        self,
        credentials: Credentials,
        host: str = contract.PRODUCTION_HOST,
        *,
        wire: Wire | None = None,
        store: str | TokenStore | None = None,
        clock: Callable[[], float] = time.time,
        logger: Any = None,
        on_transition: Callback | list[Callback] | None = None,
        heartbeat_waiter: Waiter | None = None,
        **options: Any,
    ) -> None:
        if wire is not None:
            validation.instance("wire", wire, Wire)
        wire_config = wire.config if wire is not None else None
        config = self._configure(
            credentials, host, wire_config, options, clock=clock, logger=logger,
            on_transition=on_transition,
        )  # fmt: skip
        refuse_async_providers(credentials)
        self._wire = wire or Wire(config.wire_config())
        if store is not None:  # (none given: the driver makes the session's own at first use)
            self._store = open_store(store)
        heartbeat = config.heartbeat
        if heartbeat is not None:
            from ..heartbeat import Heartbeat

            self._heartbeat = Heartbeat(self, heartbeat, waiter=heartbeat_waiter)
            self._heartbeat.start()

    @property
    def _driver(self) -> Driver:
        """What performs the core's effects: made at the first trigger, request or look at the
        store, as the core is (``SessionView._core``): a session made and not (yet) used is one
        object for the garbage collector. The driver's own parts (a MemoryStore
        when no store was given, the session's lock, its list of waiting threads) are made at
        their own first use."""
        held = self.__dict__
        driver: Driver | None = held.get("_driver")
        if driver is None:
            made = Driver(self._wire, held.get("_store"), self._config.relogin_timeout)
            driver = held.setdefault("_driver", made)  # the first one made, whichever thread
        return driver

    def _run(self, flow: Flow[Any]) -> Any:
        return self._driver.run(flow)

    @property
    def wire(self) -> Wire:
        """The transport (shareable between sessions)."""
        return self._wire

    @property
    def store(self) -> TokenStore:
        """The token store."""
        return self._driver.store

    @property
    def renewal_waiters(self) -> int:
        """How many threads are blocked now waiting for this session's re-login to finish."""
        return self._driver.waiters

    @property
    def heartbeat(self) -> Heartbeat | None:
        """The heartbeat (``heartbeat=SECONDS``), or None when off."""
        return self._heartbeat

    # --- triggers ------------------------------------------------------------------------------

    def init(self) -> None:
        """Uninitialised/LoggedOut -> Initialised: session_init, following an allowed redirect."""
        self._run(flows.trigger(self._core, "init"))

    def login(self) -> None:
        """Initialised/OTT-issued -> OTT-issued: login_with_user_id for a one-time token."""
        self._run(flows.trigger(self._core, "login"))

    def authenticate(self) -> None:
        """OTT-issued -> Authenticated: generate_session2_fa for the session token."""
        self._run(flows.trigger(self._core, "authenticate"))

    def logout(self) -> None:
        """Authenticated -> LoggedOut: session_logout. Tokens are forgotten even if it fails.

        Logging out a session that is not logged in (a second ``logout()``, or one before any
        login) changes nothing and does not raise: the attempt is recorded (outcome
        ``refused``, reason ``not logged in``) and no call is made. Stops the heartbeat first.
        """
        if self._heartbeat is not None:
            self._heartbeat.stop()
        self._run(flows.logout(self._core))

    def connect(self) -> Snapshot:
        """Walk the table's shortest path from the current state to Authenticated.

        A guard with a remedy (a stale one-time token) is mended on the way; a rejected one-time
        token or a redirect to another host is recovered from once. With a shared token store,
        the walk happens under the store's lock and a session another process saved meanwhile
        is adopted instead (so N processes starting together log in once). Returns the snapshot.
        """
        snap: Snapshot = self._run(flows.connect(self._core))
        return snap

    def resume(self) -> bool:
        """Resume a session saved in the store (no HTTP call); True if one was taken.

        Done by itself on the first trigger or request; call it to see the stored state early.
        """
        self._run(flows.locked(self._core, ensure_loaded(self._core)))
        return self._core.snap.state is State.AUTHENTICATED

    def adopt(self, record: StoredSession, reason: str) -> None:
        """Take a session token made elsewhere (store, other process) via the restore edge.
        A record whose host is off this session's allow-list (loopback, for a session on a real
        host) raises UnsafeRedirect: its requests would take the token there."""
        self._run(flows.locked(self._core, adopt(self._core, record, reason), load=False))

    def reset_cooldown(self) -> None:
        """Forget a remembered login failure so the next call hits the server again; also the
        one kept in the token store (that other processes honour too)."""
        self._run(flows.locked(self._core, reset_cooldown(self._core), load=False))

    def renew(
        self, seen_generation: int, reason: str, *, cause: KSError | None = None,
        call: str | None = None,
    ) -> Snapshot:  # fmt: skip
        """Make a new session unless one newer than ``seen_generation`` already exists
        (single flight: callers wait up to ``relogin_timeout`` for whoever is renewing)."""
        flow = relogin.renew(self._core, seen_generation, reason, cause=cause, call=call)
        snap: Snapshot = self._run(flow)
        return snap

    def ready(self) -> Snapshot:
        """The one snapshot a trading request would be sent with now, renewing first when
        needed (see :func:`session_fsm.core.relogin.ready`)."""
        snap: Snapshot = self._core.usable() or self._run(relogin.ready(self._core))
        return snap

    def refresh_bearer(self, rejected: int | None = None) -> bool:
        """Replace the gateway token from ``access_token_provider``; False if there is none.

        Single flight: the provider is asked once per rejected Bearer generation, however many
        threads met the rejection (``None``: the current one is rejected)."""
        gen = self._core.snap.bearer_generation if rejected is None else rejected
        return bool(self._run(gateway.refresh(self._core, gen)))

    # --- requests ------------------------------------------------------------------------------

    @property
    def auth(self) -> SessionAuth:
        """A ``requests`` auth object: session headers plus the re-login-on-401 behaviour.

        ``requests.get(url, auth=session.auth)`` gets the same expiry handling as
        :meth:`request`, but, as with every ``requests`` auth, answers are returned, never
        raised: the replay's, or the original 401/403 when the session could not be renewed
        (what happened is in :attr:`history` and the log). With httpx installed it is an
        ``httpx.Auth`` too: ``httpx.Client(auth=session.auth)`` or ``httpx.AsyncClient``.
        """
        if self._auth is None:
            self._auth = SessionAuth(self._core, self._driver, self)
        return self._auth

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send an authorised trading request relative to the session's host.

        Re-logs in once on an expired session and replays when safe (see
        :func:`~session_fsm.core.relogin.replayable`); raises the typed error for any non-2xx
        answer (the response is on the error as ``.response``).
        """
        if self._request_hooks is None:
            return send_call(self._core, self._driver, method, path, kwargs)
        try:
            response = send_call(self._core, self._driver, method, path, kwargs)
        except Exception as exc:
            self._told(exc)
            raise
        self._told(None)
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """``request("GET", path, ...)``."""
        if self._request_hooks is None:  # (request's own first step: one frame less)
            return send_call(self._core, self._driver, "GET", path, kwargs)
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        """``request("POST", path, ...)``."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        """``request("PUT", path, ...)``."""
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        """``request("DELETE", path, ...)``."""
        return self.request("DELETE", path, **kwargs)

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the heartbeat (if any) and close the transport's pooled connections."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
        self._wire.close()

    def __enter__(self) -> KSSession:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.config.logout_on_exit and self._core.snap.state is State.AUTHENTICATED:
                self.logout()
        finally:
            self.close()


__all__ = ["KSSession"]
