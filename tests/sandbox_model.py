"""The sandbox as the property tests' model sees it, and the client's HTTP layer in front of it.

One user's one-time token and session (a new login kills the old one-time token, a new 2FA the
old session), the clock the control plane advances, the queued faults and the counters that
``sandbox.control.stats()`` reports; in front of it, urllib3's retries as ``wire`` documents
them (session calls on 429/503 and connection faults, idempotent trading calls on 429/5xx and
connection faults, trading POSTs never) with Retry-After honoured up to its cap.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from session_fsm import contract as c

ORDERS, ORDER = c.ORDERS_REPORT[1], c.ORDER_NORMAL[1]
#: Timeouts of the sessions under test, and the injected delay that outlasts the read one.
#: The read timeout is judged only by the "timeout" fault kind (a RequestTimeout the model
#: predicts); every other answer must merely beat it, and on a loaded machine (load average
#: 5-15 on 2 cores, other processes' tests alongside) a scheduling stall can hold a loopback
#: answer for most of a second: 0.3 s was beaten (a spurious RequestTimeout, a retried login
#: the model did not predict), and so was 0.8 s. 2 s leaves a stall 2.5x that room. The cost
#: is paid once per timeout fault served, so the property test draws that kind a sixteenth as
#: often as each other kind (FAULT_DRAW in tests/test_properties.py).
#: The delay outlasts it by 0.5 s, so the client gives up before the sandbox drops the line.
TIMEOUT = (2.0, 2.0)
TIMEOUT_DELAY = 2.5

#: Every fault kind the world injects, as keyword arguments of ``sandbox.control.fault``.
FAULT_KINDS: dict[str, dict[str, object]] = {
    "400": {"status": 400}, "500": {"status": 500}, "503": {"status": 503}, "504": {"status": 504},
    "401-gateway": {"status": 401, "code": c.FAULT_GATEWAY_TOKEN},
    "401-expired": {"status": 401, "code": c.FAULT_SESSION_EXPIRED},
    "401-ott": {"status": 401, "code": c.FAULT_OTT_INVALID},
    "401-bare": {"status": 401, "code": 0},
    "403-wrong-domain": {"status": 403, "code": c.FAULT_WRONG_DOMAIN},
    "403-not-authorized": {"status": 403, "code": c.FAULT_NOT_AUTHORIZED},
    "429": {"status": 429, "retry_after": 2}, "429-over-cap": {"status": 429, "retry_after": 120},
    "malformed": {"malformed": True}, "missing-field": {"missing_field": True},
    "drop": {"drop": True}, "timeout": {"delay": TIMEOUT_DELAY, "drop": True},
}  # fmt: skip
#: Where a fault lands: the next API call of any kind, or the next call of one route.
TARGETS: dict[str, str] = {
    "next-call": "/*", "init": c.SESSION_INIT[1], "login": c.LOGIN_USERID[1],
    "2fa": c.TWO_FA_ACCESSCODE[1], "logout": c.SESSION_LOGOUT[1], "get": ORDERS, "post": ORDER,
}  # fmt: skip
CALL_OF_PATH = {TARGETS[k]: k for k in ("init", "login", "2fa", "logout")}
METHOD_OF_PATH = {path: method for method, path in (
    c.SESSION_INIT, c.LOGIN_USERID, c.TWO_FA_ACCESSCODE, c.SESSION_LOGOUT)}  # fmt: skip

# The client's retry layer (urllib3 under requests, as wire.py documents it).
RETRIES, RETRY_AFTER_CAP = 3, 30
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_SESSION_RETRY = frozenset({429, 503})
_TRADING_RETRY = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Answer:
    """What one HTTP attempt got: a status (and fault code), or a transport error."""

    status: int = 200
    code: int | None = None
    transport: str | None = None
    retry_after: int | None = None
    body: str = "ok"  # "ok", "malformed" (not JSON) or "missing" (required field left out)
    token: int | None = None


def default_code(status: int) -> int:
    """The fault code the sandbox puts on an injected status when none (or 0) is given."""
    other = c.FAULT_INTERNAL if 500 <= status <= 599 else 0
    return {429: c.FAULT_RATE_LIMITED, 400: c.FAULT_BAD_REQUEST}.get(status, other)


class Server:
    """The sandbox as the model sees it (one user's OTT and session, faults, clock, counters),
    and the client's HTTP layer in front of it (urllib3 retries, honoured Retry-After)."""

    def __init__(self, ott_ttl: float, session_ttl: float) -> None:
        self.ott_ttl, self.session_ttl = ott_ttl, session_ttl
        self.now = 0.0  # the offset the control plane advanced (real time is negligible)
        self.ott: int | None = None
        self.ott_at = 0.0
        self.sess: int | None = None
        self.sess_at = 0.0
        self.logged_out: dict[int, str] = {}  # token -> the session that logged it out
        self.faults: list[tuple[str, str, dict[str, object]]] = []  # (kind, path, spec)
        self.calls: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.sleeps: list[float] = []  # the client's retry sleeps
        self._ids = itertools.count(1)

    def stats(self) -> dict[str, object]:
        """The counters, shaped like ``sandbox.control.stats()``."""
        keys = ("logins", "sessions", "logouts", "faults_served", "logged_out_token_uses")
        return {"calls": dict(+self.calls), **{k: self.counts[k] for k in keys}}

    def call(self, method: str, path: str, ott: int | None, token: int | None, who: str
             ) -> Answer:  # fmt: skip
        """One request reaching the sandbox: count it, apply the first matching fault, answer."""
        self.calls[f"{method} {path}"] += 1
        spec: dict[str, object] = {}
        for i, (_kind, where, fault) in enumerate(self.faults):
            if where == "/*" or where == path:
                spec = fault
                del self.faults[i]
                self.counts["faults_served"] += 1
                break
        if spec.get("drop"):
            return Answer(transport="RequestTimeout" if spec.get("delay") else "NetworkError")
        retry_after: Any = spec.get("retry_after")
        if spec.get("malformed"):
            return Answer(body="malformed", retry_after=retry_after)
        status: Any = spec.get("status")
        if status:
            code: Any = spec.get("code") or default_code(status)
            return Answer(status, code, retry_after=retry_after)
        ans = self._process(path, ott, token, who)  # token set: the call succeeded on the server
        return replace(ans, body="missing") if spec.get("missing_field") and ans.token else ans

    def _process(self, path: str, ott: int | None, token: int | None, who: str) -> Answer:
        call = CALL_OF_PATH.get(path, "trading")
        if call == "init":
            return Answer()
        if call == "login":  # a new one-time token; the user's previous one dies
            self.ott, self.ott_at = next(self._ids), self.now
            self.counts["logins"] += 1
            return Answer(token=self.ott)
        if call == "2fa":
            if ott is not None and ott == self.ott and self.now - self.ott_at >= self.ott_ttl:
                self.ott = None
            if ott is None or ott != self.ott:
                return Answer(401, c.FAULT_OTT_INVALID)
            self.ott, self.sess, self.sess_at = None, next(self._ids), self.now
            self.counts["sessions"] += 1
            return Answer(token=self.sess)
        if not self._live(token, who):
            return Answer(401, c.FAULT_SESSION_EXPIRED)
        if call == "logout":
            self.sess = None
            self.logged_out[token or 0] = who
            self.counts["logouts"] += 1
        return Answer(token=token)

    def _live(self, token: int | None, who: str) -> bool:
        if token is None or token != self.sess:
            if token in self.logged_out:
                self.counts["logged_out_token_uses"] += 1
                # A session never sends a token it logged out itself (the other one may).
                assert self.logged_out[token] != who, f"{who} sent the token it logged out"
            return False
        if self.now - self.sess_at >= self.session_ttl:
            self.sess = None
            return False
        return True

    def exchange(
        self, method: str, path: str, ott: int | None, token: int | None, who: str
    ) -> Answer:
        """One client request through urllib3's retries (sleeps recorded): the last answer."""
        session_call = path in CALL_OF_PATH
        retry_methods = IDEMPOTENT | {"POST"} if session_call else IDEMPOTENT
        statuses = _SESSION_RETRY if session_call else _TRADING_RETRY
        for attempt in range(RETRIES + 1):
            ans = self.call(method, path, ott, token, who)
            retry = method in retry_methods and (ans.transport or ans.status in statuses)
            if not retry or attempt == RETRIES:
                return ans
            if ans.retry_after:  # honoured on any retried answer that carries it, capped
                self.sleeps.append(float(min(ans.retry_after, RETRY_AFTER_CAP)))
        raise AssertionError("unreachable")
