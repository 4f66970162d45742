"""All mutable sandbox state: tokens, the clock offset, the fault queue and the counters.

Everything is guarded by one lock (the server is threaded); each method holds it only for a few
dictionary operations, never while sleeping or doing I/O.
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import pyotp

from session_fsm.contract import (
    FAULT_OTT_INVALID,
    FAULT_SESSION_EXPIRED,
    FAULT_WRONG_ACCESS_CODE,
    FAULT_WRONG_PASSWORD,
)

from .config import Account, SandboxConfig, Settings
from .faults import ApiFault, FaultSpec
from .orders import OrderBook
from .routes import Endpoint

_LOGGED_OUT = "You have been logged out. Login again"


@dataclass(frozen=True)
class Session:
    """A live trading session (what a successful 2FA created)."""

    token: str
    userid: str
    issued: float  # sandbox clock
    login_time: int  # epoch seconds (wall clock + offset)
    public_token: str


@dataclass
class _Ott:
    userid: str
    issued: float


@dataclass
class _Pending:
    spec: FaultSpec
    remaining: int


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class SandboxState:
    """The sandbox's accounts, tokens, clock, fault queue, settings, order book and statistics."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        #: Base URL (with ``/apim``) and port of the server serving this state, once bound.
        self.base_url: str | None = None
        self.port: int | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        #: Every user's orders, trades and positions.
        self.book = OrderBook(self.wall)
        self._clear()

    def _clear(self) -> None:
        self._offset = 0.0
        self._settings = self.config.settings()
        self.book.clear()
        self._faults: list[_Pending] = []
        self._otts: dict[str, _Ott] = {}
        self._user_ott: dict[str, str] = {}
        self._sessions: dict[str, Session] = {}
        self._user_session: dict[str, str] = {}
        self._logged_out: set[str] = set()
        self._calls: dict[str, int] = {}
        self._control_calls: dict[str, int] = {}
        self._logins = 0
        self._session_count = 0
        self._logouts = 0
        self._faults_served = 0
        self._logged_out_uses = 0

    # -- clock -------------------------------------------------------------------------------

    def now(self) -> float:
        """The sandbox clock: ``config.clock()`` plus the offset the control plane advanced."""
        return self.config.clock() + self._offset

    def wall(self) -> float:
        """Epoch seconds on the sandbox clock (wall clock plus the advanced offset)."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the sandbox clock forward by ``seconds``; return the total offset."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"can only advance the clock by finite seconds >= 0, not {seconds}")
        with self._lock:
            self._offset += seconds
            return self._offset

    def sleep(self, seconds: float) -> None:
        """Really sleep (an injected delay), cut short when the server shuts down."""
        self._closing.wait(seconds)

    def close(self) -> None:
        """Wake up sleeping requests; called when the server shuts down."""
        self._closing.set()

    # -- calls and faults ---------------------------------------------------------------------

    def begin_call(self, method: str, path: str, endpoint: Endpoint | None) -> FaultSpec | None:
        """Count an API call and pop the first queued fault it matches (FIFO), if any."""
        template = endpoint.template if endpoint is not None else None
        group = endpoint.group if endpoint is not None else None
        key = f"{method} {template or path}"
        with self._lock:
            self._calls[key] = self._calls.get(key, 0) + 1
            for i, pending in enumerate(self._faults):
                if pending.spec.matches(method, path, template, group):
                    pending.remaining -= 1
                    if pending.remaining <= 0:
                        del self._faults[i]
                    self._faults_served += 1
                    return pending.spec
        return None

    def count_control(self, method: str, name: str) -> None:
        """Count a control-plane call (kept apart from the API calls)."""
        key = f"{method} {name}"
        with self._lock:
            self._control_calls[key] = self._control_calls.get(key, 0) + 1

    @property
    def settings(self) -> Settings:
        """The current run-time settings."""
        return self._settings

    def change_settings(self, **changes: Any) -> Settings:
        """Switch some settings (see :class:`Settings`); return all of them."""
        unknown = set(changes) - set(Settings.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            self._settings = replace(self._settings, **changes).check()
            return self._settings

    def queue_fault(self, spec: FaultSpec) -> int:
        """Queue ``spec`` for its next ``count`` matching calls; return ``count``."""
        with self._lock:
            self._faults.append(_Pending(spec, spec.count))
        return spec.count

    # -- the session calls --------------------------------------------------------------------

    def login(self, userid: str, password: str) -> str:
        """Check the password and issue a new one-time token (the previous one dies)."""
        acc = self.config.account(userid)
        if acc is None or not _same(acc.password, password):
            raise ApiFault(401, FAULT_WRONG_PASSWORD, "Invalid userid or password", "Login failed")
        ott = secrets.token_urlsafe(24)
        with self._lock:
            old = self._user_ott.pop(userid, None)
            if old is not None:
                self._otts.pop(old, None)
            self._otts[ott] = _Ott(userid, self.now())
            self._user_ott[userid] = ott
            self._logins += 1
        return ott

    def two_fa(self, ott: str, userid: str, access_code: str) -> Session:
        """Redeem a one-time token with the access code; the user's previous session dies
        (unless the ``single_session`` setting is off)."""
        with self._lock:
            rec = self._otts.get(ott)
            now = self.now()
            if rec is not None and now - rec.issued >= self.config.ott_ttl:
                self._drop_ott(ott, rec.userid)
                rec = None
            if rec is None or rec.userid != userid:
                raise ApiFault(
                    401,
                    FAULT_OTT_INVALID,
                    "Invalid OneTimeToken",
                    "One time token is expired, already used or not issued to this userid",
                )
            acc = self.config.account(userid)
            if acc is None or not _access_code_ok(acc, access_code):
                raise ApiFault(401, FAULT_WRONG_ACCESS_CODE, "Invalid access code", "2FA failed")
            self._drop_ott(ott, userid)
            old = self._user_session.pop(userid, None)
            if old is not None and self._settings.single_session:
                self._sessions.pop(old, None)
            session = Session(
                token=secrets.token_urlsafe(32),
                userid=userid,
                issued=now,
                login_time=int(time.time() + self._offset),
                public_token=secrets.token_urlsafe(16),
            )
            self._sessions[session.token] = session
            self._user_session[userid] = session.token
            self._session_count += 1
            return session

    def session(self, token: str) -> Session:
        """The live session of ``token``, or a 401 session-expired fault."""
        with self._lock:
            return self._live(token)

    def logout(self, token: str, userid: str) -> None:
        """Invalidate ``token`` (which must belong to ``userid``)."""
        with self._lock:
            session = self._live(token)
            if session.userid != userid:
                raise ApiFault(
                    401, FAULT_SESSION_EXPIRED, _LOGGED_OUT, "Session token is not for this userid"
                )
            self._kill_session(session)
            self._logged_out.add(token)
            self._logouts += 1

    # -- control plane -----------------------------------------------------------------------

    def expire_sessions(self, userid: str | None = None) -> int:
        """Expire every live session token (or only ``userid``'s); return how many."""
        with self._lock:
            doomed = [s for s in self._sessions.values() if userid in (None, s.userid)]
            for session in doomed:
                self._kill_session(session)
            return len(doomed)

    def expire_otts(self, userid: str | None = None) -> int:
        """Expire every outstanding one-time token (or only ``userid``'s); return how many."""
        with self._lock:
            doomed = [(t, r.userid) for t, r in self._otts.items() if userid in (None, r.userid)]
            for token, owner in doomed:
                self._drop_ott(token, owner)
            return len(doomed)

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last reset (a fresh copy)."""
        with self._lock:
            return {
                "calls": dict(self._calls),
                "control_calls": dict(self._control_calls),
                "logins": self._logins,
                "sessions": self._session_count,
                "logouts": self._logouts,
                "faults_served": self._faults_served,
                "logged_out_token_uses": self._logged_out_uses,
            }

    def reset(self) -> None:
        """Forget faults, sessions, one-time tokens, orders, the clock offset and counters, and
        put the settings back to the configuration's."""
        with self._lock:
            self._clear()

    # -- helpers (lock held) -----------------------------------------------------------------

    def _live(self, token: str) -> Session:
        session = self._sessions.get(token)
        if session is None:
            if token in self._logged_out:
                self._logged_out_uses += 1
                reason = "Session token was invalidated by logout"
            else:
                reason = "Session token is expired or not valid"
            raise ApiFault(401, FAULT_SESSION_EXPIRED, _LOGGED_OUT, reason)
        if self.now() - session.issued >= self.config.session_ttl:
            self._kill_session(session)
            raise ApiFault(401, FAULT_SESSION_EXPIRED, _LOGGED_OUT, "Session token is expired")
        return session

    def _kill_session(self, session: Session) -> None:
        self._sessions.pop(session.token, None)
        if self._user_session.get(session.userid) == session.token:
            del self._user_session[session.userid]

    def _drop_ott(self, token: str, userid: str) -> None:
        self._otts.pop(token, None)
        if self._user_ott.get(userid) == token:
            del self._user_ott[userid]


def _access_code_ok(acc: Account, code: str) -> bool:
    if acc.access_code and _same(acc.access_code, code):
        return True
    return bool(acc.totp_secret) and pyotp.TOTP(str(acc.totp_secret)).verify(code, valid_window=1)
