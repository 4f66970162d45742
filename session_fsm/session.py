"""KSSession: the public session object. Connect, re-login policy, proactive refresh, requests.

Built on :class:`~session_fsm.machine.SessionMachine` (the guarded engine). The HTTP side of
re-login (the ``requests`` auth hook and the replay rule) is in :mod:`session_fsm.relogin`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import requests

from . import table
from .errors import (
    GatewayAuthError,
    InvalidTransition,
    KSError,
    MalformedAnswer,
    OneTimeTokenRejected,
    ReloginNeedsHuman,
    SessionExpired,
    WrongDomain,
)
from .logs import emit
from .observed import ObservedMachine
from .relogin import SessionAuth, send
from .snapshot import FAILED, Snapshot
from .table import State

#: The shortest wait before a failed soft refresh is tried again (the wait is a quarter of the
#: time left to the hard deadline, at least this).
SOFT_RETRY_MIN = 1.0


class KSSession(ObservedMachine):
    """One trading session with the KS Trade API, as a guarded state machine.

    ``KSSession(credentials, host=..., store=..., **options)``: see
    :class:`~session_fsm.config.SessionConfig` for the options. No network I/O until a trigger
    (``init``, ``login``, ``authenticate``, ``logout``, ``connect``) or a request is made. As a
    context manager it closes connections on exit and does not log out (like
    ``requests.Session``): a session kept in a store stays usable by other processes and the
    next run. Call :meth:`logout` first, or pass ``logout_on_exit=True``, to end it.
    """

    _auth: SessionAuth | None = None
    #: (generation, when) a failed soft refresh of that session is tried again.
    _refresh_retry: tuple[int, float] | None = None

    def connect(self) -> Snapshot:
        """Walk the table's shortest path from the current state to Authenticated.

        A guard with a remedy (a stale one-time token) is mended on the way; a rejected one-time
        token or a redirect to another host is recovered from once. With a shared token store,
        the walk happens under the store's lock and a session another process saved meanwhile
        is adopted instead (so N processes starting together log in once). Returns the snapshot.
        """
        with self._lock:
            self._ensure_loaded()
            if self._snap.state is State.AUTHENTICATED:
                return self._snap
            with self._store_lock():
                newer = self._stored_newer(self._snap.generation)
                if newer is not None:
                    self.adopt(newer, reason="store")
                    return self._snap
                return self._walk()

    def _store_lock(self) -> contextlib.AbstractContextManager[None]:
        return _held(self._store.lock(self.store_key(), self.config.relogin_timeout), self)

    def _walk(self) -> Snapshot:
        recovered: set[type[KSError]] = set()
        attempts: dict[str, int] = {}  # per trigger within this walk: the events' ``attempt``
        for _ in range(12):  # bounds the walk whatever the server does
            state = self._snap.state
            if state is table.TARGET:
                return self._snap
            path = table.path_to_target(state)
            if not path:
                raise InvalidTransition(
                    f"no path from {state.value} to Authenticated",
                    state=state.value,
                    trigger="connect",
                )
            step = path[0]
            failing = next((g for g in step.guards if not self._guard(g)), None)
            remedy = table.GUARDS[failing].remedy if failing else None
            if remedy and table.edge(state, remedy):
                attempts[remedy] = attempts.get(remedy, 0) + 1
                self._fire(remedy, attempt=attempts[remedy])
                continue
            try:
                attempts[step.trigger] = attempts.get(step.trigger, 0) + 1
                self._fire(step.trigger, attempt=attempts[step.trigger])
            except (OneTimeTokenRejected, WrongDomain) as exc:
                if type(exc) in recovered:
                    raise
                recovered.add(type(exc))
        raise InvalidTransition(
            "connect() did not reach Authenticated", state=self.state.value, trigger="connect"
        )

    # --- re-login ------------------------------------------------------------------------------

    def renew(
        self,
        seen_generation: int,
        reason: str,
        *,
        cause: KSError | None = None,
        call: str | None = None,
    ) -> Snapshot:
        """Make a new session unless one newer than ``seen_generation`` already exists.

        ``cause`` (the server's answer, e.g. a ``SessionExpired`` with its status and fault code)
        and ``call`` (the request that met it, ``"GET /reports/1.0/orders"``) go on the
        ``session_expired`` record, so the expiry says what caused it.

        Single flight: callers wait (up to ``relogin_timeout``) for whoever is renewing and then
        use its result. Across processes, the store's lock and record do the same: a newer
        session saved by another process is adopted instead of logging in again.
        """
        timeout = self.config.relogin_timeout
        if not self._wait_for_lock(timeout):
            raise SessionExpired(
                f"gave up after {timeout:g}s waiting for another thread's re-login",
                hint="raise relogin_timeout, or retry",
            )
        try:
            snap = self._snap
            if snap.generation != seen_generation and snap.state is State.AUTHENTICATED:
                return snap  # another thread renewed while we waited
            if snap.state is State.LOGGED_OUT:  # logged out meanwhile: never undo a logout
                raise InvalidTransition(
                    "requests need Authenticated, session is LoggedOut: call connect() first",
                    state=snap.state.value,
                    trigger="request",
                )
            with self._store_lock():
                newer = self._stored_newer(snap.generation)
                if newer is not None:
                    self.adopt(newer, reason="store")
                    return self._snap
                if snap.state is State.AUTHENTICATED:
                    self._fire("session_expired", reason=reason, cause=cause, call=call)
                if not self.config.auto_relogin:
                    raise SessionExpired(
                        "the session expired and auto_relogin is off", hint="call connect()"
                    )
                self._require_repeatable_secrets()
                return self._walk()
        finally:
            self._lock.release()

    def _require_repeatable_secrets(self) -> None:
        missing = [g for g in ("has_password", "has_access_code") if not self._guard(g)]
        if missing:
            exc = ReloginNeedsHuman(
                f"automatic re-login needs {' and '.join(table.GUARDS[g].needs for g in missing)}"
            )
            self._guards_seen = []  # the record must not carry an earlier trigger's guards
            self._record("connect", self._snap.state, FAILED, exc, reason="needs_human")
            raise exc

    def answer_refused(self, exc: MalformedAnswer) -> None:
        """A trading call's answer could not be parsed (e.g. a 401 whose fault is malformed):
        record it as a failed ``request`` transition (the state stays) and log its event."""
        state = self._snap.state
        self._record("request", state, FAILED, exc, reason="malformed_answer", guards=())

    def gateway_rejected(
        self, exc: GatewayAuthError | WrongDomain, sent_with: Snapshot | None = None
    ) -> None:
        """A trading call's Bearer token was rejected for good, or the user belongs to another
        host: take the internal edge (the next request re-initialises and logs in).

        ``sent_with``: the snapshot the rejected request went out with; when the session has
        moved on since (another thread met the same answer first), nothing more is done.
        """
        with self._lock:
            if sent_with is None or self._snap is sent_with:
                self._after_failure(exc)

    def deadlines(self, snap: Snapshot) -> tuple[float, float] | None:
        """(soft, hard) proactive re-login times of ``snap`` (None when off)."""
        if snap.login_time is None:
            return None
        return self.config.deadlines(snap.login_time)

    def ready(self) -> Snapshot:
        """The one snapshot a trading request is sent with, renewing first when needed.

        Before the first connect() and after logout() this raises InvalidTransition; after the
        library itself left Authenticated (expiry, rejection) it re-logs in when ``auto_relogin``.
        In the soft window before ``max_session_age`` one caller takes the ``refresh`` edge while
        the others carry on with the current (still Authenticated) snapshot.
        """
        if not self._loaded:
            with self._lock:
                self._ensure_loaded()
        snap = self._snap
        if snap.state is State.AUTHENTICATED:
            deadlines = self.deadlines(snap)
            if deadlines is None:
                return snap
            now = self._clock()
            if now < deadlines[0]:
                return snap
            if now >= deadlines[1]:
                return self.renew(snap.generation, "deadline")
            if not self.config.auto_relogin:
                return snap  # a proactive renewal is a re-login too: off (the hard one raises)
            retry = self._refresh_retry
            if retry is not None and retry[0] == snap.generation and now < retry[1]:
                return snap  # a failed refresh of this session is tried again later
            return self._refresh_soft(snap)
        if snap.generation == 0 or snap.state is State.LOGGED_OUT or not self.config.auto_relogin:
            raise InvalidTransition(
                f"requests need Authenticated, session is {snap.state.value}: call connect() first",
                state=snap.state.value,
                trigger="request",
            )
        return self.renew(snap.generation, "not_authenticated")

    def _refresh_soft(self, snap: Snapshot) -> Snapshot:
        """Renew ``snap`` ahead of its hard deadline without making anyone wait: the
        ``refresh`` edge (Authenticated -> Authenticated) is taken by whoever gets the lock; the
        others, and this caller if the refresh fails, carry on with ``snap``."""
        if not self._lock.acquire(blocking=False):
            return snap  # someone is renewing (or logging out): carry on with the current token
        try:
            if self._snap is snap:
                return self._refresh_locked(snap)
        finally:
            self._lock.release()
        return self.ready()  # the session moved meanwhile: decide again on its new snapshot

    def _refresh_locked(self, snap: Snapshot) -> Snapshot:
        try:
            with self._store_lock():
                newer = self._stored_newer(snap.generation)
                if newer is not None:
                    self.adopt(newer, reason="store")
                else:
                    self._fire("refresh", reason="soft_deadline")
            return self._snap
        except KSError as exc:
            current = self._snap
            if current is not snap:  # the failure left Authenticated (gateway token rejected,
                raise  # user on another host): the old token is no use any more
            deadlines = self.deadlines(snap)
            assert deadlines is not None  # a soft window implies deadlines
            now = self._clock()
            wait = max(SOFT_RETRY_MIN, (deadlines[1] - now) / 4)
            self._refresh_retry = (snap.generation, now + wait)
            emit(self._log, "warning", "soft_refresh_failed", session_id=self.session_id,
                 error=type(exc).__name__, retry_in=round(wait, 3))  # fmt: skip
            return snap

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
            self._auth = SessionAuth(self)
        return self._auth

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send an authorised trading request relative to the session's host.

        Re-logs in once on an expired session and replays when safe (see
        :func:`~session_fsm.relogin.replayable`); raises the typed error for any non-2xx answer
        (the response is on the error as ``.response``).
        """
        hooks = self._request_hooks
        if hooks is None:
            return send(self, method, path, **kwargs)
        try:
            response = send(self, method, path, **kwargs)
        except Exception as exc:
            self._tell(hooks, type(exc).__name__ if isinstance(exc, KSError) else "other")
            raise
        self._tell(hooks, "ok")
        return response

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
        self._stop_heartbeat()
        self._wire.close()

    def __enter__(self) -> KSSession:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.config.logout_on_exit and self._snap.state is State.AUTHENTICATED:
                self.logout()
        finally:
            self.close()

    def diagram(self) -> str:
        """Mermaid of the machine, current state highlighted, last transition marked."""
        from .diagrams import mermaid

        last = self._history[-1] if self._history else None
        return mermaid(highlight=self._snap.state, last=last)


@contextlib.contextmanager
def _held(lock: contextlib.AbstractContextManager[bool], session: KSSession) -> Iterator[None]:
    """Enter a store lock; a lock not acquired in time is a SessionExpired naming the wait."""
    with lock as got:
        if not got:
            timeout = session.config.relogin_timeout
            raise SessionExpired(
                f"gave up after {timeout:g}s waiting for another process's login",
                hint="raise relogin_timeout, or check the token store",
            )
        yield
