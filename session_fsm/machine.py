"""SessionMachine: the guarded state machine engine of one KS session, built on ``transitions``.

One ``transitions.Machine`` is built from :data:`~session_fsm.table.TRANSITIONS` per process
and shared by every session; sessions are passed to ``Event.trigger`` as the model and are never
registered with ``add_model``, so the machine holds no reference to them (no leak) and creating
the ten-thousandth session costs what the first did. No dynamic method is ever added to a
session: the public triggers are ordinary typed methods.

Guards are the model's ``_guard_*`` methods; the wire call of an edge (``edge_calls``) runs as
its ``before`` callback, after the guards and before the state changes, so a failed call leaves
the state as it was. The new state and tokens are published together as one immutable
:class:`Snapshot`.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from transitions import Machine

from . import contract, table, validation
from .answers import Identity
from .config import SessionConfig, check_wire_options
from .credentials import Credentials
from .edge_calls import EdgeCalls
from .errors import (
    GatewayAuthError,
    GuardFailed,
    InvalidTransition,
    KSError,
    LoginRejected,
    NotAuthorized,
    OneTimeTokenRejected,
    SessionExpired,
    WrongDomain,
)
from .hosts import configured_host, refusal, shown_host
from .locks import ForkSafeLock
from .logs import emit, emit_record, get_logger
from .masking import mask_url
from .snapshot import EVENT_KEYS, FAILED, OK, REFUSED, Snapshot, TransitionRecord
from .stores import (
    StoredCooldown,
    StoredSession,
    StoreError,
    TokenStore,
    clear_cooldown,
    load_cooldown,
    open_store,
    save_cooldown,
)
from .table import State
from .wire import Wire

Callback = Callable[["SessionMachine", TransitionRecord], None]
_STATE_NAMED: dict[str, State] = {s.name: s for s in State}


def _new_id_prefix() -> None:
    """A random prefix per process (made again in a forked child): with the counter, session
    ids are unique across processes and restarts, so one log of several runs stays apart."""
    global _id_prefix, _ids
    _id_prefix, _ids = os.urandom(4).hex(), itertools.count(1)


_id_prefix, _ids = "", itertools.count(1)
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)
#: Errors after which the login endpoints are not called again until the cool-down ends.
_COOLDOWN_ERRORS = (LoginRejected, NotAuthorized, GatewayAuthError)
_COOLDOWN_BY_NAME: dict[str, type[KSError]] = {c.__name__: c for c in _COOLDOWN_ERRORS}
#: The triggers that call the login endpoints (refused during a cool-down).
_LOGIN_TRIGGERS = frozenset({"init", "login", "authenticate", "refresh"})
#: The reason recorded for a logout() of a session that is not logged in.
NOT_LOGGED_IN = "not logged in"
#: Errors that move the session along an internal edge, by trigger.
_INTERNAL_EDGE_FOR: tuple[tuple[type[KSError], str], ...] = (
    (GatewayAuthError, "gateway_rejected"),
    (WrongDomain, "redirect_changed"),
    (OneTimeTokenRejected, "ott_rejected"),
)


def _lock_wait_expired(timeout: float) -> SessionExpired:
    """The error of a call that waited ``relogin_timeout`` for the session's lock."""
    return SessionExpired(
        f"gave up after {timeout:g}s waiting for another thread's call on this session "
        "(connect, re-login or logout)",
        hint="raise relogin_timeout, or retry",
    )


@functools.cache
def shared_machine() -> Machine:
    """The one ``transitions.Machine`` built from the table (models are passed per call).

    Its states are the names of :class:`State` members (``"AUTHENTICATED"``): transitions
    handles plain strings with fewer look-ups than Enum members, on every edge.
    """
    return Machine(
        model=None,
        states=[s.name for s in State],
        initial=table.INITIAL.name,
        auto_transitions=False,
        model_attribute="_fsm_state",
        transitions=[
            {
                "trigger": e.trigger,
                "source": e.source.name,
                "dest": e.dest.name,
                "conditions": [f"_guard_{g}" for g in e.guards],
                "before": [f"_call_{e.call}"] if e.call else [],
            }
            for e in table.TRANSITIONS
        ],
    )


