"""Stateful property tests: a real session on a real sandbox, stepped together with the model.

Each hypothesis example starts a sandbox whose account has generated secrets, and a session on
it with generated options. The rules fire every public trigger in any state (no preconditions,
so refusals are exercised as much as moves), send trading GETs and POSTs, and change the world:
expiries, one-time-token expiry, every fault kind on the next call of any or one route, both
clocks, secrets withdrawn and given back. After each step the session is compared with the
reference model (:mod:`tests.oracle`): error, state, generation, every transition record with
its guards, every HTTP call that reached the sandbox, the server's counters, retry sleeps and
token identities. Invariants hold after every step; the coverage test closes the module.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from session_fsm import (
    Credentials,
    KSError,
    KSSession,
    RetryPolicy,
    Secret,
    State,
    table,
)
from session_fsm.sandbox import Account, Sandbox, SandboxConfig
from tests import oracle
from tests.conftest import FAST_RETRY, Clock, capture_logs, make_credentials, tables_wanted
from tests.drivers import SYNC, Driver
from tests.model_coverage import COVERAGE, UNREACHABLE, Switch, all_journeys, replay
from tests.sandbox_model import FAULT_KINDS, ORDER, ORDERS, TARGETS, TIMEOUT, Server

A, OTT_ISSUED = State.AUTHENTICATED, State.OTT_ISSUED
USERID = "prop-user"
#: Distinctive generated secrets: finding one in a log line is never a coincidence.
secret_text = st.text(alphabet="abcdefghjkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY34679", min_size=14)
ORDER_BODY = {"instrumentToken": 11536, "quantity": 1, "price": 0, "transactionType": "BUY"}
#: Which rules and fault kinds the property test exercised (checked under the ci profile).
KINDS: Counter[str] = Counter()
#: The fault kinds as drawn: a "timeout" costs the read timeout (2 s) in real time, so it comes
#: a sixteenth as often as each other kind (14 injected in the sync ci run, 21 in the async).
FAULT_DRAW = [k for k in sorted(FAULT_KINDS) for _ in range(1 if k == "timeout" else 16)]


class LineHandler(logging.Handler):
    """Keeps every formatted stdlib log line (with any exception text)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


EVENT_KEYS = ("trigger", "src", "dst", "outcome", "error", "reason", "generation", "guards")


def event_of(r: oracle.Rec) -> tuple[object, ...]:
    """The fields of the transition event a record must be logged as (JSON-shaped)."""
    fields = (r.trigger, r.src.value, r.dst.value, r.outcome, r.error, r.reason, r.generation)
    return (*fields, dict(r.guards))


def as_rec(r: Any) -> oracle.Rec:
    return oracle.Rec(r.trigger, r.src, r.dst, r.outcome, r.error, r.guards, r.reason, r.generation)


