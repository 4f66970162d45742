"""What a session offers its observers (metrics, heartbeat, status page), kept apart from the
session's own logic: request hooks, the count of threads waiting on a re-login, and the
heartbeat's life cycle.

:class:`~session_fsm.session.KSSession` is an :class:`ObservedMachine`; a session that nobody
observes pays nothing (the hook list and the heartbeat are class-level None until used).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import contract
from .credentials import Credentials
from .logs import emit
from .machine import Callback, SessionMachine
from .stores import TokenStore
from .wire import Wire

if TYPE_CHECKING:
    from .heartbeat import Heartbeat, Waiter

#: ``hook(session, outcome)`` after each ``session.request``: ``"ok"`` or the error class name.
RequestHook = Callable[[Any, str], None]


class ObservedMachine(SessionMachine):
    """A SessionMachine with observer hooks and an optional heartbeat (see the module doc)."""

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
        super().__init__(
            credentials, host, wire=wire, store=store, clock=clock, logger=logger,
            on_transition=on_transition, **options,
        )  # fmt: skip
        if self.config.heartbeat is not None:
            from .heartbeat import Heartbeat

            self._heartbeat = Heartbeat(self, self.config.heartbeat, waiter=heartbeat_waiter)  # type: ignore[arg-type]
            self._heartbeat.start()

    # --- request hooks -------------------------------------------------------------------------

    def on_request(self, hook: RequestHook) -> RequestHook:
        """Register ``hook(session, outcome)``, called after every ``request`` (and the verbs)
        in the calling thread: ``outcome`` is ``"ok"`` or the raised error's class name
        (``"other"`` for a non-library exception). Requests sent with ``auth=session.auth`` are
        not seen. An exception in a hook is logged and swallowed. Returns the hook."""
        self._request_hooks = [*(self._request_hooks or ()), hook]
        return hook

    def _tell(self, hooks: list[RequestHook], outcome: str) -> None:
        for hook in hooks:
            try:
                hook(self, outcome)
            except Exception as exc:  # an observer must not break a request
                emit(self._log, "error", "request_hook_failed", session_id=self.session_id,
                     hook=getattr(hook, "__name__", "?"), error=type(exc).__name__)  # fmt: skip

    # --- waiters on a re-login -----------------------------------------------------------------

    def _wait_for_lock(self, timeout: float) -> bool:
        """Acquire the session lock for a renewal; while blocked, count as a waiter."""
        if self._lock.acquire(blocking=False):
            return True
        waiting: list[object] = self.__dict__.setdefault("_renewal_waiting", [])  # atomic
        me = object()
        waiting.append(me)
        try:
            return bool(self._lock.acquire(timeout=timeout))
        finally:
            waiting.remove(me)

    @property
    def renewal_waiters(self) -> int:
        """How many threads are blocked now waiting for this session's re-login to finish."""
        waiting = self.__dict__.get("_renewal_waiting")
        return len(waiting) if waiting else 0

    # --- heartbeat -----------------------------------------------------------------------------

    @property
    def heartbeat(self) -> Heartbeat | None:
        """The heartbeat (``heartbeat=SECONDS``), or None when off."""
        return self._heartbeat

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()

    def logout(self) -> None:
        """Authenticated -> LoggedOut: session_logout. Tokens are forgotten even if it fails.
        Stops the heartbeat first."""
        self._stop_heartbeat()
        super().logout()
