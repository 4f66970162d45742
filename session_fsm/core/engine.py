"""The session's core: its one snapshot, its records, and the flow that takes an edge.

:class:`SessionCore` holds what a session is (credentials, settings, the current
:class:`~session_fsm.core.snapshot.Snapshot`, its history and observers) and decides; it never
sends, reads a store, sleeps or takes a lock itself. :func:`fire` is the flow of one edge:
the table and the guards (:mod:`session_fsm.core.machine`) decide, the edge's call
(:mod:`session_fsm.core.edges`) is yielded as effects, and the new state and tokens are
published together as one snapshot. A failed call leaves the state as it was, except for the
internal edge the answer names (a rejected Bearer token, another host, a rejected one-time
token).

Every flow that changes the snapshot runs with the session's lock held (an effect the driver
performs); readers never lock.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .. import table, validation
from ..config import SessionConfig
from ..credentials import Credentials
from ..errors import (
    GatewayAuthError,
    GuardFailed,
    InvalidTransition,
    KSError,
    OneTimeTokenRejected,
    SessionExpired,
    WrongDomain,
)
from ..hosts import check_url, refusal, shown_host
from ..logs import emit, emit_record, get_logger
from ..stores import StoredSession, store_key
from ..table import State
from .cooldown import COOLDOWN_ERRORS, LOGIN_TRIGGERS, check_cooldown, remember
from .effects import Flow, Load
from .machine import attempt
from .snapshot import EVENT_KEYS, FAILED, OK, REFUSED, Snapshot, TransitionRecord

#: ``callback(session, record)`` after every attempted transition.
Callback = Callable[[Any, TransitionRecord], None]
#: The reason recorded for a logout() of a session that is not logged in.
NOT_LOGGED_IN = "not logged in"
#: Errors that move the session along an internal edge.
_INTERNAL_EDGE_FOR: tuple[tuple[type[KSError], str], ...] = (
    (GatewayAuthError, "gateway_rejected"),
    (WrongDomain, "redirect_changed"),
    (OneTimeTokenRejected, "ott_rejected"),
)


#: What the snapshot of a state an edge enters forgets (:meth:`SessionCore.entered`), over
#: the edge's own changes.
_FORGOTTEN_IN: dict[State, dict[str, Any]] = {
    State.AUTHENTICATED: {"one_time_token": None, "ott_time": None, "refreshing": False,
                          "refresh_retry_at": None},
    State.OTT_ISSUED: {"session_token": None, "refreshing": False, "refresh_retry_at": None},
}  # fmt: skip
_FORGOTTEN_ELSEWHERE: dict[str, Any] = {"session_token": None, "one_time_token": None,
                                        "ott_time": None, "refreshing": False,
                                        "refresh_retry_at": None}  # fmt: skip


def same_session(a: Snapshot, b: Snapshot) -> bool:
    """Whether ``a`` and ``b`` are the same session (state, generation and token): a refresh
    flag or a new Bearer token does not make another one."""
    return (
        a.state is b.state and a.generation == b.generation and a.session_token is b.session_token
    )


class SessionCore:
    """What a session is and decides (see the module docstring). Made by a driver."""

    def __init__(
        self,
        credentials: Credentials,
        origin: str,
        config: SessionConfig,
        *,
        session_id: str,
        owner: Any,
        allowed: tuple[tuple[str, ...], bool],
        clock: Callable[[], float] = time.time,
        logger: Any = None,
        on_transition: Callback | list[Callback] | None = None,
    ) -> None:
        self.credentials = credentials
        self.origin = origin
        self.config = config
        self.session_id = session_id
        self._owner = weakref.ref(owner)
        self.allowed = allowed
        self.clock = clock
        self._logger = logger
        self.key = store_key(origin, credentials.userid)
        self.snap = Snapshot(state=table.INITIAL, host=origin, who=credentials.identity)
        #: Whether the store has been looked at (the first trigger or request does).
        self.loaded = False
        self.history: deque[TransitionRecord] | None = None  # made at the first record
        self.callbacks: list[Callback] | None = None
        if on_transition is not None:
            self.callbacks = validation.each_callable("on_transition", on_transition)

    @property
    def owner(self) -> Any:
        """The public object callbacks are given (the driver's session). Held weakly: the
        session holds its core, and with the core holding it back every connected session
        waited for the cyclic garbage collector (about one collection per 30 connects), not
        freed when dropped. Whatever hands the core out beyond its session (``session.auth``)
        keeps the session too."""
        return self._owner()

    @property
    def log(self) -> Any:
        """The logger (the library's, made at the first event, unless one was given)."""
        log = self._logger
        if log is None:
            log = self._logger = get_logger()
        return log

    def deadlines(self, snap: Snapshot) -> tuple[float, float] | None:
        """(soft, hard) proactive re-login times of ``snap`` (None when off)."""
        if snap.login_time is None:
            return None
        return self.config.deadlines(snap.login_time)

    def usable(self) -> Snapshot | None:
        """The snapshot a request can be sent with now without any effect, or None when
        :func:`~session_fsm.core.relogin.ready` has work to do (the hot path's test)."""
        snap = self.snap
        if snap.state is not State.AUTHENTICATED or not self.loaded:
            return None
        if snap.login_time is None:
            return snap
        deadlines = self.config.deadlines(snap.login_time)
        if deadlines is None or self.clock() < deadlines[0]:
            return snap
        return None

    # --- publishing and records ----------------------------------------------------------------

    def entered(self, dest: State, changes: dict[str, Any]) -> Snapshot:
        """The snapshot of ``dest`` after an edge: only Authenticated keeps a session token,
        only OTT-issued a one-time token; Uninitialised goes back to the origin host. No edge
        keeps a failed proactive refresh's retry time: it belongs to the generation that
        failed to refresh (set without an edge), and an edge into Authenticated brings another
        generation or comes from a state that has none."""
        new = {**changes, **_FORGOTTEN_IN.get(dest, _FORGOTTEN_ELSEWHERE), "state": dest}
        if dest is State.UNINITIALISED:
            new["host"] = self.origin
        return self.snap.evolve_with(new)

    def record(
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
        guards: tuple[tuple[str, bool], ...] = (),
    ) -> None:
        """Keep, log and announce one attempted transition."""
        snap = self.snap
        rec = TransitionRecord(
            time=self.clock(),
            trigger=trigger,
            src=src,
            dst=snap.state,
            outcome=outcome,
            status=exc.status if exc else None,
            fault_code=exc.fault_code if exc else None,
            error=type(exc).__name__ if exc else None,
            duration_ms=(time.perf_counter() - t0) * 1000 if t0 is not None else 0.0,
            attempt=attempt,
            guards=guards,
            reason=reason,
            generation=snap.generation,
            call=call,
        )
        history = self.history
        if history is None:
            history = self.history = deque(maxlen=self.config.history_size)
        history.append(rec)
        level = "info" if outcome == OK else "warning"
        fields = rec.as_event()
        fields["session_id"], fields["userid"] = self.session_id, self.credentials.userid
        emit_record(self.log, level, "transition", fields, EVENT_KEYS)
        self.notify(rec)

    def notify(self, rec: TransitionRecord) -> None:
        """Call the ``on_transition`` callbacks; one that raises is logged and skipped."""
        if self.callbacks:
            self.observe(list(self.callbacks), (self.owner, rec), "callback")

    def observe(self, observers: Sequence[Callable[..., object]], args: tuple[Any, ...],
                role: str) -> None:  # fmt: skip
        """Call each observer with ``args``; one that raises is logged (event
        ``<role>_failed``, naming it and its error's class) and skipped: an observer must not
        break the session."""
        for observer in observers:
            try:
                observer(*args)
            except Exception as exc:
                self.observer_failed(observer, exc, role)

    def observer_failed(self, observer: Callable[..., object], exc: Exception, role: str) -> None:
        """Log that ``observer`` raised ``exc`` (event ``<role>_failed``, naming it and its
        error's class, never the error's text)."""
        name = getattr(observer, "__name__", "?")
        emit(self.log, "error", f"{role}_failed", session_id=self.session_id,
             error=type(exc).__name__, **{role: name})  # fmt: skip



# --- flows (the session's lock is held by the caller) --------------------------------------------


def fire(
    core: SessionCore,
    trigger: str,
    reason: str | None = None,
    attempt_no: int = 1,
    *,
    cause: KSError | None = None,
    call: str | None = None,
    changes: dict[str, Any] | None = None,
) -> Flow[None]:
    """Take ``trigger``'s edge: check it, make its call, publish the new snapshot, record it.

    ``cause``/``call``: the server answer (and the request that met it) that made the library
    take an internal edge, kept on the record. ``changes``: snapshot fields an internal edge
    brings (``restore``: the stored session).
    """
    edge_calls = _EDGE_CALLS or _edge_calls()
    if trigger != "restore" and not core.loaded:
        yield from ensure_loaded(core)
    snap = core.snap
    src = snap.state
    e = table.edge(src, trigger)
    if e is None:
        core.record(trigger, src, REFUSED, reason=reason or "no edge")
        raise InvalidTransition(table.hint(src, trigger), state=src.value, trigger=trigger)
    over = trigger in LOGIN_TRIGGERS and (yield from check_cooldown(core, trigger, src))
    t0 = time.perf_counter()
    att = attempt(core, snap, trigger)
    guards = tuple(att.seen)
    if not att.moved:
        guard = next(g for g, ok in guards if not ok)
        core.record(trigger, src, REFUSED, t0=t0, reason=f"guard {guard}", guards=guards)
        raise GuardFailed(
            table.guard_hint(trigger, guard), state=src.value, trigger=trigger, guard=guard
        )
    if over:  # the trigger goes on: the cool-down that ended is forgotten
        core.snap = snap = core.snap.evolve(cooldown=None)
    deferred: KSError | None = None
    try:
        if e.call is not None:
            made, deferred = yield from edge_calls[e.call](core, snap)
            changes = {**(changes or {}), **made}
    except KSError as exc:
        core.record(trigger, src, FAILED, exc, t0, reason=reason, attempt=attempt_no,
                    guards=guards)  # fmt: skip
        yield from after_failure(core, exc)
        raise
    core.snap = core.entered(e.dest, changes or {})
    core.record(trigger, src, FAILED if deferred else OK, deferred or cause, t0, reason=reason,
                attempt=attempt_no, call=call, guards=guards)  # fmt: skip
    if deferred is not None:
        raise deferred


#: The edges' calls (:data:`~session_fsm.core.edges.EDGE_CALLS`), kept at the first edge
#: that makes one: that module imports this one's flows, so it is imported then, once (an
#: import inside :func:`fire` cost a few microseconds on every edge).
_EDGE_CALLS: dict[str, Any] | None = None


def _edge_calls() -> dict[str, Any]:
    global _EDGE_CALLS
    from .edges import EDGE_CALLS

    _EDGE_CALLS = EDGE_CALLS
    return EDGE_CALLS


def after_failure(core: SessionCore, exc: KSError) -> Flow[None]:
    """What a failed call leaves: a cool-down after a rejected login, and the internal edge
    the answer names."""
    if isinstance(exc, COOLDOWN_ERRORS) and core.config.cooldown > 0:
        yield from remember(core, exc)
    for kind, internal in _INTERNAL_EDGE_FOR:
        if isinstance(exc, kind) and table.edge(core.snap.state, internal):
            yield from fire(core, internal, reason=type(exc).__name__)
            return


# --- the token store ---------------------------------------------------------------------------


def ensure_loaded(core: SessionCore) -> Flow[None]:
    """At the first trigger or request: take a usable session kept in the store."""
    if core.loaded:
        return
    record = yield from load_usable(core)
    core.loaded = True  # only once read: a failed read (StoreError) is tried again next time
    if record is not None and core.snap.state is table.INITIAL:
        yield from adopt(core, record, reason="store")


def adopt(core: SessionCore, record: StoredSession, reason: str) -> Flow[None]:
    """Take a session token made elsewhere (store, other process) via the restore edge.
    UnsafeRedirect for a record whose host is off this session's allow-list (loopback, for a
    session on a real host): its requests would take the token there."""
    check_url(record.host, *core.allowed)
    changes = {
        "host": record.host,
        "session_token": record.session_token,
        "generation": record.generation,
        "login_time": record.login_time,
    }
    yield from fire(core, "restore", reason=reason, changes=changes)


def stored_newer(core: SessionCore, generation: int) -> Flow[StoredSession | None]:
    """A stored session newer than ``generation`` this session can adopt, or None."""
    if table.edge(core.snap.state, "restore") is None:
        return None  # no restore edge (LoggedOut, OTT-issued): callers log in instead
    record = yield from load_usable(core)
    return record if record is not None and record.generation > generation else None


def load_usable(core: SessionCore) -> Flow[StoredSession | None]:
    """The stored session, unless its host is off this session's allow-list (a narrower
    allow-list than the writer's, or a foreign writer): adopted, it would refuse every request
    while looking Authenticated. It is left alone; the next walk logs in."""
    record = yield Load(core.key)
    if record is None:
        return None
    why = refusal(record.host, *core.allowed)
    if why is None:
        return record  # type: ignore[no-any-return]
    emit(core.log, "warning", "stored_session_ignored", session_id=core.session_id,
         host=shown_host(record.host), why=why)  # fmt: skip
    return None


def lock_wait_expired(timeout: float, whose: str = "another thread's call on this session "
                      "(connect, re-login or logout)") -> SessionExpired:  # fmt: skip
    """The error of a call that waited ``timeout`` for a lock."""
    return SessionExpired(
        f"gave up after {timeout:g}s waiting for {whose}", hint="raise relogin_timeout, or retry"
    )
