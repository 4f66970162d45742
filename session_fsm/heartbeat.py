"""Heartbeat: find a dead session before a trade does.

``KSSession(..., heartbeat=SECONDS)`` starts one :class:`Heartbeat` thread per session. When no
request has been made for ``SECONDS``, it sends one cheap authenticated call
(``heartbeat_call``, by default the read-only orders report) through the session's ordinary
request path. An expired session is therefore renewed in this thread, not when the next order
needs it. When it cannot be renewed (wrong password, gateway token rejected, secrets a human must
give), the failed transition reaches the ``on_transition`` callbacks at once and the session
stays out of Authenticated, which the status page and ``/healthz`` show.

The loop sleeps on a *waiter* (``wait(timeout) -> stopped?`` and ``set()``; by default a
``threading.Event``), which tests replace with one they step by hand, with an injected clock:
no test sleeps. ``close()`` and ``logout()`` stop the thread.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Protocol

from .logs import emit
from .table import State

if TYPE_CHECKING:
    from .sync.session import KSSession

#: What :meth:`Heartbeat.beat` did: sent the call and it succeeded, it failed, or nothing to do.
BEAT_OK, BEAT_FAILED, BEAT_IDLE = "ok", "failed", "idle"


class Waiter(Protocol):
    """How the heartbeat sleeps: ``threading.Event`` has this shape."""

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds; True when :meth:`set` was called (stop)."""

    def set(self) -> None:
        """Wake the sleeper for good (stop)."""


class Heartbeat:
    """The heartbeat of one session (see the module docstring). Made by ``KSSession``."""

    def __init__(self, session: KSSession, interval: float, waiter: Waiter | None = None) -> None:
        # Weak: a session dropped without close() can still be collected; the thread then ends.
        self._session = weakref.ref(session)
        self.interval = interval
        self.beats = 0  # calls sent
        self.last_outcome: str | None = None  # "ok" or the error class of the last beat
        self._waiter: Waiter = waiter if waiter is not None else threading.Event()
        self._clock = session._clock
        self._last_used = self._clock()
        self._stopped = False
        session.on_request(self._used)
        self._thread = threading.Thread(
            target=self._run, name=f"session-fsm-heartbeat-{session.session_id}", daemon=True
        )

    def _used(self, session: KSSession, outcome: str) -> None:
        self._last_used = self._clock()

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

    def due(self) -> float:
        """When the next beat is due (clock time): ``interval`` after the last request."""
        return self._last_used + self.interval

    def _run(self) -> None:
        while not self._stopped and self._session() is not None:
            wait = self.due() - self._clock()
            if wait > 0:
                if self._waiter.wait(wait):
                    return
                continue
            self.beat()

    def beat(self) -> str:
        """Check the session once now (the thread calls this when a beat is due).

        Nothing is sent before the first login or after a logout. Otherwise the call goes
        through ``session.request``: a 401 renews the session here, a passed proactive deadline
        too. Errors are logged (the failed transitions have already reached the callbacks)."""
        session = self._session()
        if session is None:  # collected without close(): nothing left to watch
            self._stopped = True
            return BEAT_IDLE
        snap = session.snapshot()
        if snap.generation == 0 or snap.state is State.LOGGED_OUT:
            self._last_used = self._clock()
            return BEAT_IDLE
        method, path = session.config.heartbeat_call
        self.beats += 1
        try:
            session.request(method, path).close()
        except Exception as exc:  # a KSError, or anything else: the thread must live on
            self._last_used = self._clock()  # try again one interval later (cool-down applies)
            self.last_outcome = type(exc).__name__
            emit(session._log, "warning", "heartbeat_failed", session_id=session.session_id,
                 error=type(exc).__name__, state=session.state.value)  # fmt: skip
            return BEAT_FAILED
        self.last_outcome = BEAT_OK
        return BEAT_OK
