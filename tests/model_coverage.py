"""Model coverage, measured: which edges, refused pairs and guard outcomes a test run exercised.

Every session the model-based tests drive reports its transition records here (via
``on_transition``), tagged with who drove it (``property`` or ``paths``). The items to cover
come from the table: every edge taken with outcome ok, every refused (state, public trigger)
pair, and both outcomes of every guard. :data:`UNREACHABLE` names what cannot happen by
construction, with the reason; the coverage test also checks those really never happen.

The deterministic journeys live here too (XState-style model-based testing): for each edge,
the table's shortest path from the initial state to its source, then the edge itself, taken by
the action that causes it (a user trigger, or the fault/world change behind an internal edge).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from session_fsm import (
    ConfigurationError,
    KSError,
    KSSession,
    MemoryStore,
    Secret,
    State,
    TransitionRecord,
    table,
)
from session_fsm import contract as c
from session_fsm.sandbox import Sandbox
from tests.conftest import FAST_RETRY, Clock, make_credentials
from tests.sandbox_model import ORDERS

Item = tuple[str, ...]


class Switch:
    """A secret provider the world can withdraw and give back (a person away, an env var unset)."""

    repeatable = True

    def __init__(self, value: str) -> None:
        self._secret = Secret(value)
        self.on = True

    def available(self) -> bool:
        return self.on

    def get(self) -> Secret:
        if not self.on:
            raise ConfigurationError("the switched-off secret was asked for")
        return self._secret

    def __repr__(self) -> str:
        return f"Switch(on={self.on})"


#: Coverage items that cannot be exercised, and why (checked to stay unexercised).
UNREACHABLE: dict[Item, str] = {
    ("guard", "has_ott", "False"): "OTT-issued always holds a one-time token: login sets it and "
    "the state setter drops it on leaving OTT-issued, so has_ott is never false where it is read",
}


def items() -> list[Item]:
    """Everything the run must exercise, in table order."""
    edges = [("edge", e.source.value, e.trigger, e.dest.value) for e in table.TRANSITIONS]
    refused = [("refused", s.value, t) for s, t in table.refused_pairs()]
    guards = [("guard", g, str(ok)) for g in table.GUARDS for ok in (True, False)]
    return edges + refused + guards


class Coverage:
    """Counts of coverage items (and of every (from, trigger, to, outcome)) per source."""

    def __init__(self) -> None:
        self.hits: dict[str, Counter[Item]] = {}

    def add(self, rec: TransitionRecord, source: str) -> None:
        """Count one transition record."""
        hits = self.hits.setdefault(source, Counter())
        hits[("taken", rec.src.value, rec.trigger, rec.dst.value, rec.outcome)] += 1
        if rec.outcome == "ok":
            hits[("edge", rec.src.value, rec.trigger, rec.dst.value)] += 1
        if rec.outcome == "refused" and rec.reason in ("no edge", "not logged in"):
            hits[("refused", rec.src.value, rec.trigger)] += 1
        for name, ok in rec.guards:
            hits[("guard", name, str(ok))] += 1

    def count(self, item: Item, source: str | None = None) -> int:
        """How often ``item`` was hit (by ``source``, or by anyone)."""
        sources = [source] if source else list(self.hits)
        return sum(self.hits.get(s, Counter())[item] for s in sources)

    def missing(self) -> list[Item]:
        """Reachable items not yet exercised."""
        return [i for i in items() if i not in UNREACHABLE and not self.count(i)]

    def table(self) -> str:
        """The coverage table: one row per item with its count per source."""
        sources = sorted(self.hits)
        head = f"{'item':<58}" + "".join(f"{s:>10}" for s in sources)
        rows = [head, "-" * len(head)]
        for item in items():
            mark = "  (unreachable)" if item in UNREACHABLE else ""
            counts = "".join(f"{self.count(item, s):>10}" for s in sources)
            rows.append(f"{' '.join(item):<58}{counts}{mark}")
        done = len(items()) - len(UNREACHABLE) - len(self.missing())
        rows.append(f"covered {done}/{len(items()) - len(UNREACHABLE)} reachable items")
        taken = sorted({k for h in self.hits.values() for k in h if k[0] == "taken"})
        rows.append(f"distinct (from, trigger, to, outcome) taken: {len(taken)}")
        rows += [f"  {' '.join(k[1:])}" for k in taken]
        return "\n".join(rows)


#: The run's coverage, shared by the path tests and the property tests.
COVERAGE = Coverage()


# --- deterministic journeys --------------------------------------------------------------------


@dataclass
class World:
    """What a journey acts on: the sandbox, the session under test and its helpers."""

    sb: Sandbox
    source: str
    clock: Clock = field(default_factory=Clock)
    store: MemoryStore = field(default_factory=MemoryStore)
    password: Switch = field(default_factory=lambda: Switch("demo-password"))
    code: Switch = field(default_factory=lambda: Switch("1234"))
    made: list[KSSession] = field(default_factory=list)
    s: KSSession = field(init=False)

    def session(self, **options: Any) -> KSSession:
        """A session on the sandbox sharing this world's store, reporting to COVERAGE."""
        options.setdefault("retry", FAST_RETRY)
        options.setdefault("timeout", (2.0, 2.0))
        creds = make_credentials(password=self.password, access_code=self.code)
        s = KSSession(creds, host=self.sb.url, clock=self.clock, store=self.store, **options)
        s.on_transition(lambda _s, rec: COVERAGE.add(rec, self.source))
        self.made.append(s)
        return s

    def close(self) -> None:
        for s in self.made:
            s.close()