class SessionMachine(EdgeCalls):
    """The engine of a session: snapshot, triggers, guards, edge calls, records, store.

    :class:`~session_fsm.session.KSSession` adds connect, re-login and requests on top. No
    network I/O until a trigger is called. Triggers are serialised per session; reading
    :attr:`state` or :meth:`snapshot` never blocks.
    """

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
        **options: Any,
    ) -> None:
        validation.instance("credentials", credentials, Credentials)
        validation.instance("host", host, str)
        validation.callable_("clock", clock)
        if wire is not None:
            validation.instance("wire", wire, Wire)
        self.credentials = credentials
        self.config = SessionConfig.from_options(options)
        if wire is not None and options:
            check_wire_options(options, wire.config)
        self._wire = wire or Wire(self.config.wire_config())
        wc = self._wire.config
        self.origin = configured_host(host, tuple(wc.allowed_domains), bool(wc.allow_loopback))
        self._clock = clock
        self._logger = logger  # None: the library's logger, made at the first event (_log)
        self._store = open_store(store)
        #: Unique across processes and restarts: ``<8 random hex digits>-<n>``.
        self.session_id = f"{_id_prefix}-{next(_ids)}"
        c = credentials
        self._who = (0, Identity(c.userid, c.consumer_key, c.ip, c.app_id, c.bearer))
        self._snap = Snapshot(state=table.INITIAL, host=self.origin)
        self._pending: Snapshot | None = None
        self._deferred: KSError | None = None
        self._guards_seen: list[tuple[str, bool]] = []
        self._cooldown: tuple[KSError, float] | None = None
        self._loaded = False
        # Bounded (relogin_timeout) and made afresh in a forked child: see session_fsm.locks.
        self._lock = ForkSafeLock(self.config.relogin_timeout, _lock_wait_expired, reentrant=True)
        # Made at the first record / registration: a session is a handful of objects for the
        # garbage collector to walk, which matters to a process holding 10,000 of them.
        self._history: deque[TransitionRecord] | None = None
        self._callbacks: list[Callback] | None = None
        if on_transition is not None:
            self._callbacks = validation.each_callable("on_transition", on_transition)

    # --- introspection -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state (never blocks)."""
        return self._snap.state

    def snapshot(self) -> Snapshot:
        """The current state, host, tokens and generation as one immutable value."""
        return self._snap

    @property
    def generation(self) -> int:
        """How many session tokens this session has had (0: never authenticated)."""
        return self._snap.generation

    @property
    def history(self) -> tuple[TransitionRecord, ...]:
        """Recent attempted transitions, oldest first (bounded by ``history_size``)."""
        return tuple(self._history) if self._history is not None else ()

    @property
    def _log(self) -> Any:
        log = self._logger
        if log is None:
            log = self._logger = get_logger()
        return log

    @property
    def wire(self) -> Wire:
        """The transport (shareable between sessions)."""
        return self._wire

    @property
    def store(self) -> TokenStore:
        """The token store."""
        return self._store

    def on_transition(self, callback: Callback) -> Callback:
        """Register ``callback(session, record)``, called after every attempted transition.

        Callbacks run in the thread that made the transition; an exception in one is logged
        and swallowed. Returns the callback, so it can be used as a decorator.
        """
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)
        return callback

    def may(self, trigger: str) -> bool:
        """Whether ``trigger`` would be attempted now: an edge exists and its guards hold. Pure."""
        e = table.edge(self._snap.state, trigger)
        return e is not None and not e.internal and all(self._guard(g) for g in e.guards)

    def __repr__(self) -> str:
        s = self._snap
        return (
            f"{type(self).__name__}(id={self.session_id}, userid={self.credentials.userid!r}, "
            f"state={s.state.value}, host={mask_url(s.host)!r}, generation={s.generation})"
        )

    # --- public triggers -----------------------------------------------------------------------

    def init(self) -> None:
        """Uninitialised/LoggedOut -> Initialised: session_init, following an allowed redirect."""
        self._fire("init")

    def login(self) -> None:
        """Initialised/OTT-issued -> OTT-issued: login_with_user_id for a one-time token."""
        self._fire("login")

    def authenticate(self) -> None:
        """OTT-issued -> Authenticated: generate_session2_fa for the session token."""
        self._fire("authenticate")

    def logout(self) -> None:
        """Authenticated -> LoggedOut: session_logout. Tokens are forgotten even if it fails.

        Logging out a session that is not logged in (a second ``logout()``, or one before any
        login) changes nothing and does not raise: the attempt is recorded (outcome
        ``refused``, reason ``not logged in``) and no call is made.
        """
        with self._lock:
            if not self._loaded:
                self._ensure_loaded()
            src = self._snap.state
            if src is not State.AUTHENTICATED:
                self._guards_seen = []
                self._record("logout", src, REFUSED, reason=NOT_LOGGED_IN)
                return
            self._fire("logout")

    def reset_cooldown(self) -> None:
        """Forget a remembered login failure so the next call hits the server again; also the
        one kept in the token store (that other processes honour too)."""
        self._cooldown = None
        clear_cooldown(self._store, self.store_key())

    # --- the engine ----------------------------------------------------------------------------

    @property
    def _fsm_state(self) -> str:
        return self._snap.state._name_  # the member's name, without Enum's property call

    @_fsm_state.setter
    def _fsm_state(self, name: str) -> None:
        # Called by transitions when an edge completes: publish state and tokens at once. Built
        # directly (not dataclasses.replace): this runs on every edge. Only Authenticated keeps
        # a session token, only OTT-issued a one-time token; Uninitialised goes back to origin.
        value = _STATE_NAMED[name]
        p = self._pending or self._snap
        self._pending = None
        if value is State.AUTHENTICATED:
            new = Snapshot(value, p.host, p.generation, p.session_token, None, None, p.login_time)
        elif value is State.OTT_ISSUED:
            new = Snapshot(
                value, p.host, p.generation, None, p.one_time_token, p.ott_time, p.login_time
            )
        else:
            host = self.origin if value is State.UNINITIALISED else p.host
            new = Snapshot(value, host, p.generation, None, None, None, p.login_time)
        self._snap = new

    def _fire(
        self,
        trigger: str,
        reason: str | None = None,
        attempt: int = 1,
        *,
        cause: KSError | None = None,
        call: str | None = None,
    ) -> None:
        """Attempt ``trigger``. ``cause``/``call``: the server answer (and the request that met
        it) that made the library take an internal edge, kept on the record (its status, fault
        code and error name)."""
        with self._lock:
            if trigger != "restore" and not self._loaded:
                self._ensure_loaded()
            src = self._snap.state
            self._guards_seen = []  # a refusal below must not log the previous trigger's guards
            if table.edge(src, trigger) is None:
                self._record(trigger, src, REFUSED, reason=reason or "no edge")
                raise InvalidTransition(table.hint(src, trigger), state=src.value, trigger=trigger)
            if trigger in _LOGIN_TRIGGERS:
                if self._cooldown is None:
                    self._cooldown = self._stored_cooldown()
                if self._cooldown is not None:
                    self._check_cooldown(trigger, src)
            self._deferred = None
            t0 = time.perf_counter()
            try:
                done = shared_machine().events[trigger].trigger(self)
            except KSError as exc:
                self._pending = None
                self._record(trigger, src, FAILED, exc, t0, reason=reason, attempt=attempt)
                self._after_failure(exc)
                raise
            if not done:
                guard = next(g for g, ok in self._guards_seen if not ok)
                self._record(trigger, src, REFUSED, t0=t0, reason=f"guard {guard}")
                raise GuardFailed(
                    table.guard_hint(trigger, guard), state=src.value, trigger=trigger, guard=guard
                )
            deferred, self._deferred = self._deferred, None
            outcome = FAILED if deferred else OK
            self._record(trigger, src, outcome, deferred or cause, t0, reason=reason,
                         attempt=attempt, call=call)  # fmt: skip
            if deferred is not None:
                raise deferred

    def _after_failure(self, exc: KSError) -> None:
        if isinstance(exc, _COOLDOWN_ERRORS) and self.config.cooldown > 0:
            until = self._clock() + self.config.cooldown
            self._cooldown = (exc, until)
            kept = StoredCooldown(until, type(exc).__name__, exc.status, exc.fault_code)
            try:
                save_cooldown(self._store, self.store_key(), kept)
            except StoreError as store_exc:  # the login error is the one to raise
                emit(self._log, "warning", "cooldown_not_stored", session_id=self.session_id,
                     error=type(store_exc).__name__)  # fmt: skip
        for kind, internal in _INTERNAL_EDGE_FOR:
            if isinstance(exc, kind) and table.edge(self._snap.state, internal):
                self._fire(internal, reason=type(exc).__name__)
                return

    def _stored_cooldown(self) -> tuple[KSError, float] | None:
        """A cool-down another process (or an earlier run) kept in the store, as an error."""
        try:
            kept = load_cooldown(self._store, self.store_key())
        except StoreError:
            return None  # the login itself will meet (and report) the store's failure
        if kept is None or self._clock() >= kept.until:
            return None
        cls = _COOLDOWN_BY_NAME[kept.error]
        when = time.strftime("%H:%M:%S UTC", time.gmtime(kept.until))
        err = cls(
            f"not sent: an earlier login was rejected ({kept.error}) and the cool-down kept in "
            f"the token store lasts until {when}",
            status=kept.status,
            fault_code=kept.fault_code,
            hint="fix the password or access code (KS_PASSWORD, KS_ACCESS_CODE), then run "
            "`session-fsm login --reset-cooldown` or call reset_cooldown()",
        )
        return err, kept.until

    def _check_cooldown(self, trigger: str, src: State) -> None:
        if self._cooldown is None:
            return
        err, until = self._cooldown
        if self._clock() >= until:
            self._cooldown = None
            return
        self._record(trigger, src, REFUSED, err, reason="cooldown")
        raise err.with_traceback(None)

    def _record(
        self,
        trigger: str,
        src: State,
        outcome: str,
        exc: KSError | None = None,
        t0: float | None = None,
        *,
        reason: str | None = None,
        attempt: int = 1,
        call: str | None = None,
        guards: tuple[tuple[str, bool], ...] | None = None,
    ) -> None:
        snap = self._snap
        rec = TransitionRecord(
            time=self._clock(),
            trigger=trigger,
            src=src,
            dst=snap.state,
            outcome=outcome,
            status=exc.status if exc else None,
            fault_code=exc.fault_code if exc else None,
            error=type(exc).__name__ if exc else None,
            duration_ms=(time.perf_counter() - t0) * 1000 if t0 is not None else 0.0,
            attempt=attempt,
            guards=tuple(self._guards_seen) if guards is None else guards,
            reason=reason,
            generation=snap.generation,
            call=call,
        )
        history = self._history
        if history is None:
            history = self._history = deque(maxlen=self.config.history_size)
        history.append(rec)
        level = "info" if outcome == OK else "warning"
        fields = rec.as_event()
        fields["session_id"], fields["userid"] = self.session_id, self.credentials.userid
        emit_record(self._log, level, "transition", fields, EVENT_KEYS)
        self._notify(rec)

    def _notify(self, rec: TransitionRecord) -> None:
        if not self._callbacks:
            return
        for cb in list(self._callbacks):
            try:
                cb(self, rec)
            except Exception as exc:  # an observer must not break the session
                emit(self._log, "error", "callback_failed", session_id=self.session_id,
                     callback=getattr(cb, "__name__", "?"), error=type(exc).__name__)  # fmt: skip

    # --- guards (named in the table; called by transitions and by may()) -------------------------

    def _guard(self, name: str) -> bool:
        ok: bool = _CHECKS[name](self)
        return ok

    def _checked(self, name: str) -> bool:
        ok = self._guard(name)
        self._guards_seen.append((name, ok))
        return ok

    def _check_has_password(self) -> bool:
        p = self.credentials.password_provider
        return p is not None and p.available()

    def _check_has_ott(self) -> bool:
        return self._snap.one_time_token is not None

    def _check_ott_fresh(self) -> bool:
        t = self._snap.ott_time
        return t is not None and self._clock() - t < self.config.ott_ttl

    def _check_has_access_code(self) -> bool:
        p = self.credentials.access_code_provider
        return p is not None and p.available()

    def _guard_has_password(self) -> bool:
        return self._checked("has_password")

    def _guard_has_ott(self) -> bool:
        return self._checked("has_ott")

    def _guard_ott_fresh(self) -> bool:
        return self._checked("ott_fresh")

    def _guard_has_access_code(self) -> bool:
        return self._checked("has_access_code")

    def resume(self) -> bool:
        """Resume a session saved in the store (no HTTP call); True if one was taken.

        Done by itself on the first trigger or request; call it to see the stored state early.
        """
        with self._lock:
            self._ensure_loaded()
            return self._snap.state is State.AUTHENTICATED

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        record = self._load_usable()
        if record is not None and self._snap.state is table.INITIAL:
            self.adopt(record, reason="store")

    def adopt(self, record: StoredSession, reason: str) -> None:
        """Take a session token made elsewhere (store, other process) via the restore edge."""
        with self._lock:
            self._pending = self._snap.evolve(
                host=record.host,
                session_token=record.session_token,
                generation=record.generation,
                login_time=record.login_time,
            )
            self._fire("restore", reason=reason)

    def _stored_newer(self, generation: int) -> StoredSession | None:
        if table.edge(self._snap.state, "restore") is None:
            return None  # no restore edge (LoggedOut, OTT-issued): callers log in instead
        record = self._load_usable()
        return record if record is not None and record.generation > generation else None

    def _load_usable(self) -> StoredSession | None:
        """The stored session, unless its host is off this session's allow-list (a narrower
        allow-list than the writer's, or a foreign writer): adopted, it would refuse every
        request while looking Authenticated. It is left alone; the next walk logs in."""
        record = self._store.load(self.store_key())
        if record is None:
            return None
        wc = self._wire.config
        why = refusal(record.host, tuple(wc.allowed_domains), bool(wc.allow_loopback))
        if why is None:
            return record
        emit(self._log, "warning", "stored_session_ignored", session_id=self.session_id,
             host=shown_host(record.host), why=why)  # fmt: skip
        return None


#: Each guard of the table -> the SessionMachine method that evaluates it.
_CHECKS: dict[str, Callable[[SessionMachine], bool]] = {
    name: getattr(SessionMachine, f"_check_{name}") for name in table.GUARDS
}