class SessionVersusModel(RuleBasedStateMachine):
    """A session and a peer sharing its token store, their sandbox, and the model of all three."""

    #: Which session runs: KSSession, or AsyncKSSession (tests/test_async_properties.py).
    driver: Driver = SYNC

    def __init__(self) -> None:
        super().__init__()
        self.sb: Any = None  # the example's sandbox, started by the initialize rule
        self.sleeps: list[float] = []
        self.secrets: set[str] = set()
        self.texts: list[str] = []
        self.tokens: dict[tuple[str, int], Secret] = {}
        self.peer_used = False
        self.provider_calls = 0
        self.provider_gives = True  # the access_token_provider gives a token, or raises
        self.halves: list[str] = []  # transitions whose snapshot was not whole

    @initialize(
        password=secret_text, code=secret_text, bearer=secret_text,
        cooldown=st.sampled_from([0.0, 300.0]), auto_relogin=st.booleans(),
        replay_posts=st.booleans(), max_session_age=st.sampled_from([None, 3600.0]),
        provider=st.booleans(),
    )  # fmt: skip
    def start(self, password: str, code: str, bearer: str, provider: bool, **options: Any
              ) -> None:  # fmt: skip
        self.logs, self.stdlib = capture_logs(), LineHandler()
        logging.getLogger().addHandler(self.stdlib)  # urllib3 logs its retries there
        config = SandboxConfig(accounts=(Account(USERID, password, code),), access_token=bearer,
                               ott_ttl=300.0, session_ttl=3600.0)  # fmt: skip
        self.sb = sb = Sandbox(config).start()
        self.password, self.code = Switch(password), Switch(code)
        self.clock, store = Clock(), self.driver.memory_store()
        retry = RetryPolicy(backoff_factor=0.0, backoff_jitter=0.0, sleeper=self.sleeps.append)

        def provide() -> str:  # a fresh Bearer token (the sandbox's one), counted
            self.provider_calls += 1
            if not self.provider_gives:
                raise RuntimeError("the token service is down")
            return bearer

        def session(pw: Any, ac: Any, tokens: Any = None, **opts: Any) -> Any:
            creds = Credentials(USERID, config.consumer_key, bearer, pw, ac,
                                access_token_provider=tokens)  # fmt: skip
            s = self.driver.session(creds, host=sb.url, clock=self.clock, timeout=TIMEOUT,
                                    retry=retry, store=store, history_size=100_000,
                                    **opts)  # fmt: skip
            s.on_transition(lambda s, rec: self._remember(s.snapshot(), rec))
            return s

        options["soft_window"] = 150.0  # 100 s clock steps land in [3450, 3600) s after login
        peer_options = {"cooldown": 0.0, "auto_relogin": True, "replay_posts": True}
        self.s = session(self.password, self.code, provide if provider else None, **options)
        self.peer = session(password, code, **peer_options)  # another process, same user
        self.server, shared = Server(config.ott_ttl, config.session_ttl), oracle.Store()
        self.m = oracle.Client("s", self.server, shared, self.clock.now, provider=provider,
                               **options)  # fmt: skip
        self.pm = oracle.Client("peer", self.server, shared, self.clock.now, **peer_options)
        self.secrets = {password, code, bearer}
        event(f"options: {sorted(options.items())}, provider: {provider}")

    def teardown(self) -> None:
        try:
            if self.sb is not None:
                self.s.close()
                self.peer.close()
                self.sb.close()
        finally:
            structlog.reset_defaults()
            logging.getLogger().removeHandler(self.stdlib)

    # --- rules: the sessions' own calls ----------------------------------------------------

    @rule(trigger=st.sampled_from(table.USER_TRIGGERS))
    def fire(self, trigger: str) -> None:
        self._step(trigger, getattr(self.s, trigger), lambda: self.m.fire(trigger))

    @rule()
    def connect(self) -> None:
        self._step("connect", self.s.connect, self.m.connect)

    @rule()
    def get(self) -> None:
        self._step("GET", lambda: self.s.get(ORDERS), lambda: self.m.request("GET", ORDERS))

    @rule()
    def post(self) -> None:
        self._step("POST", lambda: self.s.post(ORDER, json=ORDER_BODY),
                   lambda: self.m.request("POST", ORDER))  # fmt: skip

    @rule(request=st.booleans())
    def peer_acts(self, request: bool) -> None:
        """The other process connects or sends a GET (re-logging in, or adopting, as needed)."""
        self.peer_used = True
        if request:
            self._step("peer GET", lambda: self.peer.get(ORDERS),
                       lambda: self.pm.request("GET", ORDERS))  # fmt: skip
        else:
            self._step("peer connect", self.peer.connect, self.pm.connect)

    # --- rules: the world changes ----------------------------------------------------------

    @rule(ott=st.booleans())
    def expire(self, ott: bool) -> None:
        control, what = self.sb.control, "ott" if ott else "sess"
        self._step("expire_ott" if ott else "expire_session",
                   control.expire_ott if ott else control.expire,
                   lambda: setattr(self.server, what, None))  # fmt: skip

    @rule(kind=st.sampled_from(FAULT_DRAW), where=st.sampled_from(sorted(TARGETS)))
    def inject_fault(self, kind: str, where: str) -> None:
        path, spec = TARGETS[where], FAULT_KINDS[kind]
        KINDS[f"fault {kind}"] += 1
        self._step(f"fault {kind} on {where}",
                   lambda: self.sb.control.fault(path, **spec),
                   lambda: self.server.faults.append((kind, path, spec)))  # fmt: skip

    @rule(sandbox=st.booleans(), seconds=st.sampled_from([1, 50, 100, 300, 3500, 3600]))
    def advance_clock(self, sandbox: bool, seconds: int) -> None:
        def model() -> None:
            if sandbox:
                self.server.now += seconds
            else:
                self.m.clock += seconds
                self.pm.clock += seconds

        act = self.sb.control.advance if sandbox else self.clock.advance
        self._step(
            f"{'sandbox' if sandbox else 'client'} clock +{seconds}", lambda: act(seconds), model
        )

    @precondition(
        lambda self: (
            self.m.max_age is not None
            and self.m.login_time is not None
            and self.m.clock < self.m.login_time + self.m.max_age - self.m.soft_window
        )
    )
    @rule(
        into=st.sampled_from([10, 100, 147]),
        fault=st.sampled_from([None, "503", "401-bare", "400"]),
    )
    def reach_soft_window(self, into: int, fault: str | None) -> None:
        """The client clock moves ``into`` seconds into the soft window of the current session,
        and the next login may be made to fail: a renewal ahead of the deadline, and above all
        its failure (the old token carried on), are rare with round clock steps. A failed one is
        tried again after a quarter of the time left: 35 s, 12.5 s, and at 147 s (3 s left) the
        floor of 1 s, which the 1 s clock step crosses. A GET follows, which meets the window."""
        m = self.m
        assert m.max_age is not None and m.login_time is not None
        self.advance_clock(False, int(m.login_time + m.max_age - m.soft_window + into - m.clock))
        if fault is not None:
            self.inject_fault(fault, "login")
        self.get()

    @rule(which=st.sampled_from(["password", "access_code"]), on=st.booleans())
    def switch_secret(self, which: str, on: bool) -> None:
        provider = self.password if which == "password" else self.code
        self._step(f"{which} {'on' if on else 'off'}", lambda: setattr(provider, "on", on),
                   lambda: setattr(self.m, which, on))  # fmt: skip

    @rule(where=st.sampled_from(sorted(TARGETS)), gives=st.booleans())
    def reject_bearer(self, where: str, gives: bool) -> None:
        """The gateway rejects the Bearer token on the next call (of one route), and the
        access_token_provider (in the examples that have one) gives a new token, or raises: then
        the Bearer stays rejected and the session takes gateway_rejected. (A 900901 is one fault
        kind in sixteen: this rule makes the provider's two outcomes common.)"""
        self._step(f"provider {'gives' if gives else 'fails'}",
                   lambda: setattr(self, "provider_gives", gives),
                   lambda: setattr(self.m, "provider_ok", gives))  # fmt: skip
        self.inject_fault("401-gateway", where)

    @rule()
    def reset_cooldown(self) -> None:
        self._step("reset_cooldown", self.s.reset_cooldown, self.m.reset_cooldown)

    # --- one step, compared ----------------------------------------------------------------

    def _step(self, label: str, act: Callable[[], object], predict: Callable[[], object]) -> None:
        assert self.sb is not None
        KINDS[label.split()[0]] += 1
        pairs = [("s", self.s, self.m), ("peer", self.peer, self.pm)]
        before = {n: (s.snapshot(), len(s.history), len(m.records), len(m.replays))
                  for n, s, m in pairs}  # fmt: skip
        logged = len(self.logs.json.getvalue())
        asked, m_asked = self.provider_calls, self.m.provider_calls
        stats0, calls0 = self.sb.control.stats(), Counter(self.server.calls)
        self.sleeps.clear()
        self.server.sleeps.clear()
        got = want = None
        try:
            act()
        except KSError as exc:
            got = type(exc).__name__
            self.texts += [str(exc), repr(exc), repr(exc.args)]
        try:
            predict()
        except oracle.Predicted as p:
            want = p.name
        stats = self.sb.control.stats()
        calls = Counter(stats["calls"]) - Counter(stats0["calls"])
        diffs: dict[str, tuple[Any, Any]] = {"error": (got, want)}
        records = []
        events = [json.loads(line) for line in self.logs.json.getvalue()[logged:].splitlines()]
        for n, s, m in pairs:
            _, seen, predicted, replayed = before[n]
            new = [as_rec(r) for r in s.history[seen:]]
            records += new
            diffs[f"{n} records"] = (new, m.records[predicted:])
            # The structured events say the same: one per transition, one per replay.
            mine = [e for e in events if e.get("session_id") == s.session_id]
            diffs[f"{n} transition events"] = (
                [tuple(e[k] for k in EVENT_KEYS) for e in mine if e["event"] == "transition"],
                [event_of(r) for r in new],
            )
            diffs[f"{n} replay events"] = (
                [(e["method"], e["path"], e["generation"]) for e in mine
                 if e["event"] == "request_replayed" and e["reason"] == "session renewed"],
                [(m_, "/apim" + p_, g) for m_, p_, g in m.replays[replayed:]],
            )  # fmt: skip
            snap = s.snapshot()
            diffs[f"{n} state, generation, login time"] = (
                (snap.state, snap.generation, snap.login_time),
                (m.state, m.gen, m.login_time),
            )
        diffs["calls"] = (dict(calls), dict(self.server.calls - calls0))
        diffs["provider calls"] = (self.provider_calls - asked, self.m.provider_calls - m_asked)
        if self.provider_calls > asked:
            done = "replaced a rejected Bearer token" if self.provider_gives else "failed"
            event(f"{label.split()[0]}: the provider {done}")
            KINDS[f"provider {'replaced' if self.provider_gives else 'failed'}"] += 1
        diffs["sleeps"] = (self.sleeps, self.server.sleeps)
        counters = self.server.stats()
        diffs.update({k: (stats[k], counters[k]) for k in counters if k != "calls"})
        wrong = {k: v for k, v in diffs.items() if v[0] != v[1]}
        assert not wrong, f"step {label!r}: got != model:\n" + "\n".join(
            f"  {k}: {v[0]!r}\n  {' ' * len(k)}  {v[1]!r}" for k, v in wrong.items()
        )
        for _, s, m in pairs:
            self._same_tokens(s, m)
        unchanged = all(s.snapshot() == before[n][0] for n, s, _ in pairs)
        refused_request = got == "InvalidTransition" and not records
        refused_alone = (
            len(records) == 1
            and records[0].outcome == oracle.REFUSED
            and records[0].trigger != "refresh"
            and got
        )
        if refused_alone or refused_request:
            # A refused trigger (or request) sent nothing and changed nothing. (A request whose
            # soft refresh was refused goes out with the old token: calls made, its own error.)
            assert not calls and unchanged and stats == stats0, f"{label}: refused but acted"
        outcome = "ok" if not got else "refused" if not calls and unchanged else "failed"
        event(f"step {label.split()[0]}: {outcome}{' ' + got if got else ''}")
        if self.m.refresh_retry is not None and self.m.refresh_retry[0] == self.m.gen:
            event("s carries on with its token (its soft refresh failed)")
        for n, s, _ in pairs:
            for r in s.history[before[n][1] :]:
                COVERAGE.add(r, "property")
                if r.trigger == "refresh" and r.outcome != oracle.REFUSED:
                    KINDS[f"refresh {r.outcome}"] += 1
                why = f", {r.reason}" if r.reason else ""
                event(f"{n}: {r.src.value} --{r.trigger}--> {r.dst.value} ({r.outcome}{why})")

    def _remember(self, snap: Any, rec: Any) -> None:
        """Called on every transition: its snapshot is whole (the state with its own tokens
        and generation, read as one; checked by the invariants, as a callback's exceptions are
        swallowed), and the secrets it holds are hunted in the logs."""
        whole = (
            snap.state is rec.dst
            and snap.generation == rec.generation
            and (snap.session_token is not None) == (snap.state is A)
            and (snap.one_time_token is not None) == (snap.state is OTT_ISSUED)
        )
        if not whole:
            self.halves.append(f"{rec.trigger}: {snap!r} after {rec!r}")
        for token in (snap.session_token, snap.one_time_token):
            if token is not None:
                self.secrets.add(token.reveal())

    def _same_tokens(self, s: KSSession, m: oracle.Client) -> None:
        """A session holds exactly the tokens its model says: the same one, or a new one."""
        snap = s.snapshot()
        for kind, model_id, held in (("session", m.token, snap.session_token),
                                     ("ott", m.ott, snap.one_time_token)):  # fmt: skip
            if model_id is None or held is None:
                assert model_id is None and held is None, f"{kind}: {held} vs model {model_id}"
                continue
            known = self.tokens.setdefault((kind, model_id), held)
            assert known == held, f"{kind} token {model_id} changed"
            assert [k for k, v in self.tokens.items() if v == held] == [(kind, model_id)]

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def invariants(self) -> None:
        if self.sb is None:
            return
        assert not self.halves, f"half a snapshot: {self.halves[:3]}"
        stats, logins, ghosts = self.sb.control.stats(), 0, 0
        for s, m in ((self.s, self.m), (self.peer, self.pm)):
            snap = s.snapshot()
            assert snap.state in table.ALL_STATES
            assert (snap.session_token is not None) == (snap.state is A), "token iff Authenticated"
            assert (snap.one_time_token is not None) == (snap.state is OTT_ISSUED), (
                "OTT iff OTT-issued"
            )
            assert {t: s.may(t) for t in table.USER_TRIGGERS} == {
                t: m.may(t) for t in table.USER_TRIGGERS
            }
            logins += sum(r.trigger == "login" and r.outcome == "ok" for r in s.history)
            ghosts += m.ghost_logins
            self.texts += [repr(s), repr(snap), repr(s.history[-3:]), repr(s.auth)]
        assert stats["logins"] == logins + ghosts, "sandbox logins != the clients' recorded logins"
        if not self.peer_used:  # (with a peer, it may send a token this session logged out)
            assert stats["logged_out_token_uses"] == 0, "a logged-out token was sent"
        text = "\n".join([self.logs.text(), *self.stdlib.lines, *self.texts])
        leaked = [k for k in self.secrets if k in text]
        assert not leaked, "a secret reached a log line, an exception or a repr"


