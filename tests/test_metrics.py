"""Prometheus metrics (issue 18, 1), read back with prometheus_client's own parser.

Sessions run against the sandbox over loopback HTTP; the exposition text is what the status
server's ``/metrics`` serves (fetched over HTTP in one test), parsed by
``prometheus_client.parser.text_string_to_metric_families``: the oracle is the library's parser,
not a regular expression of ours.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
import requests

pytest.importorskip("prometheus_client")

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from session_fsm import (
    BadRequest,
    FromCallable,
    GatewayAuthError,
    KSSession,
    LoginRejected,
    contract,
)
from session_fsm.metrics import SessionMetrics
from session_fsm.sandbox import Sandbox
from session_fsm.status import serve_status
from session_fsm.table import State
from tests.conftest import Clock, Gate, make_credentials

ORDERS = contract.ORDERS_REPORT[1]
Factory = Callable[..., KSSession]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """(sample name, labels) -> value, for every sample of the exposition ``text``."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(got: Samples, name: str, session: KSSession, **labels: str) -> float | None:
    key = frozenset({"userid": session.credentials.userid, "session_id": session.session_id,
                     **labels}.items())  # fmt: skip
    return got.get((name, key))


def scrape(metrics: SessionMetrics) -> Samples:
    return samples(generate_latest(metrics.registry).decode())


def test_logins_relogins_and_requests_are_counted_by_label(
    sb: Sandbox, new_session: Factory
) -> None:
    metrics = SessionMetrics()
    s = metrics.watch(new_session())
    s.connect()
    s.get(ORDERS)
    sb.control.expire()
    s.get(ORDERS)  # 401 -> re-login (expiry) -> replayed
    sb.control.fault(ORDERS, status=400, code=contract.FAULT_BAD_REQUEST)
    with pytest.raises(BadRequest):
        s.get(ORDERS)
    got = scrape(metrics)
    assert value(got, "session_fsm_logins_total", s, result="ok") == 2
    assert value(got, "session_fsm_relogins_total", s, reason="expiry") == 1
    assert value(got, "session_fsm_requests_total", s, outcome="ok") == 2
    assert value(got, "session_fsm_requests_total", s, outcome="BadRequest") == 1
    assert value(got, "session_fsm_store_errors_total", s) == 0
    assert value(got, "session_fsm_generation", s) == 2


def test_a_failed_login_is_counted_by_error_class(sb: Sandbox, new_session: Factory) -> None:
    metrics = SessionMetrics()
    s = metrics.watch(new_session(cooldown=0))
    sb.control.fault(contract.LOGIN_USERID[1], status=401, code=contract.FAULT_WRONG_PASSWORD)
    with pytest.raises(LoginRejected):
        s.connect()
    got = scrape(metrics)
    assert value(got, "session_fsm_logins_total", s, result="LoginRejected") == 1
    assert value(got, "session_fsm_logins_total", s, result="ok") is None


def test_gateway_and_deadline_relogins_have_their_reasons(
    sb: Sandbox, new_session: Factory, clock: Clock
) -> None:
    metrics = SessionMetrics()
    s = metrics.watch(new_session(max_session_age=600, soft_window=60))
    s.connect()
    clock.advance(600)  # past the hard deadline: everyone waits for a new session
    s.get(ORDERS)
    clock.advance(545)  # within the soft window of the new session
    s.get(ORDERS)
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)
    with pytest.raises(GatewayAuthError):
        s.get(ORDERS)
    got = scrape(metrics)
    assert value(got, "session_fsm_relogins_total", s, reason="deadline") == 1
    assert value(got, "session_fsm_relogins_total", s, reason="soft_refresh") == 1
    assert value(got, "session_fsm_relogins_total", s, reason="gateway") == 1


