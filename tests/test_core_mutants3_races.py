"""Races of the sans-IO core that the third mutation run (docs/mutation.md) found untested.

A companion of :mod:`tests.test_core_mutants3` for the tests that need
:class:`tests.race_gate.Gate` (a WSGI layer in front of the sandbox that holds answers on
barriers and events) to make a race deterministic. Through the public API, over real loopback
HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from session_fsm import GatewayAuthError, KSError, State, TransitionRecord, contract
from session_fsm.sandbox import SandboxConfig, SandboxControl, make_app
from tests.race_gate import WAIT, Gate, World

ORDERS = contract.ORDERS_REPORT[1]

# --- a Bearer token rejected under several threads, without a provider --------------------------


@pytest.fixture
def gated() -> Iterator[World]:
    """The sandbox behind :class:`tests.race_gate.Gate` (as in :mod:`tests.test_refresh_races`)."""
    app = make_app(SandboxConfig())
    gate = Gate(app)
    server = make_server("127.0.0.1", 0, gate, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{server.server_port}/apim"
    w = World(gate, url, SandboxControl(app.state), SandboxConfig())
    try:
        yield w
    finally:
        gate.release()
        for s in w.sessions:
            s.close()
        server.shutdown()
        t.join(WAIT)


def test_every_thread_of_a_bearer_storm_raises_the_answer_it_met(gated: World) -> None:
    """The first thread takes the gateway edge; the others find the session moved on and raise
    the 900901 each of them met (naming its request), not a generic rejection."""
    n = 3
    s, _ = gated.session()
    s.connect()
    gated.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN, count=n)
    gated.gate.storm(n)  # all n answers are out before any thread goes on
    go = threading.Barrier(n)
    errors: list[KSError] = []

    def run() -> None:
        go.wait(WAIT)
        try:
            s.get(ORDERS)
        except KSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(errors) == n and all(isinstance(e, GatewayAuthError) for e in errors)
    for e in errors:
        assert f"GET {ORDERS}" in str(e) and e.fault_code == contract.FAULT_GATEWAY_TOKEN
    assert s.state is State.UNINITIALISED
    assert [r.trigger for r in s.history].count("gateway_rejected") == 1


def test_a_replays_late_gateway_rejection_leaves_a_session_logged_out_meanwhile(
    gated: World,
) -> None:
    """The replay after a renewal is held at the gate; meanwhile the session logs out. The
    replay's 900901 then belongs to a session that no longer exists: it takes no edge."""

    def renewed(_s: object, rec: TransitionRecord) -> None:
        if rec.trigger == "authenticate" and rec.generation == 2:
            gated.gate.hold(ORDERS)  # the replay waits at the gate

    s, _ = gated.session(on_transition=renewed)
    s.connect()
    gated.control.fault(ORDERS, status=401, code=contract.FAULT_SESSION_EXPIRED)  # first send
    gated.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)  # the replay
    errors: list[KSError] = []

    def call() -> None:
        try:
            s.get(ORDERS)
        except KSError as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    assert gated.gate.arrived.wait(WAIT)
    s.logout()
    gated.gate.release()
    t.join(WAIT)
    assert [type(e) for e in errors] == [GatewayAuthError]
    assert s.state is State.LOGGED_OUT
    assert "gateway_rejected" not in [r.trigger for r in s.history]
