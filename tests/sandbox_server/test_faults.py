"""The sandbox's injected faults, control plane, stats, configuration and serving."""

from __future__ import annotations

import threading
import time

import pyotp
import pytest
import requests

from session_fsm.contract import (
    FAULT_BAD_REQUEST,
    FAULT_INTERNAL,
    FAULT_RATE_LIMITED,
    FAULT_SESSION_EXPIRED,
    FAULT_WRONG_ACCESS_CODE,
    ORDERS_REPORT,
    QUOTES_LTP_PREFIX,
)
from session_fsm.sandbox import (
    QUOTES_LTP_TEMPLATE,
    Account,
    HttpSandboxControl,
    Sandbox,
    SandboxConfig,
    banner,
    run_sandbox,
    serve,
)
from tests.sandbox_server.client import (
    CFG,
    INIT_PATH,
    LOGIN_PATH,
    TWO_FA_PATH,
    USER,
    Client,
    fault_of,
)

# -- injected faults (HTTP control plane) ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (503, None, FAULT_INTERNAL),
        (429, None, FAULT_RATE_LIMITED),
        (400, 0, FAULT_BAD_REQUEST),
        (401, None, 0),
        (401, FAULT_SESSION_EXPIRED, FAULT_SESSION_EXPIRED),
    ],
)
def test_fault_status_and_code(
    client: Client, ctl: HttpSandboxControl, status: int, code: int | None, expected: int
) -> None:
    assert ctl.fault(LOGIN_PATH, method="POST", status=status, code=code) == 1
    resp = client.login()
    assert resp.status_code == status and fault_of(resp)["code"] == expected
    assert client.login().status_code == 200


def test_fault_retry_after_header(client: Client, ctl: HttpSandboxControl) -> None:
    ctl.fault(INIT_PATH, status=429, retry_after=2)
    resp = client.init()
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "2"
    assert fault_of(resp)["code"] == FAULT_RATE_LIMITED
    ctl.fault(INIT_PATH, status=503, retry_after=0.2)
    ctl.fault(INIT_PATH, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    assert client.init().headers["Retry-After"] == "1"  # whole seconds, rounded up
    dated = client.init()
    assert dated.status_code == 200 and dated.headers["Retry-After"].startswith("Wed, 21 Oct")
    assert "Retry-After" not in client.init().headers


def test_fault_delay_causes_read_timeout(client: Client, ctl: HttpSandboxControl) -> None:
    ctl.fault(INIT_PATH, delay=0.5)
    with pytest.raises(requests.Timeout):
        client.init(timeout=0.1)
    ctl.fault(INIT_PATH, delay=0.2)
    start = time.monotonic()
    resp = client.init()
    assert resp.status_code == 200 and time.monotonic() - start >= 0.2


def test_fault_malformed(client: Client, ctl: HttpSandboxControl) -> None:
    ctl.fault(LOGIN_PATH, malformed=True)
    resp = client.login()
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        resp.json()


@pytest.mark.parametrize(
    ("path", "field"),
    [(INIT_PATH, "redirect"), (LOGIN_PATH, "oneTimeToken"), (TWO_FA_PATH, "sessionToken")],
)
def test_fault_missing_field(
    client: Client, ctl: HttpSandboxControl, path: str, field: str
) -> None:
    ott = client.ott() if path == TWO_FA_PATH else ""
    ctl.fault(path, missing_field=True)
    if path == INIT_PATH:
        resp = client.init()
    elif path == LOGIN_PATH:
        resp = client.login()
    else:
        resp = client.two_fa(ott)
    assert resp.status_code == 200
    payload = resp.json()["Success"]
    assert field not in payload and payload


def test_fault_envelope_spelling(client: Client, ctl: HttpSandboxControl) -> None:
    ctl.fault(LOGIN_PATH, envelope="success")
    assert set(client.login().json()) == {"success"}
    assert set(client.login().json()) == {"Success"}


def test_fault_drop_closes_connection(sb: Sandbox, client: Client, ctl: HttpSandboxControl) -> None:
    ctl.fault(LOGIN_PATH, drop=True)
    with pytest.raises(requests.ConnectionError):
        client.login()
    assert client.login().status_code == 200
    ctl.fault(INIT_PATH, drop=True)
    with pytest.raises(requests.ConnectionError):
        client.init()
    assert sb.control.stats()["faults_served"] == 2


def test_fault_count_method_and_prefix(
    sb: Sandbox, client: Client, ctl: HttpSandboxControl
) -> None:
    ctl.fault(INIT_PATH, status=503, count=2)
    assert [client.init().status_code for _ in range(3)] == [503, 503, 200]
    ctl.fault(INIT_PATH, method="POST", status=500)
    assert client.init().status_code == 200
    ctl.fault("/session/*", status=504)
    assert client.login().status_code == 504
    ctl.fault(QUOTES_LTP_TEMPLATE, status=503)
    assert client.trade(("GET", QUOTES_LTP_PREFIX + "1"), "any").status_code == 503
    stats = sb.control.stats()
    assert stats["faults_served"] == 4
    assert stats["calls"][f"GET {INIT_PATH}"] == 4


def test_bad_control_requests_are_rejected(sb: Sandbox, ctl: HttpSandboxControl) -> None:
    with pytest.raises(ValueError):
        ctl.fault("no-slash", status=503)
    with pytest.raises(ValueError):
        ctl.fault(INIT_PATH, envelope="SUCCESS")
    with pytest.raises(ValueError):
        sb.control.fault(INIT_PATH, count=0)
    resp = requests.post(sb.root + "/_sandbox/faults", json={"status": 503}, timeout=5)
    assert resp.status_code == 400 and "path" in resp.json()["error"]


# -- stats, reset, configuration ---------------------------------------------------------------


def test_stats_and_reset(sb: Sandbox, client: Client, ctl: HttpSandboxControl) -> None:
    token = client.session()
    ctl.fault(INIT_PATH, status=503)
    ctl.advance(5)
    ctl.reset()
    assert ctl.stats() == {
        "calls": {},
        "control_calls": {"GET stats": 1},  # this read, apart from the API calls
        "logins": 0,
        "sessions": 0,
        "logouts": 0,
        "faults_served": 0,
        "logged_out_token_uses": 0,
    }
    assert client.init().status_code == 200
    assert fault_of(client.trade(ORDERS_REPORT, token))["code"] == FAULT_SESSION_EXPIRED
    assert sb.state.now() - CFG.clock() < 1


def test_redirect_host_envelope_and_totp() -> None:
    secret = pyotp.random_base32()
    config = SandboxConfig(
        accounts=(Account("alice", "pw", access_code="", totp_secret=secret),),
        redirect_host="http://localhost:{port}/apim",
        envelope="success",
    )
    with run_sandbox(config) as sandbox:
        client = Client(sandbox.url, config)
        init = client.init(userid="alice").json()["success"]
        assert init["redirect"] == {
            "host": f"http://localhost:{sandbox.port}/apim",
            "port": sandbox.port,
        }
        client.url = init["redirect"]["host"]
        ott = client.login(userid="alice", password="pw").json()["success"]["oneTimeToken"]
        assert fault_of(client.two_fa(ott, code="", userid="alice"))["code"] == FAULT_BAD_REQUEST
        totp = pyotp.TOTP(secret)
        valid = {totp.at(time.time() + drift) for drift in (-30, 0, 30)}
        bad_code = next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)
        wrong = client.two_fa(ott, code=bad_code, userid="alice")
        assert fault_of(wrong)["code"] == FAULT_WRONG_ACCESS_CODE
        ok = client.two_fa(ott, code=totp.now(), userid="alice")
        assert ok.status_code == 200 and "sessionToken" in ok.json()["success"]
        client.http.close()


