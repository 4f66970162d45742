"""The reference model of KSSessions talking to the sandbox: the oracle of the property tests.

Whether a trigger has an edge, its guards and the paths connect() walks come from the one table
(:mod:`session_fsm.table`). This module adds only the expected effects, written from the wire
contract and independently of the code under test (it never imports machine, session, relogin
or wire): where a call's result belongs (so a wrong destination in the table shows), which
error an answer maps to, which internal edge an error takes, what the shared token store holds.
The server and the retries are in :mod:`tests.sandbox_model`. Together they predict every
step's records, error, HTTP calls, sleeps and server counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from session_fsm import contract as c
from session_fsm import table
from session_fsm.table import State
from tests.sandbox_model import (
    IDEMPOTENT,
    METHOD_OF_PATH,
    TARGETS,
    Answer,
    Server,
)

U, I, O, A, L = (  # noqa: E741 -- the table's own one-letter names
    State.UNINITIALISED, State.INITIALISED, State.OTT_ISSUED, State.AUTHENTICATED, State.LOGGED_OUT
)  # fmt: skip
OK, REFUSED, FAILED = "ok", "refused", "failed"
_WIRE_CALL = {"session_init": "init", "login_with_user_id": "login",
              "generate_session2_fa": "2fa", "session_logout": "logout",
              "refresh_session": "refresh"}  # fmt: skip
#: Triggers that call the login endpoints, refused during a cool-down.
_LOGIN_TRIGGERS = ("init", "login", "authenticate", "refresh")
OTT_TTL = 300.0  # the sessions' ott_ttl (the default)
_CODE_ERRORS = {
    c.FAULT_GATEWAY_TOKEN: "GatewayAuthError", c.FAULT_SESSION_EXPIRED: "SessionExpired",
    c.FAULT_OTT_INVALID: "OneTimeTokenRejected", c.FAULT_WRONG_DOMAIN: "WrongDomain",
    c.FAULT_NOT_AUTHORIZED: "NotAuthorized",
}  # fmt: skip
_BARE_401 = {"init": "GatewayAuthError", "login": "LoginRejected", "2fa": "LoginRejected"}
#: Where the session must be after an edge, by what it produced (the contract, not the table,
#: so that a wrong destination in the table is caught): init gives a host, login a one-time
#: token, 2FA a session token, logout ends it; the internal edges by what their error means.
_MEANS = {
    "init": I, "login": O, "authenticate": A, "logout": L, "restore": A,
    "refresh": A,  # a new session token made from a live session: it never stops being one
    "session_expired": I, "ott_rejected": I, "gateway_rejected": U, "redirect_changed": U,
}  # fmt: skip
_COOLDOWN_ERRORS = frozenset({"LoginRejected", "NotAuthorized", "GatewayAuthError"})
_INTERNAL_EDGE_FOR = {"GatewayAuthError": "gateway_rejected", "WrongDomain": "redirect_changed",
                      "OneTimeTokenRejected": "ott_rejected"}  # fmt: skip


class Store:
    """The token store sessions share: one record (token id, generation, login time), and the
    login cool-down a session keeps there (error, until), which every session sharing the
    store honours until it ends or a ``reset_cooldown()`` forgets it (a session reads it there
    at each login trigger and keeps no copy, so a reset by any one of them holds for all)."""

    def __init__(self) -> None:
        self.record: tuple[int, int, float] | None = None
        self.cooldown: tuple[str, float] | None = None


class Predicted(Exception):
    """An error the model expects the session to raise, by class name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class Rec:
    """A predicted TransitionRecord (the fields the tests compare)."""

    trigger: str
    src: State
    dst: State
    outcome: str
    error: str | None = None
    guards: tuple[tuple[str, bool], ...] = ()
    reason: str | None = None
    generation: int = 0


