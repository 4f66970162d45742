"""Refreshes under concurrency, stepped against the oracle (:mod:`tests.oracle`).

The companions of the stateful property test for what one thread cannot do: a Bearer token
rejected (900901) under N threads at once, a proactive (soft) refresh under way while others
send, a refresh racing an expiry or a logout. Each runs the real session on the sandbox app
over loopback HTTP, behind a gate (:class:`tests.race_gate.Gate`, a WSGI layer) that holds
chosen answers on barriers and events, never on sleeps: so the interleaving is the one the test
names, and the oracle, which never imports the session engine, predicts records, calls and
errors. Only the public API is read: ``snapshot()``, ``history``, ``on_transition``, options.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server

from session_fsm import (
    ConfigurationError,
    GatewayAuthError,
    InvalidTransition,
    KSError,
    State,
    contract,
)
from session_fsm.sandbox import SandboxConfig, SandboxControl, make_app
from tests.conftest import FAST_RETRY
from tests.race_gate import (
    LOGIN,
    MAX_AGE,
    SOFT,
    TWO_FA,
    WAIT,
    A,
    Gate,
    L,
    Provider,
    Reader,
    U,
    World,
    agree,
    in_threads,
    one_login_per_generation,
)
from tests.sandbox_model import ORDERS


@pytest.fixture
def world() -> Iterator[World]:
    config = SandboxConfig()
    app = make_app(config)
    gate = Gate(app)
    server = make_server("127.0.0.1", 0, gate, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    w = World(gate, f"http://127.0.0.1:{server.server_port}/apim", SandboxControl(app.state),
              config)  # fmt: skip
    try:
        yield w
    finally:
        gate.release()
        for s in w.sessions:
            s.close()
        server.shutdown()
        t.join(WAIT)


# --- (a) a Bearer token rejected under N threads ----------------------------------------------


@pytest.mark.parametrize("n", [2, 5, 16])
def test_a_bearer_storm_asks_the_provider_once_per_generation(world: World, n: int) -> None:
    provider = Provider()
    s, m = world.session(provider)
    s.connect()
    m.connect()
    for generation in (1, 2):  # a second storm is of the next Bearer generation
        world.fault(m, "401-gateway", ORDERS, count=n)
        world.gate.storm(n)
        got = in_threads(n, lambda: s.get(ORDERS))
        want = m.bearer_storm(n, "GET", ORDERS)
        assert (got, provider.asked) == (want, m.provider_calls) == ([None] * n, generation)
        agree(world, s, m)
        assert s.state is A and s.generation == 1


@pytest.mark.parametrize("n", [1, 4])
def test_a_bearer_storm_without_a_provider_takes_gateway_rejected_once(
    world: World, n: int
) -> None:
    s, m = world.session()
    s.connect()
    m.connect()
    world.fault(m, "401-gateway", ORDERS, count=n)
    world.gate.storm(n)
    got = in_threads(n, lambda: s.get(ORDERS))
    assert got == m.bearer_storm(n, "GET", ORDERS) == ["GatewayAuthError"] * n
    agree(world, s, m)
    assert s.state is U and [r.trigger for r in s.history].count("gateway_rejected") == 1


def test_a_failing_provider_alone_takes_gateway_rejected(world: World) -> None:
    provider = Provider(RuntimeError("token service down"))
    s, m = world.session(provider)
    s.connect()
    m.connect()
    m.provider_ok = False
    world.fault(m, "401-gateway", ORDERS)
    world.gate.storm(1)
    with pytest.raises(GatewayAuthError) as info:
        s.get(ORDERS)
    assert [type(info.value).__name__] == m.bearer_storm(1, "GET", ORDERS)
    assert "token service down" not in str(info.value)  # the provider's text may hold a token
    agree(world, s, m)
    assert s.state is U and provider.asked == m.provider_calls == 1


@pytest.mark.parametrize("n", [3])
def test_a_failing_provider_is_asked_once_per_rejected_generation(world: World, n: int) -> None:
    provider = Provider(RuntimeError("token service down"))
    s, m = world.session(provider)
    s.connect()
    m.connect()
    m.provider_ok = False
    world.fault(m, "401-gateway", ORDERS, count=n)
    world.gate.storm(n)
    got = in_threads(n, lambda: s.get(ORDERS))
    want = m.bearer_storm(n, "GET", ORDERS)
    assert s.state is U and got == want == ["GatewayAuthError"] * n
    assert provider.asked == m.provider_calls == 1
    agree(world, s, m)


@pytest.mark.parametrize("gives", [None, ""])
def test_a_provider_giving_nothing_takes_gateway_rejected(world: World, gives: object) -> None:
    provider = Provider(gives)
    s, _ = world.session(provider)
    s.connect()
    world.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)
    with pytest.raises(ConfigurationError) as info:  # README: the provider's bad token
        s.get(ORDERS)
    assert "access_token_provider" in str(info.value) and provider.asked == 1
    assert s.state is U and s.history[-1].trigger == "gateway_rejected"


# --- (b) the proactive (soft) refresh ---------------------------------------------------------


def test_the_old_token_serves_while_a_soft_refresh_is_under_way(world: World) -> None:
    s, m = world.session(max_session_age=MAX_AGE, soft_window=SOFT)
    s.connect()
    m.connect()
    seen: list[tuple[State, int]] = []
    s.on_transition(lambda _s, rec: seen.append((rec.dst, _s.snapshot().generation)))
    world.advance(m, 950)
    world.gate.hold(TWO_FA)
    refresher = threading.Thread(target=s.get, args=(ORDERS,))
    refresher.start()
    assert world.gate.arrived.wait(WAIT)  # the refresh's 2FA is at the gate
    reader = Reader(s)
    during = s.snapshot()
    r = s.get(ORDERS)  # meanwhile: no wait, the old token, still Authenticated
    # The model: this GET goes first (the 2FA is not made yet), then the refreshing request.
    gen, first = m.sent("GET", ORDERS, busy=True)
    assert m.finish(gen, first, "GET", ORDERS) is None and r.status_code == 200
    assert (during.state, during.generation, s.state) == (A, 1, A)
    world.gate.release()
    refresher.join(WAIT)
    m.request("GET", ORDERS)  # (a predicted error raises)
    reader.stop()
    assert reader.states == {A}  # the state never read anything else
    assert seen == [(A, 2)] and s.history[-1].trigger == "refresh"
    agree(world, s, m)
    one_login_per_generation(s, world.control.stats()["logins"])


@pytest.mark.parametrize(
    ("into", "wait"), [(10.0, 22.5), (97.0, 1.0)], ids=["quarter-of-the-time-left", "floor-1s"]
)
def test_a_failed_soft_refresh_keeps_the_token_and_is_retried_later(
    world: World, into: float, wait: float
) -> None:
    """Into the soft window ``into`` s, the refresh fails (the sandbox refuses logins): a failed
    ``refresh`` attempt, not an expiry; the old token serves; no new attempt before
    max(1 s, a quarter of the time left to the hard deadline); then one, which succeeds."""
    s, m = world.session(max_session_age=MAX_AGE, soft_window=SOFT)
    s.connect()
    m.connect()
    world.advance(m, MAX_AGE - SOFT + into)
    world.fault(m, "503", LOGIN, count=1 + FAST_RETRY.total)
    assert s.get(ORDERS).status_code == 200
    m.request("GET", ORDERS)  # (a predicted error raises)
    agree(world, s, m)
    last = s.history[-1]
    assert (last.trigger, last.src, last.dst, last.outcome) == ("refresh", A, A, "failed")
    assert "session_expired" not in [r.trigger for r in s.history]
    world.advance(m, wait - 0.25)  # not yet: the old token, no login call (exact binary steps)
    assert s.get(ORDERS).status_code == 200
    m.request("GET", ORDERS)  # (a predicted error raises)
    agree(world, s, m)
    assert s.generation == 1 and world.control.stats()["calls"][f"POST {LOGIN}"] == 5
    world.advance(m, 0.25)
    assert s.get(ORDERS).status_code == 200
    m.request("GET", ORDERS)  # (a predicted error raises)
    agree(world, s, m)
    assert (s.history[-1].trigger, s.history[-1].outcome, s.generation) == ("refresh", "ok", 2)


# --- (c) a refresh racing an expiry or a logout -----------------------------------------------


@pytest.mark.parametrize("refresh_fails", [False, True], ids=["refresh-ok", "refresh-fails"])
def test_an_expiry_met_during_a_refresh_makes_one_login(
    world: World, refresh_fails: bool
) -> None:
    """A thread is in the soft-window refresh (its 2FA held at the gate) when the server ends
    the session and another thread's GET meets the 401. That thread waits for the refresh
    and uses its session; if the refresh failed, one of the two re-logs in, once."""
    s, m = world.session(max_session_age=MAX_AGE, soft_window=SOFT)
    s.connect()
    m.connect()
    world.advance(m, 950)
    if refresh_fails:
        world.fault(m, "503", TWO_FA, count=1 + FAST_RETRY.total)
    world.gate.hold(TWO_FA)
    results: dict[str, Any] = {}

    def send(who: str) -> None:
        try:
            results[who] = s.get(ORDERS)
        except KSError as exc:
            results[who] = type(exc).__name__

    refresher = threading.Thread(target=send, args=("refresher",))
    refresher.start()
    assert world.gate.arrived.wait(WAIT)
    reader = Reader(s)
    world.control.expire()
    m.server.sess = None
    other = threading.Thread(target=send, args=("other",))
    other.start()
    assert world.gate.expired.wait(WAIT)  # its GET met the 401 (old token, expired)
    seen, first = m.sent("GET", ORDERS, busy=True)  # the model: the other GET went first ...
    world.gate.release()
    refresher.join(WAIT)
    other.join(WAIT)
    reader.stop()
    m.request("GET", ORDERS)  # ... then the refreshing request ...
    assert m.finish(seen, first, "GET", ORDERS) is None  # ... then the other one goes on
    assert [results[k].status_code for k in ("refresher", "other")] == [200, 200]
    assert [h.status_code for h in results["other"].history] == [401]
    agree(world, s, m)
    triggers = [r.trigger for r in s.history]
    assert ("session_expired" in triggers) == refresh_fails  # only a failed refresh left one
    assert reader.states == {A} or refresh_fails
    stats = world.control.stats()
    assert stats["logins"] == (3 if refresh_fails else 2)  # (the failed refresh's login counts)
    one_login_per_generation(s, stats["sessions"])


def test_a_logout_during_a_refresh_is_never_undone(world: World) -> None:
    """logout() while a soft refresh is under way: whichever goes first, the session ends
    LoggedOut and stays so (the refresh never publishes over it), one login per generation."""
    s, _ = world.session(max_session_age=MAX_AGE, soft_window=SOFT)
    s.connect()
    world.clock.advance(950)
    world.gate.hold(TWO_FA)
    outcome: list[list[str | None]] = []
    refresher = threading.Thread(
        target=lambda: outcome.append(in_threads(1, lambda: s.get(ORDERS)))
    )
    refresher.start()
    assert world.gate.arrived.wait(WAIT)
    reader = Reader(s)
    logout = threading.Thread(target=s.logout)
    logout.start()
    world.gate.release()
    refresher.join(WAIT)
    logout.join(WAIT)
    reader.stop()
    assert s.state is L and s.snapshot().session_token is None
    with pytest.raises(InvalidTransition):
        s.get(ORDERS)
    assert s.state is L
    # Its GET went with the refreshed token, before the logout or (its snapshot taken) just after.
    assert outcome in ([[None]], [["InvalidTransition"]]), outcome
    stats = world.control.stats()
    assert stats["logouts"] == 1
    gens = [r.generation for r in s.history]
    assert gens == sorted(gens), f"generation went back: {gens}"
    one_login_per_generation(s, stats["sessions"])
    assert s.history[-1].trigger in ("logout", "refresh") and L in reader.states