def test_https_redirect_host_port() -> None:
    config = SandboxConfig(redirect_host="https://ctradeapi.kotaksecurities.com/apim")
    with run_sandbox(config) as sandbox:
        redirect = Client(sandbox.url).init().json()["Success"]["redirect"]
        assert redirect == {"host": "https://ctradeapi.kotaksecurities.com/apim", "port": 443}


def test_banner_shows_url_and_demo_credentials() -> None:
    text = banner("http://127.0.0.1:8765/apim", CFG)
    for needle in (
        "http://127.0.0.1:8765/apim",
        USER.userid,
        USER.password,
        USER.access_code,
        CFG.consumer_key,
        CFG.access_token,
        "/_sandbox/",
    ):
        assert needle in text


def test_serve_until_stopped() -> None:
    stop, urls = threading.Event(), list[str]()
    thread = threading.Thread(
        target=serve, args=(CFG, "127.0.0.1", 0), kwargs={"ready": urls.append, "stop": stop}
    )
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not urls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert urls and urls[0].endswith("/apim") and ":0/" not in urls[0]
        assert Client(urls[0]).init().status_code == 200
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_close_is_prompt_with_idle_and_sleeping_connections() -> None:
    with run_sandbox() as sandbox:
        idle = Client(sandbox.url)
        assert idle.init().status_code == 200  # leaves a kept-alive connection open
        sandbox.control.fault(INIT_PATH, delay=30)
        errors: list[BaseException] = []

        def slow() -> None:
            try:
                Client(sandbox.url, timeout=10).init()
            except requests.RequestException as exc:
                errors.append(exc)

        waiter = threading.Thread(target=slow)
        waiter.start()
        time.sleep(0.1)
        start = time.monotonic()
    assert time.monotonic() - start < 2
    waiter.join(5)
    assert not waiter.is_alive()