@dataclass(frozen=True)
class Step:
    """One action of a journey and what must hold after it."""

    label: str
    act: Callable[[World], object]
    state: State
    error: str | None = None
    edge: table.Edge | None = None  # the edge the step must be recorded as taking


@dataclass(frozen=True)
class Journey:
    """A named sequence of steps on a fresh sandbox; ``options`` configure the session."""

    name: str
    steps: tuple[Step, ...]
    options: tuple[tuple[str, Any], ...] = ()


def _trigger(name: str) -> Callable[[World], object]:
    return lambda w: getattr(w.s, name)()


def _prefix(state: State) -> list[Step]:
    path = table.shortest_path(table.INITIAL, [state])
    assert path is not None
    return [Step(e.trigger, _trigger(e.trigger), e.dest, edge=e) for e in path]


#: The call that meets a fault in each state, for the internal edges faults cause.
_CALL_IN = {
    State.UNINITIALISED: ("init", c.SESSION_INIT[1]),
    State.INITIALISED: ("login", c.LOGIN_USERID[1]),
    State.OTT_ISSUED: ("authenticate", c.TWO_FA_ACCESSCODE[1]),
    State.AUTHENTICATED: ("get", ORDERS),
    State.LOGGED_OUT: ("init", c.SESSION_INIT[1]),
}
_FAULT_FOR = {
    "gateway_rejected": ({"status": 401, "code": c.FAULT_GATEWAY_TOKEN}, "GatewayAuthError"),
    "redirect_changed": ({"status": 403, "code": c.FAULT_WRONG_DOMAIN}, "WrongDomain"),
}


def _faulted(src: State, fault: dict[str, Any]) -> Callable[[World], object]:
    call, path = _CALL_IN[src]

    def act(w: World) -> object:
        w.sb.control.fault(path, **fault)
        return w.s.get(ORDERS) if call == "get" else getattr(w.s, call)()

    return act


def _restore(src: State) -> Callable[[World], object]:
    def act(w: World) -> object:
        peer = w.session()
        if src is State.AUTHENTICATED:  # the peer renews the shared session after an expiry
            w.sb.control.expire()
            peer.get(ORDERS)
            return w.s.get(ORDERS)
        peer.connect()
        return w.s.resume() if src is table.INITIAL else w.s.connect()

    return act


