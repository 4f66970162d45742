"""Heartbeat: find a dead session before a trade does.

``KSSession(..., heartbeat=SECONDS)`` starts one :class:`Heartbeat` thread per session
(``AsyncKSSession`` one :class:`~session_fsm.aio.heartbeat.AsyncHeartbeat` task). When no
request has been made for ``SECONDS``, it sends one cheap authenticated call
(``heartbeat_call``, by default the read-only orders report) through the session's ordinary
request path. An expired session is therefore renewed in this thread, not when the next order
needs it. When it cannot be renewed (wrong password, gateway token rejected, secrets a human must
give), the failed transition reaches the ``on_transition`` callbacks at once and the session
stays out of Authenticated, which the status page and ``/healthz`` show.

Every decision (when a beat is due, whether there is anything to check, which call it makes,
what it records and logs) is :class:`Pulse`'s, shared by the thread and the task; they only
sleep and send.

The loop sleeps on a *waiter* (``wait(timeout) -> stopped?`` and ``set()``; by default a
``threading.Event``), which tests replace with one they step by hand, with an injected clock:
no test sleeps. ``close()`` and ``logout()`` stop the thread.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .core.view import SessionView
from .logs import emit
from .table import State

if TYPE_CHECKING:
    from .sync.session import KSSession

#: What :meth:`Heartbeat.beat` did: sent the call and it succeeded, it failed, or nothing to do.
BEAT_OK, BEAT_FAILED, BEAT_IDLE = "ok", "failed", "idle"

S = TypeVar("S", bound=SessionView)


class Waiter(Protocol):
    """How the heartbeat sleeps: ``threading.Event`` has this shape."""

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds; True when :meth:`set` was called (stop)."""

    def set(self) -> None:
        """Wake the sleeper for good (stop)."""


class Pulse(Generic[S]):
    """The decisions of one session's heartbeat, whichever driver sends its calls: the clock
    of the last request, when the next beat is due, whether a beat has anything to check and
    with which call, and what a beat's outcome records and logs."""

    def __init__(self, session: S, interval: float) -> None:
        # Weak: a session dropped without close() can still be collected; the loop then ends.
        self._session: weakref.ref[S] = weakref.ref(session)
        self.interval = interval
        self.beats = 0  # calls sent
        self.last_outcome: str | None = None  # "ok" or the error class of the last beat
        self._clock = session._clock
        self._last_used = self._clock()
        self._stopped = False
        session.on_request(self._used)

    def _used(self, session: Any, outcome: str) -> None:
        self._last_used = self._clock()

    def due(self) -> float:
        """When the next beat is due (clock time): ``interval`` after the last request."""
        return self._last_used + self.interval

    def _pause(self) -> float | None:
        """How long the loop sleeps before its next beat (0: beat now); None: the loop ends
        (stopped, or the session was collected)."""
        if self._stopped or self._session() is None:
            return None
        return max(0.0, self.due() - self._clock())

    def _begin(self) -> tuple[S, str, str] | None:
        """The session and the (method, path) a beat sends now; None when there is nothing to
        check (before the first login, after a logout, or the session is gone)."""
        session = self._session()
        if session is None:  # collected without close(): nothing left to watch
            self._stopped = True
            return None
        snap = session.snapshot()
        if snap.generation == 0 or snap.state is State.LOGGED_OUT:
            self._last_used = self._clock()
            return None
        method, path = session.config.heartbeat_call
        self.beats += 1
        return session, method, path

    def _end(self, session: S, error: Exception | None) -> str:
        """Record how a beat's call ended (``error``: what it raised) and say so."""
        if error is None:
            self.last_outcome = BEAT_OK
            return BEAT_OK
        self._last_used = self._clock()  # try again one interval later (cool-down applies)
        self.last_outcome = type(error).__name__
        emit(session._log, "warning", "heartbeat_failed", session_id=session.session_id,
             error=type(error).__name__, state=session.state.value)  # fmt: skip
        return BEAT_FAILED


class Heartbeat(Pulse["KSSession"]):
    """The heartbeat thread of one session (see the module docstring). Made by ``KSSession``."""

    def __init__(self, session: KSSession, interval: float, waiter: Waiter | None = None) -> None:
        super().__init__(session, interval)
        self._waiter: Waiter = waiter if waiter is not None else threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"session-fsm-heartbeat-{session.session_id}", daemon=True
        )

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (once)."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait (up to ``timeout``) for it to end. Idempotent."""
        self._stopped = True
        self._waiter.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while (pause := self._pause()) is not None:
            if pause > 0:
                if self._waiter.wait(pause):
                    return
                continue
            self.beat()

    def beat(self) -> str:
        """Check the session once now (the thread calls this when a beat is due).

        Nothing is sent before the first login or after a logout. Otherwise the call goes
        through ``session.request``: a 401 renews the session here, a passed proactive deadline
        too. Errors are logged (the failed transitions have already reached the callbacks)."""
        begun = self._begin()
        if begun is None:
            return BEAT_IDLE
        session, method, path = begun
        try:
            session.request(method, path).close()
        except Exception as exc:  # a KSError, or anything else: the thread must live on
            return self._end(session, exc)
        return self._end(session, None)
