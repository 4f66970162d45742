"""The gate and helpers of :mod:`tests.test_refresh_races`: a WSGI layer in front of the
sandbox app that holds chosen answers on barriers and events (never on sleeps), a session with
its oracle model, and the checks every race ends with (whole snapshots, one login per
generation, the session and the sandbox where the model says)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from session_fsm import Credentials, KSError, KSSession, MemoryStore, State, contract
from session_fsm.sandbox import SandboxConfig, SandboxControl
from tests import oracle
from tests.conftest import FAST_RETRY, Clock, make_credentials
from tests.sandbox_model import FAULT_KINDS, ORDERS, Server

A, U, L = State.AUTHENTICATED, State.UNINITIALISED, State.LOGGED_OUT
LOGIN, TWO_FA = contract.LOGIN_USERID[1], contract.TWO_FA_ACCESSCODE[1]
WAIT = 20.0  # the most any gate or join waits: a bound, never a pace
MAX_AGE, SOFT = 1000.0, 100.0  # 900 s after login the soft window opens; 1000 s: hard deadline


class Gate:
    """WSGI layer in front of the sandbox app that holds answers for the test:

    * ``storm(n)``: the next ``n`` 401 answers to a GET of the orders report are held until the
      n-th is ready (so n requests all meet it before any goes on);
    * ``hold(path)``: the next call to ``path`` waits, before the app sees it, until
      ``release()``; ``arrived`` is set when it is waiting;
    * ``expired``: set when a trading call is answered 401 (as it leaves the gate).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._storm_left = 0
        self._barrier: threading.Barrier | None = None
        self._held: str | None = None
        self.arrived, self._go = threading.Event(), threading.Event()
        self.expired = threading.Event()

    def storm(self, n: int) -> None:
        with self._lock:
            self._storm_left, self._barrier = n, threading.Barrier(n)

    def hold(self, path: str) -> None:
        self.arrived.clear()
        self._go.clear()
        self._held = path

    def release(self) -> None:
        self._go.set()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        with self._lock:
            held = self._held is not None and path.endswith(self._held)
            if held:
                self._held = None
        if held:
            self.arrived.set()
            assert self._go.wait(WAIT), "the gate was never released"
        answer: list[tuple[str, list[tuple[str, str]]]] = []
        body: Iterable[bytes] = self.app(environ, lambda s, h, e=None: answer.append((s, h)))
        status, headers = answer[0]
        if path.endswith(ORDERS) and status.startswith("401"):
            with self._lock:
                barrier = self._barrier if self._storm_left > 0 else None
                self._storm_left -= barrier is not None
            if barrier is not None:
                barrier.wait(WAIT)
            self.expired.set()
        start_response(status, headers)
        return body


class World:
    """The gated sandbox, a session on it and the oracle's model of both."""

    def __init__(self, gate: Gate, url: str, control: SandboxControl, config: SandboxConfig):
        self.gate, self.url, self.control, self.config = gate, url, control, config
        self.clock = Clock()
        self.sessions: list[KSSession] = []

    def session(
        self, provider: Callable[[], Any] | None = None, **options: Any
    ) -> tuple[KSSession, oracle.Client]:
        creds: Credentials = make_credentials(access_token_provider=provider)
        opts: dict[str, Any] = {"cooldown": 300.0, "auto_relogin": True, "replay_posts": True}
        opts.update(options)
        s = KSSession(creds, host=self.url, clock=self.clock, retry=FAST_RETRY,
                      timeout=(5.0, 5.0), store=MemoryStore(), **opts)  # fmt: skip
        self.sessions.append(s)
        server = Server(self.config.ott_ttl, self.config.session_ttl)
        model = oracle.Client("s", server, oracle.Store(), self.clock.now,
                              provider=provider is not None, **opts)  # fmt: skip
        return s, model

    def fault(self, model: oracle.Client, kind: str, path: str, count: int = 1) -> None:
        """The same fault queued on the sandbox and in the model."""
        spec: dict[str, Any] = dict(FAULT_KINDS[kind])
        self.control.fault(path, count=count, **spec)
        model.server.faults += [(kind, path, spec)] * count

    def advance(self, model: oracle.Client, seconds: float) -> None:
        self.clock.advance(seconds)
        model.clock += seconds


def as_rec(r: Any) -> oracle.Rec:
    return oracle.Rec(r.trigger, r.src, r.dst, r.outcome, r.error, r.guards, r.reason, r.generation)


def agree(w: World, s: KSSession, m: oracle.Client, since: int = 0) -> None:
    """The session and the sandbox are where the model says: records, state, generation and
    login time (one snapshot), calls and counters."""
    snap = s.snapshot()
    mine = ([as_rec(r) for r in s.history[since:]], (snap.state, snap.generation, snap.login_time))
    assert mine == (m.records[since:], (m.state, m.gen, m.login_time))
    stats, want = w.control.stats(), m.server.stats()
    counters = {k: stats[k] for k in want}
    counters["calls"] = dict(+Counter(stats["calls"]))
    assert counters == want


def in_threads(n: int, work: Callable[[], Any]) -> list[str | None]:
    """``work()`` in ``n`` threads released together; each one's error name (None: none)."""
    go = threading.Barrier(n)
    out: list[str | None] = []

    def run() -> None:
        go.wait(WAIT)
        try:
            work()
            out.append(None)
        except KSError as exc:
            out.append(type(exc).__name__)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(out) == n, "a thread hung or died"
    return out


class Provider:
    """An access_token_provider: the sandbox's Bearer token, ``None``, or an exception."""

    def __init__(self, gives: object = "demo-access-token") -> None:
        self.gives, self.asked = gives, 0
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.asked += 1
        if isinstance(self.gives, Exception):
            raise self.gives
        return self.gives


class Reader:
    """Reads ``snapshot()`` over and over in a thread while a race runs: every snapshot is
    whole (the state with its own tokens), the generation never goes back, and once LoggedOut
    the session stays so."""

    def __init__(self, s: KSSession) -> None:
        self.s, self.seen = s, 0
        self.states: set[State] = set()
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        last_gen, logged_out = 0, False
        while True:
            stopping = self._stop.is_set()  # a last read begun after stop(): the final state
            snap = self.s.snapshot()
            self.seen += 1
            self.states.add(snap.state)
            if (snap.session_token is not None) != (snap.state is A):
                self.problems.append(f"half a snapshot: {snap.state} with session token")
            if snap.generation < last_gen:
                self.problems.append(f"generation went back: {last_gen} -> {snap.generation}")
            if logged_out and snap.state is not L:
                self.problems.append(f"a logout was undone: {snap.state}")
            last_gen, logged_out = snap.generation, logged_out or snap.state is L
            if stopping:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        assert self.seen and not self.problems, self.problems[:3]


def one_login_per_generation(s: KSSession, logins: int) -> None:
    """Every generation the session reached was made by exactly one login, in order."""
    made = [r.generation for r in s.history if r.outcome == "ok" and r.trigger in
            ("authenticate", "refresh")]  # fmt: skip
    assert made == sorted(set(made)), f"generations not strictly increasing: {made}"
    assert logins == len(made), f"{logins} logins for {len(made)} generations"