def edge_journey(e: table.Edge) -> Journey:
    """Shortest path to ``e.source`` (user triggers), then ``e`` taken by what causes it."""
    options: tuple[tuple[str, Any], ...] = ()
    error: str | None = None
    if not e.internal:
        act = _trigger(e.trigger)
    elif e.trigger in _FAULT_FOR:
        fault, error = _FAULT_FOR[e.trigger]
        act = _faulted(e.source, fault)
    elif e.trigger == "session_expired":  # without auto re-login the session stops after it

        def act(w: World) -> object:
            w.sb.control.expire()
            return w.s.get(ORDERS)

        error, options = "SessionExpired", (("auto_relogin", False),)
    elif e.trigger == "ott_rejected":

        def act(w: World) -> object:
            w.sb.control.expire_ott()
            return w.s.authenticate()

        error = "OneTimeTokenRejected"
    elif e.trigger == "refresh":  # the first request in the soft window before max age

        def act(w: World) -> object:
            w.clock.advance(950)
            return w.s.get(ORDERS)

        options = (("max_session_age", 1000.0), ("soft_window", 100.0))
    else:
        assert e.trigger == "restore", f"no action known for {e.trigger}"
        act = _restore(e.source)
    last = Step(f"{e.trigger} (edge)", act, e.dest, error, e)
    name = f"{e.source.value}-{e.trigger}-{e.dest.value}"
    return Journey(name, (*_prefix(e.source), last), options)


def refused_journey(state: State, trigger: str) -> Journey:
    """Shortest path to ``state``, then ``trigger``, which the table refuses there."""
    # logout() of a session that is not logged in is refused without an error (issue 17).
    error = None if trigger == "logout" else "InvalidTransition"
    last = Step(f"{trigger} (refused)", _trigger(trigger), state, error)
    return Journey(f"{state.value}-{trigger}", (*_prefix(state), last))


def _switch_off(which: str) -> Callable[[World], object]:
    return lambda w: setattr(w.password if which == "password" else w.code, "on", False)


def guard_journeys() -> list[Journey]:
    """Both outcomes of every reachable guard."""
    to_o, to_a = _prefix(State.OTT_ISSUED), _prefix(State.AUTHENTICATED)
    i, o = State.INITIALISED, State.OTT_ISSUED
    off_pw = Step("password withdrawn", _switch_off("password"), table.INITIAL)
    off_code = Step("access code withdrawn", _switch_off("code"), o)
    stale = Step("clock +300 s", lambda w: w.clock.advance(300), o)
    auth = Step("authenticate", _trigger("authenticate"), o, "GuardFailed")
    return [
        Journey("all-guards-true", tuple(to_a)),
        Journey("has_password-false", (off_pw, *to_o[:1], Step("login", _trigger("login"), i,
                                                                "GuardFailed"))),
        Journey("ott_fresh-false", (*to_o, stale, auth)),
        Journey("has_access_code-false", (*to_o, off_code, auth)),
    ]  # fmt: skip


def all_journeys() -> list[Journey]:
    """Every journey: one per edge, one per refused pair, the guard outcomes."""
    return (
        [edge_journey(e) for e in table.TRANSITIONS]
        + [refused_journey(s, t) for s, t in table.refused_pairs()]
        + guard_journeys()
    )


def replay(journey: Journey, sb: Sandbox, source: str = "paths") -> None:
    """Run ``journey`` on ``sb`` (reset first), asserting the state and error after each step."""
    sb.control.reset()
    w = World(sb, source)
    w.s = w.session(**dict(journey.options))
    try:
        for n, step in enumerate(journey.steps, 1):
            before, seen = w.s.snapshot(), len(w.s.history)
            calls = sb.control.stats()["calls"]
            try:
                step.act(w)
                got = None
            except KSError as exc:
                got = type(exc).__name__
            where = f"{journey.name} step {n} ({step.label})"
            assert got == step.error, f"{where}: raised {got}, expected {step.error}"
            assert w.s.state is step.state, f"{where}: state {w.s.state}, expected {step.state}"
            if step.edge is not None:
                e = step.edge
                taken = [(r.src, r.trigger, r.dst) for r in w.s.history[seen:] if r.outcome == "ok"]
                assert (e.source, e.trigger, e.dest) in taken, f"{where}: edge not taken: {taken}"
            if step.label.endswith("(refused)"):  # refused: nothing sent, nothing changed
                assert sb.control.stats()["calls"] == calls, f"{where}: a refused trigger sent"
                assert w.s.snapshot() == before, f"{where}: a refused trigger changed the state"
    finally:
        w.close()