#: The steps are cheap (about a millisecond each), so explore five times the profile's examples
#: with long runs: about 30 s under the ci profile.
SessionVersusModel.TestCase.settings = settings(
    settings.default,
    max_examples=5 * settings.default.max_examples,
    stateful_step_count=max(100, settings.default.stateful_step_count),
    deadline=None,
)
TestSessionVersusModel = SessionVersusModel.TestCase


# --- the concurrent variant --------------------------------------------------------------------


@settings(max_examples=settings.default.max_examples, deadline=None)
@given(
    threads=st.integers(2, 8),
    per_thread=st.integers(1, 10),
    expiries=st.lists(st.integers(0, 100), max_size=4),
    posts=st.booleans(),
)
def test_concurrent_requests_log_in_once_per_expiry(
    sandbox: Sandbox, threads: int, per_thread: int, expiries: list[int], posts: bool
) -> None:
    """Threads send requests while the world expires sessions: one login per expiry, no more."""
    sandbox.control.reset()
    logs = capture_logs()
    s = KSSession(make_credentials(), host=sandbox.url, retry=FAST_RETRY, clock=Clock(),
                  timeout=(5.0, 5.0), history_size=100_000)  # fmt: skip
    errors: list[str] = []
    replays: list[Any] = []  # the responses (a replayed one carries the 401 in its history)
    done = [0]
    cond = threading.Condition()

    def worker(k: int) -> None:
        for j in range(per_thread):
            try:
                post = posts and (k + j) % 2
                replays.append(s.post(ORDER, json=ORDER_BODY) if post else s.get(ORDERS))
            except KSError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            with cond:
                done[0] += 1
                cond.notify_all()

    try:
        s.connect()
        workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for t in workers:
            t.start()
        effective = 0  # expiries that killed a live session
        for mark in sorted(e * threads * per_thread // 100 for e in expiries):
            with cond:
                cond.wait_for(lambda m=mark: done[0] >= m, timeout=10)
            effective += bool(sandbox.control.expire())
        for t in workers:
            t.join(timeout=30)
        s.get(ORDERS)  # meets the last expiry, if nobody did
        stats = sandbox.control.stats()
        logins = sum(r.trigger == "login" and r.outcome == "ok" for r in s.history)
        assert stats["logins"] == 1 + effective, f"{stats['logins']} logins, {effective} expiries"
        assert stats["sessions"] == stats["logins"] == logins
        assert stats["logged_out_token_uses"] == 0
        snap = s.snapshot()
        assert snap.state is A and snap.session_token is not None and snap.one_time_token is None
        # A request fails only when its one replay met a newer expiry (never a second login).
        assert all(e.startswith("SessionExpired") for e in errors), errors
        event(f"expiries that killed a session: {effective}")
        event(f"requests that saw a renewal: {sum(len(r.history) > 0 for r in replays)}")
        for secret in ("demo-password", '1234"', "demo-access-token", snap.session_token.reveal()):
            assert secret not in logs.text()
    finally:
        s.close()
        structlog.reset_defaults()


# --- model coverage ----------------------------------------------------------------------------


def test_model_coverage_is_complete(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    """Every edge, refused pair and guard outcome was exercised in this run. The table is
    printed when something is missing, or on request (``-v`` or ``SESSION_FSM_TABLES=1``).

    Whatever the property test's random exploration (or an earlier test_model_paths run) left
    out is topped up by the deterministic journeys, so the check does not depend on luck.
    """
    if COVERAGE.missing():
        for journey in all_journeys():
            replay(journey, sandbox, source="top-up")
    if COVERAGE.missing() or tables_wanted(request.config):
        with capsys.disabled():
            print("\nmodel coverage\n" + COVERAGE.table())
    assert not COVERAGE.missing(), f"never exercised: {COVERAGE.missing()}"
    for item, why in UNREACHABLE.items():
        assert not COVERAGE.count(item), f"{item} happened, so it is not unreachable: {why}"
    if "property" in COVERAGE.hits and settings.default.derandomize:
        # Under the derandomised ci profile the property test itself must use every kind.
        wanted = {f"fault {k}" for k in FAULT_KINDS} | {
            *table.USER_TRIGGERS, "connect", "GET", "POST", "expire_session", "expire_ott",
            "peer", "client", "sandbox", "password", "access_code", "reset_cooldown", "provider",
            "provider replaced", "provider failed",
        }  # fmt: skip
        # (A soft refresh that succeeds and one that fails need the right options and a session
        # reaching its window: a handful of examples, or none, as the derandomised seed falls.
        # tests/test_refresh_races.py covers both for certain.)
        assert not wanted - set(KINDS), f"the property test never used {wanted - set(KINDS)}"