def test_present_state_is_read_from_the_snapshot_at_scrape_time(
    new_session: Factory, clock: Clock
) -> None:
    metrics = SessionMetrics()
    s = metrics.watch(new_session(max_session_age=3600, soft_window=60))
    got = scrape(metrics)
    assert value(got, "session_fsm_state", s, session_fsm_state="Uninitialised") == 1
    assert value(got, "session_fsm_session_age_seconds", s) is None
    s.connect()
    login_time = s.snapshot().login_time
    assert login_time is not None
    clock.advance(125)
    got = scrape(metrics)
    for state in State:
        want = 1 if state is State.AUTHENTICATED else 0
        assert value(got, "session_fsm_state", s, session_fsm_state=state.value) == want
    assert value(got, "session_fsm_session_age_seconds", s) == pytest.approx(125)
    assert value(got, "session_fsm_next_deadline_timestamp_seconds", s) == pytest.approx(
        login_time + 3600 - 60
    )
    clock.advance(3500)  # past the soft deadline: the next one is the hard one
    assert value(
        scrape(metrics), "session_fsm_next_deadline_timestamp_seconds", s
    ) == pytest.approx(login_time + 3600)
    assert value(got, "session_fsm_relogin_waiters", s) == 0


def test_threads_waiting_on_a_relogin_are_counted(new_session: Factory, sb: Sandbox) -> None:
    metrics = SessionMetrics()
    gate = Gate()
    s = metrics.watch(new_session(make_credentials(password=FromCallable(gate))))
    s.connect()
    sb.control.expire()
    gate.arm()  # the first caller meets the expiry and re-logs in, held in its login
    first = threading.Thread(target=lambda: s.get(ORDERS))
    first.start()
    assert gate.entered.wait(5)
    waiting = [threading.Thread(target=lambda: s.renew(s.generation, "expired")) for _ in range(3)]
    for t in waiting:
        t.start()
    for _ in range(500):  # until all three block (each registers before blocking)
        if s.renewal_waiters == 3:
            break
        gate.released.wait(0.01)
    got = scrape(metrics)
    gate.open()
    for t in [first, *waiting]:
        t.join(5)
    assert value(got, "session_fsm_relogin_waiters", s) == 3
    assert value(scrape(metrics), "session_fsm_relogin_waiters", s) == 0
    assert sb.control.stats()["logins"] == 2  # the waiters took the first caller's session


def test_no_secret_in_the_exposition(sb: Sandbox, new_session: Factory) -> None:
    metrics = SessionMetrics()
    s = metrics.watch(new_session())
    s.connect()
    s.get(ORDERS)
    text = generate_latest(metrics.registry).decode()
    token = s.snapshot().session_token
    assert token is not None and token.reveal() not in text
    creds = make_credentials()
    for secret in ("demo-password", "1234\"", "demo-access-token", "demo-consumer-key"):
        assert secret not in text, secret
    assert creds.userid in text


def test_metrics_endpoint_parses_with_prometheus_client(sb: Sandbox, new_session: Factory) -> None:
    s = new_session()
    with serve_status(s) as server:  # watches s from here on
        s.connect()
        s.get(ORDERS)
        r = requests.get(server.url + "metrics", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    got = samples(r.text)
    assert value(got, "session_fsm_logins_total", s, result="ok") == 1
    assert value(got, "session_fsm_requests_total", s, outcome="ok") == 1
    assert value(got, "session_fsm_state", s, session_fsm_state="Authenticated") == 1


def test_watching_twice_counts_once(new_session: Factory) -> None:
    metrics = SessionMetrics()
    s = new_session()
    metrics.watch(s)
    metrics.watch(s)
    s.connect()
    assert value(scrape(metrics), "session_fsm_logins_total", s, result="ok") == 1


def test_without_prometheus_client_the_extra_is_named() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from session_fsm.errors import ConfigurationError\n"
        "try:\n    import session_fsm.metrics\n"
        "except ConfigurationError as e:\n    print(e)\n"
        "from session_fsm.status import _metrics_for\n"
        "print(_metrics_for(()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'session_fsm[metrics]'" in out.stdout
    assert out.stdout.strip().endswith("None")


def test_a_failing_request_hook_is_logged_and_the_request_goes_on(
    sb: Sandbox, new_session: Factory
) -> None:
    s = new_session()
    seen: list[str] = []

    def broken(_session: KSSession, outcome: str) -> None:
        raise RuntimeError("observer bug")

    s.on_request(broken)
    s.on_request(lambda _s, outcome: seen.append(outcome))
    s.connect()
    assert s.get(ORDERS).status_code == 200
    assert seen == ["ok"]
