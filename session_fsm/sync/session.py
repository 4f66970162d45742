"""KSSession: the public, synchronous session. It holds a :class:`~session_fsm.core.engine.
SessionCore` (which decides everything) and a :class:`~session_fsm.sync.driver.Driver` (which
performs what the core asks with ``requests``, the token store and a lock). Every public
method is a core flow run by the driver; readers (``state``, ``snapshot()``, ``history``)
never block.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests

from .. import contract, validation
from ..config import SessionConfig, check_wire_options
from ..core import connect as flows
from ..core import gateway, relogin
from ..core.calls import Identity
from ..core.effects import Flow
from ..core.engine import Callback, SessionCore, adopt, ensure_loaded, reset_cooldown
from ..core.machine import may
from ..core.snapshot import Snapshot, TransitionRecord
from ..credentials import Credentials
from ..errors import KSError
from ..hosts import configured_host
from ..locks import ForkSafeLock
from ..logs import emit
from ..masking import mask_url
from ..stores import StoredSession, TokenStore, open_store
from ..table import State
from ..wire import Wire
from .auth import SessionAuth, send_call
from .driver import Driver

if TYPE_CHECKING:
    from ..heartbeat import Heartbeat, Waiter

#: ``hook(session, outcome)`` after each ``session.request``: ``"ok"`` or the error class name.
RequestHook = Callable[[Any, str], None]


def _new_id_prefix() -> None:
    """A random prefix per process (made again in a forked child): with the counter, session
    ids are unique across processes and restarts, so one log of several runs stays apart."""
    global _id_prefix, _ids
    _id_prefix, _ids = os.urandom(4).hex(), itertools.count(1)


_id_prefix, _ids = "", itertools.count(1)
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


class KSSession:
    """One trading session with the KS Trade API, as a guarded state machine.

    ``KSSession(credentials, host=..., store=..., **options)``: see
    :class:`~session_fsm.config.SessionConfig` for the options. No network I/O until a trigger
    (``init``, ``login``, ``authenticate``, ``logout``, ``connect``) or a request is made. As a
    context manager it closes connections on exit and does not log out (like
    ``requests.Session``): a session kept in a store stays usable by other processes and the
    next run. Call :meth:`logout` first, or pass ``logout_on_exit=True``, to end it.
    """

    _auth: SessionAuth | None = None
    _request_hooks: list[RequestHook] | None = None
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
        validation.instance("credentials", credentials, Credentials)
        validation.instance("host", host, str)
        validation.callable_("clock", clock)
        if wire is not None:
            validation.instance("wire", wire, Wire)
        config = SessionConfig.from_options(options)
        if wire is not None and options:
            check_wire_options(options, wire.config)
        self._wire = wire or Wire(config.wire_config())
        wc = self._wire.config
        allowed = (tuple(wc.allowed_domains), bool(wc.allow_loopback))
        origin = configured_host(host, *allowed)
        self._store = open_store(store)
        #: Unique across processes and restarts: ``<8 random hex digits>-<n>``.
        self.session_id = f"{_id_prefix}-{next(_ids)}"
        self._core = SessionCore(
            credentials, origin, config, session_id=self.session_id, owner=self,
            allowed=allowed, clock=clock, logger=logger, on_transition=on_transition,
        )  # fmt: skip
        # Bounded (relogin_timeout) and made afresh in a forked child: see session_fsm.locks.
        lock = ForkSafeLock(config.relogin_timeout, reentrant=True)
        self._driver = Driver(self._wire, self._store, lock)
        if config.heartbeat is not None:
            from ..heartbeat import Heartbeat

            self._heartbeat = Heartbeat(self, config.heartbeat, waiter=heartbeat_waiter)
            self._heartbeat.start()

    def _run(self, flow: Flow[Any]) -> Any:
        return self._driver.run(flow)

    # --- introspection -------------------------------------------------------------------------

    @property
    def credentials(self) -> Credentials:
        """The credentials the session logs in with."""
        return self._core.credentials

    @property
    def config(self) -> SessionConfig:
        """The session's settings."""
        return self._core.config

    @property
    def origin(self) -> str:
        """The configured API host (before any redirect)."""
        return self._core.origin

    @property
    def state(self) -> State:
        """The current state (never blocks)."""
        return self._core.snap.state

    def snapshot(self) -> Snapshot:
        """The whole state (state, host, tokens, generations, cool-down, refresh) as one
        immutable value."""
        return self._core.snap

    @property
    def generation(self) -> int:
        """How many session tokens this session has had (0: never authenticated)."""
        return self._core.snap.generation

    @property
    def history(self) -> tuple[TransitionRecord, ...]:
        """Recent attempted transitions, oldest first (bounded by ``history_size``)."""
        h = self._core.history
        return tuple(h) if h is not None else ()

    @property
    def wire(self) -> Wire:
        """The transport (shareable between sessions)."""
        return self._wire

    @property
    def store(self) -> TokenStore:
        """The token store."""
        return self._store

    @property
    def _clock(self) -> Callable[[], float]:
        return self._core.clock

    @property
    def _log(self) -> Any:
        return self._core.log

    def identity(self) -> Identity:
        """Who the session calls as (carries the current Bearer token as a Secret)."""
        who = self._core.snap.who
        assert who is not None
        return who

    def store_key(self) -> str:
        """The key this session is stored under (per origin host and userid)."""
        return self._core.key

    def deadlines(self, snap: Snapshot) -> tuple[float, float] | None:
        """(soft, hard) proactive re-login times of ``snap`` (None when off)."""
        return self._core.deadlines(snap)

    def on_transition(self, callback: Callback) -> Callback:
        """Register ``callback(session, record)``, called after every attempted transition.

        Callbacks run in the thread that made the transition; an exception in one is logged
        and swallowed. Returns the callback, so it can be used as a decorator.
        """
        core = self._core
        core.callbacks = [*(core.callbacks or ()), callback]
        return callback

    def on_request(self, hook: RequestHook) -> RequestHook:
        """Register ``hook(session, outcome)``, called after every ``request`` (and the verbs)
        in the calling thread: ``outcome`` is ``"ok"`` or the raised error's class name
        (``"other"`` for a non-library exception). Requests sent with ``auth=session.auth`` are
        not seen. An exception in a hook is logged and swallowed. Returns the hook."""
        self._request_hooks = [*(self._request_hooks or ()), hook]
        return hook

    def may(self, trigger: str) -> bool:
        """Whether ``trigger`` would be attempted now: an edge exists and its guards hold. Pure."""
        return may(self._core, self._core.snap, trigger)

    @property
    def renewal_waiters(self) -> int:
        """How many threads are blocked now waiting for this session's re-login to finish."""
        return len(self._driver.waiting)

    @property
    def heartbeat(self) -> Heartbeat | None:
        """The heartbeat (``heartbeat=SECONDS``), or None when off."""
        return self._heartbeat

    def __repr__(self) -> str:
        s = self._core.snap
        return (
            f"{type(self).__name__}(id={self.session_id}, userid={self.credentials.userid!r}, "
            f"state={s.state.value}, host={mask_url(s.host)!r}, generation={s.generation})"
        )

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
        """Take a session token made elsewhere (store, other process) via the restore edge."""
        self._run(flows.locked(self._core, adopt(self._core, record, reason), load=False))

    def reset_cooldown(self) -> None:
        """Forget a remembered login failure so the next call hits the server again; also the
        one kept in the token store (that other processes honour too)."""
        self._run(flows.locked(self._core, reset_cooldown(self._core)))

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
        (what happened is in :attr:`history` and the log).
        """
        if self._auth is None:
            self._auth = SessionAuth(self._core, self._driver)
        return self._auth

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send an authorised trading request relative to the session's host.

        Re-logs in once on an expired session and replays when safe (see
        :func:`~session_fsm.core.relogin.replayable`); raises the typed error for any non-2xx
        answer (the response is on the error as ``.response``).
        """
        hooks = self._request_hooks
        if hooks is None:
            return send_call(self._core, self._driver, method, path, kwargs)
        try:
            response = send_call(self._core, self._driver, method, path, kwargs)
        except Exception as exc:
            self._tell(hooks, type(exc).__name__ if isinstance(exc, KSError) else "other")
            raise
        self._tell(hooks, "ok")
        return response

    def _tell(self, hooks: list[RequestHook], outcome: str) -> None:
        for hook in hooks:
            try:
                hook(self, outcome)
            except Exception as exc:  # an observer must not break a request
                emit(self._log, "error", "request_hook_failed", session_id=self.session_id,
                     hook=getattr(hook, "__name__", "?"), error=type(exc).__name__)  # fmt: skip

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """``request("GET", path, ...)``."""
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

    def diagram(self) -> str:
        """Mermaid of the machine, current state highlighted, last transition marked."""
        from ..diagrams import mermaid

        h = self._core.history
        return mermaid(highlight=self._core.snap.state, last=h[-1] if h else None)


__all__ = ["KSSession", "RequestHook"]
