"""The status server (issue 18, 2) over real loopback HTTP: /healthz, /api/status, assets, safety.

The page itself is driven in a real browser in test_status_browser.py.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from session_fsm import KSSession, LoginRejected, contract
from session_fsm.sandbox import Sandbox
from session_fsm.status import asset, serve_status
from session_fsm.table import State
from tests.conftest import Clock
from tests.test_heartbeat import Stepper

ROOT = Path(__file__).resolve().parent.parent
ORDERS = contract.ORDERS_REPORT[1]
Factory = Callable[..., KSSession]


def get(url: str, **kw: object) -> requests.Response:
    return requests.get(url, timeout=5, **kw)  # type: ignore[arg-type]


def test_healthz_is_200_when_every_session_is_authenticated_else_503_with_a_reason(
    sb: Sandbox, new_session: Factory
) -> None:
    a, b = new_session(), new_session()
    with serve_status(a, b) as server:
        r = get(server.url + "healthz")
        assert r.status_code == 503
        assert r.json()["reason"] == (
            f"demo-user ({a.session_id}) is Uninitialised; "
            f"demo-user ({b.session_id}) is Uninitialised"
        )
        a.connect()
        b.connect()
        r = get(server.url + "healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok", "sessions": 2})
        sb.control.fault(contract.LOGIN_USERID[1], status=401, code=contract.FAULT_WRONG_PASSWORD)
        sb.control.expire()
        with pytest.raises(LoginRejected):
            b.get(ORDERS)
        r = get(server.url + "healthz")
        assert r.status_code == 503 and r.headers["Content-Type"] == "application/json"
        assert r.json() == {
            "status": "unhealthy",
            "reason": f"demo-user ({b.session_id}) is Initialised: "
            "login failed: LoginRejected 401001",
        }


def test_a_heartbeat_that_cannot_renew_shows_in_healthz(
    sb: Sandbox, new_session: Factory, clock: Clock
) -> None:
    w = Stepper()
    s = new_session(heartbeat=30, heartbeat_waiter=w)
    s.connect()
    w.parked()
    with serve_status(s) as server:
        assert get(server.url + "healthz").status_code == 200
        sb.control.expire()
        sb.control.fault(contract.LOGIN_USERID[1], status=401, code=contract.FAULT_WRONG_PASSWORD)
        clock.advance(30)
        w.step()  # the heartbeat finds the dead session; its re-login is refused
        r = get(server.url + "healthz")
        assert r.status_code == 503 and "LoginRejected 401001" in r.json()["reason"]


def test_api_status_describes_each_session_without_secrets(
    sb: Sandbox, new_session: Factory, clock: Clock
) -> None:
    s = new_session(max_session_age=3600, soft_window=60)
    with serve_status(s) as server:
        s.connect()
        clock.advance(100)
        view = get(server.url + "api/status").json()["sessions"][0]
        token = s.snapshot().session_token
        assert token is not None
        assert view["state"] == "Authenticated" and view["generation"] == 1
        assert view["age_seconds"] == pytest.approx(100)
        assert view["soft_deadline_in"] == pytest.approx(3600 - 60 - 100)
        assert view["hard_deadline_in"] == pytest.approx(3600 - 100)
        assert view["token_fingerprint"] == token.fingerprint and len(token.fingerprint) == 8
        assert [t["trigger"] for t in view["transitions"]] == ["authenticate", "login", "init"]
        assert view["diagram"] == {
            "current": "state-AUTHENTICATED",
            "mark": "arrow-OTT_ISSUED-AUTHENTICATED",
            "marker": None,
            "marker_state": "state-AUTHENTICATED",
        }
        bodies = [get(server.url + p).text for p in ("", "api/status", "healthz", "metrics",
                                                      "status.js", "diagram.svg")]  # fmt: skip
    secrets = (token.reveal(), "demo-password", "demo-access-token", "demo-consumer-key")
    for body in bodies:
        for secret in secrets:
            assert secret not in body


def test_the_page_and_its_assets_come_from_the_package(new_session: Factory) -> None:
    with serve_status(new_session(), refresh=0.5) as server:
        page = get(server.url)
        assert page.status_code == 200 and 'data-refresh="0.5"' in page.text
        assert "http://" not in page.text and "https://" not in page.text  # no CDN
        for path, mime in (("status.js", "javascript"), ("status.css", "css"),
                           ("diagram.svg", "svg")):  # fmt: skip
            r = get(server.url + path)
            assert r.status_code == 200 and mime in r.headers["Content-Type"]
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        assert get(server.url + "nothing").status_code == 404
        assert requests.post(server.url + "healthz", timeout=5).status_code == 405


def test_the_page_diagram_is_the_committed_one() -> None:
    assert asset("session.svg") == (ROOT / "diagrams" / "session.svg").read_bytes(), (
        "cp diagrams/session.svg session_fsm/assets/session.svg"
    )


def test_a_foreign_host_header_is_refused_on_loopback(new_session: Factory) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own host name: it gets nothing."""
    with serve_status(new_session()) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/api/status", headers={"Host": f"evil.example:{server.port}"})
        answer = conn.getresponse()
        assert answer.status == 403 and "sessions" not in json.loads(answer.read())
        conn.close()
        assert get(f"http://localhost:{server.port}/healthz").status_code in (200, 503)


def test_close_frees_the_port(new_session: Factory) -> None:
    server = serve_status(new_session())
    url = server.url
    server.close()
    server.close()
    with pytest.raises(requests.ConnectionError):
        get(url + "healthz")


def test_a_soft_refresh_under_way_counts_as_healthy_until_the_hard_deadline(
    sb: Sandbox, new_session: Factory, clock: Clock
) -> None:
    s = new_session(max_session_age=600, soft_window=60, cooldown=0)
    s.connect()
    with serve_status(s) as server:
        sb.control.fault(contract.LOGIN_USERID[1], status=401,
                         code=contract.FAULT_WRONG_PASSWORD, count=5)  # fmt: skip
        clock.advance(545)  # within the soft window: one caller renews, and fails
        s.get(ORDERS)  # served with the old token all the same
        assert s.state is State.AUTHENTICATED  # a failed soft refresh keeps the old session
        assert any(r.trigger == "refresh" and r.outcome == "failed" for r in s.history)
        assert get(server.url + "healthz").status_code == 200  # the old token is still good
        clock.advance(60)  # past the hard deadline: the renewal must succeed now, and fails
        with pytest.raises(LoginRejected):
            s.get(ORDERS)
        r = get(server.url + "healthz")
        assert r.status_code == 503 and "LoginRejected 401001" in r.json()["reason"]