def error_of(call: str, ans: Answer) -> str | None:
    """The error class a client must raise for ``ans`` to ``call``; None when it is a success."""
    if ans.transport:
        return ans.transport
    if ans.status == 200:
        if call != "trading" and ans.body == "malformed":
            return "MalformedAnswer"
        return "MalformedAnswer" if call in ("login", "2fa") and ans.body == "missing" else None
    if ans.code in _CODE_ERRORS:
        return _CODE_ERRORS[ans.code]
    if ans.status == 401:
        return _BARE_401.get(call, "SessionExpired")
    if ans.status in (500, 502, 503, 504):
        return "ServiceUnavailable"
    return {400: "BadRequest", 429: "RateLimited"}.get(ans.status, "UnexpectedStatus")


class Client:
    """A KSSession as the model predicts it, on ``server`` with token store ``store``."""

    def __init__(
        self, name: str, server: Server, store: Store, clock: float, **options: Any
    ) -> None:
        """``options``: the session's ``cooldown``, ``auto_relogin`` and ``replay_posts``."""
        self.name, self.server, self.store = name, server, store
        self.clock = clock
        self.cooldown_s: float = options["cooldown"]
        self.auto_relogin: bool = options["auto_relogin"]
        self.replay_posts: bool = options["replay_posts"]
        #: With an access_token_provider, a rejected Bearer token (900901) is replaced once
        #: (the provider is asked) and the call made again, instead of failing.
        self.provider: bool = options.get("provider", False)
        #: Whether the provider gives a token when asked (else it raises: the Bearer stays
        #: rejected, a GatewayAuthError, and the gateway_rejected edge).
        self.provider_ok = True
        self.provider_calls = 0
        self.max_age: float | None = options.get("max_session_age")
        self.soft_window: float = options.get("soft_window", 60.0)
        self.login_time: float | None = None
        self.state = table.INITIAL
        self.gen = 0
        self.ott: int | None = None
        self.ott_at: float | None = None
        self.token: int | None = None
        #: (generation, time): a soft refresh of that session failed and is tried again then;
        #: until then (and the hard deadline) requests carry on with its token.
        self.refresh_retry: tuple[int, float] | None = None
        #: Another thread is renewing or refreshing: a request in the soft window does not wait
        #: for it (nor refresh itself), it goes with the current token.
        self.busy = False
        self.password = self.access_code = True
        self.cooldown: tuple[str, float] | None = None
        self.loaded = False  # the store is read on the first trigger, connect or request
        self.records: list[Rec] = []
        self.replays: list[tuple[str, str, int]] = []  # (method, path, generation) replayed
        #: Logins the server did that no ``login`` record shows: an answer the client rejected,
        #: or the login call inside the refresh edge.
        self.ghost_logins = 0

    # --- the table, guards and internal edges ------------------------------------------------

    def guard(self, name: str) -> bool:
        """A guard's value now (by its name in the table)."""
        if name == "ott_fresh":  # younger than the session's ott_ttl (default 300 s)
            return self.ott_at is not None and self.clock - self.ott_at < OTT_TTL
        held = {"has_password": self.password, "has_access_code": self.access_code,
                "has_ott": self.ott is not None}  # fmt: skip
        return held[name]

    def may(self, trigger: str) -> bool:
        """What ``session.may(trigger)`` must say."""
        e = table.edge(self.state, trigger)
        return e is not None and not e.internal and all(self.guard(g) for g in e.guards)

    def _rec(self, trigger: str, src: State, outcome: str, error: str | None = None, **kw: Any
             ) -> None:  # fmt: skip
        self.records.append(
            Rec(trigger, src, self.state, outcome, error, generation=self.gen, **kw)
        )

    def fire(self, trigger: str, reason: str | None = None, cause: str | None = None) -> None:
        """A trigger through the table: refusal, cool-down, guards, the wire call, the move."""
        if trigger != "restore":
            self.ensure_loaded()
        src = self.state
        e = table.edge(src, trigger)
        if trigger == "logout" and e is None:  # not logged in: nothing to do, recorded, no error
            self._rec(trigger, src, REFUSED, reason="not logged in")
            return
        if e is None:
            self._rec(trigger, src, REFUSED, reason=reason or "no edge")
            raise Predicted("InvalidTransition")
        kept = self.cooldown_now() if trigger in _LOGIN_TRIGGERS else None
        if kept is not None:
            self._rec(trigger, src, REFUSED, kept[0], reason="cooldown")
            raise Predicted(kept[0])
        seen: list[tuple[str, bool]] = []
        for g in e.guards:
            seen.append((g, self.guard(g)))
            if not seen[-1][1]:
                self._rec(trigger, src, REFUSED, guards=tuple(seen), reason=f"guard {g}")
                raise Predicted("GuardFailed")
        try:
            call = _WIRE_CALL[e.call] if e.call else None
            if call == "refresh":
                self._refresh_call()  # (raises its error: nothing is deferred)
                deferred = None
            else:
                deferred = self._wire(call) if call else None
        except Predicted as exc:
            self._rec(trigger, src, FAILED, exc.name, guards=tuple(seen), reason=reason)
            self.after_failure(exc.name)
            raise
        self.move(_MEANS[trigger])
        self._rec(trigger, src, FAILED if deferred else OK, deferred or cause, guards=tuple(seen),
                  reason=reason)  # fmt: skip
        if deferred:
            raise Predicted(deferred)

    def cooldown_now(self) -> tuple[str, float] | None:
        """The cool-down a login trigger meets now (None: it may go on). This session's own,
        while it lasts; else the one the shared store keeps (another session's, or an earlier
        run's), while it lasts. The store is asked afresh each time: what a session read there
        is not its own (a refused trigger changes nothing), so once anyone resets the store the
        next trigger goes on; and its own cool-down, which it kept in the store too, ends with
        a reset there (by another session, or the CLI) as well."""
        if self.cooldown is not None and (
            self.store.cooldown is None or self.clock >= self.cooldown[1]
        ):
            self.cooldown = None  # reset in the store, or over
        kept = self.cooldown or self.store.cooldown
        return kept if kept is not None and self.clock < kept[1] else None

    def reset_cooldown(self) -> None:
        """``session.reset_cooldown()``: its own cool-down and the one kept in the store."""
        self.cooldown = self.store.cooldown = None

    def move(self, dest: State) -> None:
        """Enter ``dest``: tokens that do not belong to it are dropped."""
        self.state = dest
        if dest is not A:
            self.token = None
        if dest is not O:
            self.ott = self.ott_at = None

    def after_failure(self, error: str) -> None:
        """Cool-down after some errors; the internal edge an error takes, if the table has it."""
        if error in _COOLDOWN_ERRORS and self.cooldown_s > 0:
            self.cooldown = self.store.cooldown = (error, self.clock + self.cooldown_s)
        internal = _INTERNAL_EDGE_FOR.get(error)
        if internal and table.edge(self.state, internal):
            self.fire(internal, reason=error)

    def _wire(self, call: str) -> str | None:
        """The edge's call; raises its error, applies its effect, returns a deferred error."""
        path = TARGETS[call]
        for attempt in range(2):  # a second time only after a new Bearer token from the provider
            ans = self.server.exchange(METHOD_OF_PATH[path], path, self.ott, self.token, self.name)
            if call == "login" and ans.body == "missing":
                self.ghost_logins += 1
            err = error_of(call, ans)
            if err != "GatewayAuthError" or call == "logout" or not self.provider or attempt:
                break  # (the new token rejected too: the provider is not asked twice)
            self.provider_calls += 1
            if not self.provider_ok:
                break  # the edge fails with a GatewayAuthError (the provider's)
        if call == "logout":  # forgotten whatever the answer; never another's newer session
            if self.store.record and self.store.record[1] <= self.gen:
                self.store.record = None
            return None if err == "SessionExpired" else err  # already gone counts as done
        if err:
            raise Predicted(err)
        if call == "login":
            self.ott, self.ott_at = ans.token, self.clock
        elif call == "2fa":
            self.gen = max(self.gen, self.store.record[1] if self.store.record else 0) + 1
            self.token = ans.token
            self.login_time = self.clock
            self.store.record = (ans.token or 0, self.gen, self.clock)
        return None

    def _refresh_call(self) -> None:
        """The refresh edge's calls: login, then 2FA with that one-time token, which never
        leaves the call (the session holds its old session token throughout)."""
        try:
            self._wire("login")
            self.ghost_logins += 1
            self._wire("2fa")
        finally:
            self.ott = self.ott_at = None

    # --- connect, re-login, requests -----------------------------------------------------------

    def ensure_loaded(self) -> None:
        """Once: a session still Uninitialised takes what the store holds (restore)."""
        if not self.loaded:
            self.loaded = True
            if self.store.record and self.state is table.INITIAL:
                self._adopt()

    def _adopt(self) -> None:
        self.token, self.gen, self.login_time = self.store.record or (0, 0, 0.0)
        self.fire("restore", reason="store")

    def _adopt_newer(self) -> bool:
        # Only a newer session, and only where the table has a restore edge (else: log in).
        rec = self.store.record
        if not table.edge(self.state, "restore") or not rec or rec[1] <= self.gen:
            return False
        self._adopt()
        return True

    def connect(self) -> None:
        """``session.connect()``."""
        self.ensure_loaded()
        if self.state is A or self._adopt_newer():
            return
        self.walk()

    def walk(self) -> None:
        """Follow the table's shortest path to Authenticated, mending a guard with a remedy."""
        recovered: set[str] = set()
        for _ in range(12):
            if self.state is table.TARGET:
                return
            path = table.shortest_path(self.state, [table.TARGET])
            assert path, "every state reaches Authenticated"
            step = path[0]
            failing = next((g for g in step.guards if not self.guard(g)), None)
            remedy = table.GUARDS[failing].remedy if failing else None
            if remedy and table.edge(self.state, remedy):
                self.fire(remedy)
                continue
            try:
                self.fire(step.trigger)
            except Predicted as exc:
                if exc.name not in ("OneTimeTokenRejected", "WrongDomain") or exc.name in recovered:
                    raise
                recovered.add(exc.name)
        raise Predicted("InvalidTransition")

    def renew(self, reason: str, cause: str | None = None) -> None:
        """Re-login: session_expired (with the error that caused it, if a server answer did),
        then (if allowed and the secrets are there) the walk."""
        if self._adopt_newer():
            return
        if self.state is A:
            self.fire("session_expired", reason=reason, cause=cause)
        if not self.auto_relogin:
            raise Predicted("SessionExpired")
        if not (self.password and self.access_code):
            self._rec("connect", self.state, FAILED, "ReloginNeedsHuman", reason="needs_human")
            raise Predicted("ReloginNeedsHuman")
        self.walk()

    def ready(self) -> int | None:
        """Before a request: Authenticated (refreshed in the soft window, renewed at the hard
        deadline), or a re-login when the library itself left Authenticated. Returns the token
        to send (read once per request)."""
        self.ensure_loaded()
        if self.state is A:
            if self.max_age is None or self.login_time is None:
                return self.token
            hard = self.login_time + self.max_age
            if self.clock >= hard:
                self.renew("deadline")
                return self.token
            if self.clock < hard - self.soft_window or not self.auto_relogin:
                return self.token
            retry = self.refresh_retry
            if retry is not None and retry[0] == self.gen and self.clock < retry[1]:
                return self.token
            if self.busy:
                return self.token
            return self._refresh_soft(hard)
        if self.gen == 0 or self.state is L or not self.auto_relogin:
            raise Predicted("InvalidTransition")
        self.renew("not_authenticated")
        return self.token

    def _refresh_soft(self, hard: float) -> int | None:
        """The refresh edge (Authenticated -> Authenticated), or a newer stored session adopted.
        A failed refresh keeps the old token and is tried again after a quarter of the time
        left (at least a second), unless the failure itself left Authenticated."""
        gen, token = self.gen, self.token
        try:
            if not self._adopt_newer():
                self.fire("refresh", reason="soft_deadline")
        except Predicted:
            if self.state is not A:
                raise  # the gateway token was rejected, or the user moved: no old token left
            self.refresh_retry = (gen, self.clock + max(1.0, (hard - self.clock) / 4))
            return token
        return self.token

    def request(self, method: str, path: str) -> None:
        """``session.request(method, path)``: re-login once on an expired session, replay."""
        token = self.ready()  # one snapshot: the host and the token the request goes with
        ans = self.server.exchange(method, path, None, token, self.name)
        err = error_of("trading", ans)
        if ans.status == 401 and err in ("GatewayAuthError", "SessionExpired"):
            if err == "SessionExpired":
                self.renew("expired", cause=err)
            elif self.provider:  # one provider call per rejected Bearer token
                self.provider_calls += 1
                if not self.provider_ok:  # the rejected Bearer stays: gateway_rejected
                    self.after_failure(err)
                    raise Predicted(err)
            else:
                self.after_failure(err)
                raise Predicted(err)
            if method not in IDEMPOTENT and not self.replay_posts:
                raise Predicted("NotReplayable")
            if err == "SessionExpired":
                self.replays.append((method, path, self.gen))
            ans = self.server.exchange(method, path, None, self.token, self.name)
            err = error_of("trading", ans)
            if err == "GatewayAuthError" and ans.status == 401:
                self.after_failure(err)
        if err == "WrongDomain":
            self.after_failure(err)
        if err:
            raise Predicted(err)

    # --- concurrency, as the single-flight rules order it -----------------------------------

    def bearer_storm(self, n: int, method: str, path: str) -> list[str | None]:
        """``n`` threads send ``method path`` with one Bearer token (one Bearer generation) and
        every one of them is answered 900901 before any goes on. The provider is asked once for
        that generation, whatever ``n``: with a token, every request is sent again with it; when
        it fails, the session takes gateway_rejected once and every request raises
        GatewayAuthError. Returns each thread's error (None: it succeeded)."""
        token = self.ready()
        for _ in range(n):
            ans = self.server.exchange(method, path, None, token, self.name)
            assert (ans.status, ans.code) == (401, c.FAULT_GATEWAY_TOKEN), "a storm of 900901"
        if not self.provider:
            self.after_failure("GatewayAuthError")
            return ["GatewayAuthError"] * n
        self.provider_calls += 1
        if not self.provider_ok:
            self.after_failure("GatewayAuthError")
            return ["GatewayAuthError"] * n
        replays = [self.server.exchange(method, path, None, self.token, self.name)
                   for _ in range(n)]  # fmt: skip
        return [error_of("trading", ans) for ans in replays]

    def sent(self, method: str, path: str, busy: bool = False) -> tuple[int, Answer]:
        """The first half of a request: sent with one snapshot's token (``busy``: while another
        thread refreshes); returns that snapshot's generation and the answer (see
        :meth:`finish`)."""
        self.busy = busy
        try:
            token, gen = self.ready(), self.gen
        finally:
            self.busy = False
        return gen, self.server.exchange(method, path, None, token, self.name)

    def finish(self, seen: int, first: Answer, method: str, path: str) -> str | None:
        """The second half of a request sent with generation ``seen`` and answered ``first``
        (:meth:`sent`), after other threads acted meanwhile. On an expired session, single
        flight: a newer session (another thread renewed, or refreshed) is used as it is; a
        logout is never undone; else this request renews. Then it is sent once more. Returns
        the request's error (None: it succeeded)."""
        err = error_of("trading", first)
        if err != "SessionExpired":
            return err
        if self.state is L:
            return "InvalidTransition"
        if self.gen == seen or self.state is not A:
            try:
                self.renew("expired", cause=err)
            except Predicted as exc:
                return exc.name
        self.replays.append((method, path, self.gen))
        again = self.server.exchange(method, path, None, self.token, self.name)
        return error_of("trading", again)
