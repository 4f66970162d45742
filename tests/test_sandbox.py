"""The KS session API sandbox, exercised with plain ``requests`` over real loopback HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
import requests

from session_fsm.contract import (
    FAULT_BAD_REQUEST,
    FAULT_GATEWAY_TOKEN,
    FAULT_INTERNAL,
    FAULT_OTT_INVALID,
    FAULT_RATE_LIMITED,
    FAULT_SESSION_EXPIRED,
    FAULT_WRONG_ACCESS_CODE,
    FAULT_WRONG_PASSWORD,
    H_APP_ID,
    H_AUTHORIZATION,
    H_CONSUMER_KEY,
    H_IP,
    H_ONE_TIME_TOKEN,
    H_SESSION_TOKEN,
    H_USERID,
    LOGIN_USERID,
    ORDER_NORMAL,
    ORDERS_REPORT,
    POSITIONS_TODAY,
    QUOTES_LTP_PREFIX,
    SESSION_INIT,
    SESSION_LOGOUT,
    TWO_FA_ACCESSCODE,
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

CFG = SandboxConfig()
USER = CFG.accounts[0]
INIT_PATH, LOGIN_PATH = SESSION_INIT[1], LOGIN_USERID[1]
TWO_FA_PATH, LOGOUT_PATH = TWO_FA_ACCESSCODE[1], SESSION_LOGOUT[1]


class Client:
    """A minimal hand-written client of the wire contract (not the project's client)."""

    def __init__(self, url: str, config: SandboxConfig = CFG, timeout: float = 5.0) -> None:
        self.url = url
        self.config = config
        self.timeout = timeout
        self.http = requests.Session()

    def headers(self, **extra: str) -> dict[str, str]:
        base = {
            H_AUTHORIZATION: f"Bearer {self.config.access_token}",
            H_CONSUMER_KEY: self.config.consumer_key,
            H_IP: "127.0.0.1",
            H_APP_ID: "sandbox-tests",
        }
        return {**base, **extra}

    def call(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        return self.http.request(method, self.url + path, headers=headers, **kw)

    def init(self, userid: str = USER.userid, **kw: Any) -> requests.Response:
        return self.call("GET", INIT_PATH, self.headers(**{H_USERID: userid}), **kw)

    def login(self, password: str = USER.password, userid: str = USER.userid) -> requests.Response:
        body = {"userid": userid, "password": password}
        return self.call("POST", LOGIN_PATH, self.headers(), json=body)

    def two_fa(
        self, ott: str, code: str = USER.access_code, userid: str = USER.userid
    ) -> requests.Response:
        body = {"userid": userid, "accessCode": code}
        return self.call("POST", TWO_FA_PATH, self.headers(**{H_ONE_TIME_TOKEN: ott}), json=body)

    def logout(self, token: str, userid: str = USER.userid) -> requests.Response:
        headers = self.headers(**{H_SESSION_TOKEN: token, H_USERID: userid})
        return self.call("DELETE", LOGOUT_PATH, headers)

    def ott(self) -> str:
        resp = self.login()
        assert resp.status_code == 200, resp.text
        return str(resp.json()["Success"]["oneTimeToken"])

    def session(self) -> str:
        resp = self.two_fa(self.ott())
        assert resp.status_code == 200, resp.text
        return str(resp.json()["Success"]["sessionToken"])

    def trade(self, route: tuple[str, str], token: str, **kw: Any) -> requests.Response:
        headers = {
            H_AUTHORIZATION: f"Bearer {self.config.access_token}",
            H_CONSUMER_KEY: self.config.consumer_key,
            H_SESSION_TOKEN: token,
        }
        return self.call(route[0], route[1], headers, **kw)


def fault_of(resp: requests.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"fault"}, body
    fault: dict[str, Any] = body["fault"]
    assert set(fault) == {"code", "message", "description"}
    return fault


@pytest.fixture(scope="module")
def shared() -> Iterator[Sandbox]:
    with run_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sb(shared: Sandbox) -> Sandbox:
    shared.control.reset()
    return shared


@pytest.fixture
def client(sb: Sandbox) -> Iterator[Client]:
    c = Client(sb.url)
    yield c
    c.http.close()


@pytest.fixture
def ctl(sb: Sandbox) -> Iterator[HttpSandboxControl]:
    control = HttpSandboxControl(sb.root)
    yield control
    control.close()


# -- happy paths -------------------------------------------------------------------------------


def test_four_session_calls(sb: Sandbox, client: Client) -> None:
    init = client.init()
    assert init.status_code == 200
    payload = init.json()["Success"]
    assert payload["redirect"] == {"host": sb.url, "port": sb.port}
    assert payload["userid"] == USER.userid
    assert payload["encryption"]["type"] == "PLAIN"
    assert payload["status"] == "Success"

    ott = client.ott()
    two_fa = client.two_fa(ott)
    assert two_fa.status_code == 200
    session = two_fa.json()["Success"]
    assert session["userId"] == USER.userid
    assert isinstance(session["loginTime"], int) and session["loginTime"] > 1_600_000_000
    assert session["sessionToken"] and session["publicToken"]
    assert session["sessionToken"] != ott

    out = client.logout(session["sessionToken"])
    assert out.status_code == 200
    assert out.json()["Success"]["message"]
    stats = sb.control.stats()
    assert (stats["logins"], stats["sessions"], stats["logouts"]) == (1, 1, 1)
    assert stats["calls"] == {
        f"GET {INIT_PATH}": 1,
        f"POST {LOGIN_PATH}": 1,
        f"POST {TWO_FA_PATH}": 1,
        f"DELETE {LOGOUT_PATH}": 1,
    }


def test_trading_endpoints(sb: Sandbox, client: Client) -> None:
    token = client.session()
    assert client.trade(ORDERS_REPORT, token).json() == {"Success": []}
    order = {"instrumentToken": 11536, "transactionType": "BUY", "quantity": 1, "price": 0}
    placed = client.trade(ORDER_NORMAL, token, json=order)
    assert placed.status_code == 200
    echo = placed.json()["Success"]
    assert echo["orderId"] and {k: echo[k] for k in order} == order
    report = client.trade(ORDERS_REPORT, token).json()["Success"]
    assert [o["orderId"] for o in report] == [echo["orderId"]]
    positions = client.trade(POSITIONS_TODAY, token).json()["Success"]
    assert positions and "instrumentToken" in positions[0]
    quotes = client.trade(("GET", QUOTES_LTP_PREFIX + "11536-1594"), token)
    assert [q["instrumentToken"] for q in quotes.json()["Success"]] == [11536, 1594]
    assert sb.control.stats()["calls"][f"GET {QUOTES_LTP_TEMPLATE}"] == 1
    bad = client.trade(("GET", QUOTES_LTP_PREFIX), token)
    assert (bad.status_code, fault_of(bad)["code"]) == (400, FAULT_BAD_REQUEST)
    non_json = client.trade(ORDER_NORMAL, token, data=b"not json")
    assert (non_json.status_code, fault_of(non_json)["code"]) == (400, FAULT_BAD_REQUEST)


def test_keep_alive_reuses_one_connection(sb: Sandbox, client: Client) -> None:
    before = sb.connections_opened
    for _ in range(5):
        assert client.init().status_code == 200
    token = client.session()
    assert client.trade(POSITIONS_TODAY, token).status_code == 200
    assert sb.connections_opened - before == 1


def test_header_names_are_case_insensitive(client: Client) -> None:
    headers = {k.lower(): v for k, v in client.headers(**{H_USERID: USER.userid}).items()}
    resp = client.call("GET", INIT_PATH, {**headers, "User-Agent": "OpenAPI-Generator/1.0"})
    assert resp.status_code == 200


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [H_USERID, H_CONSUMER_KEY, H_IP, H_APP_ID])
@pytest.mark.parametrize("value", [None, ""])
def test_missing_or_empty_header_is_400(client: Client, header: str, value: str | None) -> None:
    headers = client.headers(**{H_USERID: USER.userid})
    if value is None:
        del headers[header]
    else:
        headers[header] = value
    resp = client.call("GET", INIT_PATH, headers)
    assert resp.status_code == 400
    fault = fault_of(resp)
    assert fault["code"] == FAULT_BAD_REQUEST
    assert header in fault["description"]


def test_missing_one_time_token_and_session_token_are_400(client: Client) -> None:
    resp = client.call(
        "POST", TWO_FA_PATH, client.headers(), json={"userid": "u", "accessCode": "1"}
    )
    assert (resp.status_code, fault_of(resp)["code"]) == (400, FAULT_BAD_REQUEST)
    assert H_ONE_TIME_TOKEN in fault_of(resp)["description"]
    resp = client.trade(ORDERS_REPORT, "")
    assert resp.status_code == 400 and H_SESSION_TOKEN in fault_of(resp)["description"]


@pytest.mark.parametrize(
    ("body", "named"),
    [({"userid": USER.userid}, "password"), ({"password": "x"}, "userid"), (b"{not json", "JSON")],
)
def test_bad_login_body_is_400(client: Client, body: Any, named: str) -> None:
    kw = {"data": body} if isinstance(body, bytes) else {"json": body}
    resp = client.call("POST", LOGIN_PATH, client.headers(), **kw)
    assert resp.status_code == 400
    assert fault_of(resp)["code"] == FAULT_BAD_REQUEST
    assert named in fault_of(resp)["description"]


@pytest.mark.parametrize(
    "auth", ["Bearer wrong-token", "", "Basic demo-access-token", f"Bearer {CFG.access_token}x"]
)
def test_wrong_bearer_is_gateway_fault(client: Client, auth: str) -> None:
    headers = client.headers(**{H_USERID: USER.userid, H_AUTHORIZATION: auth})
    resp = client.call("GET", INIT_PATH, headers)
    assert resp.status_code == 401
    fault = fault_of(resp)
    assert (fault["code"], fault["message"]) == (FAULT_GATEWAY_TOKEN, "Invalid Credentials")


def test_wrong_consumer_key_is_gateway_fault(client: Client) -> None:
    resp = client.call("POST", LOGIN_PATH, client.headers(**{H_CONSUMER_KEY: "nope"}), json={})
    assert resp.status_code == 401 and fault_of(resp)["code"] == FAULT_GATEWAY_TOKEN


@pytest.mark.parametrize(("userid", "password"), [(USER.userid, "wrong"), ("nobody", "x")])
def test_wrong_password_or_unknown_user(
    sb: Sandbox, client: Client, userid: str, password: str
) -> None:
    resp = client.login(password=password, userid=userid)
    assert resp.status_code == 401
    assert fault_of(resp)["code"] == FAULT_WRONG_PASSWORD
    assert sb.control.stats()["logins"] == 0


def test_wrong_access_code_keeps_ott_usable(sb: Sandbox, client: Client) -> None:
    ott = client.ott()
    wrong = client.two_fa(ott, code="0000")
    assert wrong.status_code == 401 and fault_of(wrong)["code"] == FAULT_WRONG_ACCESS_CODE
    assert client.two_fa(ott).status_code == 200
    assert sb.control.stats()["sessions"] == 1


def test_ott_is_single_use(client: Client) -> None:
    ott = client.ott()
    assert client.two_fa(ott).status_code == 200
    again = client.two_fa(ott)
    assert again.status_code == 401 and fault_of(again)["code"] == FAULT_OTT_INVALID


def test_new_login_invalidates_previous_ott(client: Client) -> None:
    first, second = client.ott(), client.ott()
    assert fault_of(client.two_fa(first))["code"] == FAULT_OTT_INVALID
    assert client.two_fa(second).status_code == 200


def test_ott_expires_with_the_sandbox_clock(client: Client, ctl: HttpSandboxControl) -> None:
    ott = client.ott()
    assert ctl.advance(CFG.ott_ttl + 1) == pytest.approx(CFG.ott_ttl + 1)
    resp = client.two_fa(ott)
    assert resp.status_code == 401 and fault_of(resp)["code"] == FAULT_OTT_INVALID
    fresh = client.ott()
    assert ctl.expire_ott() == 1
    assert fault_of(client.two_fa(fresh))["code"] == FAULT_OTT_INVALID


def test_ott_of_another_user_is_rejected(client: Client) -> None:
    resp = client.two_fa(client.ott(), userid="someone-else")
    assert resp.status_code == 401 and fault_of(resp)["code"] == FAULT_OTT_INVALID


def test_session_expires_with_the_sandbox_clock(sb: Sandbox, client: Client) -> None:
    token = client.session()
    sb.control.advance(CFG.session_ttl - 10)
    assert client.trade(ORDERS_REPORT, token).status_code == 200
    sb.control.advance(11)
    resp = client.trade(ORDERS_REPORT, token)
    assert resp.status_code == 401 and fault_of(resp)["code"] == FAULT_SESSION_EXPIRED
    assert sb.control.stats()["logged_out_token_uses"] == 0


def test_expire_via_control_plane(client: Client, ctl: HttpSandboxControl) -> None:
    token = client.session()
    assert ctl.expire(userid="someone-else") == 0
    assert client.trade(POSITIONS_TODAY, token).status_code == 200
    assert ctl.expire() == 1
    resp = client.trade(POSITIONS_TODAY, token)
    assert resp.status_code == 401 and fault_of(resp)["code"] == FAULT_SESSION_EXPIRED
    assert ctl.stats()["logged_out_token_uses"] == 0


def test_logged_out_token_is_rejected_and_counted(sb: Sandbox, client: Client) -> None:
    token = client.session()
    assert client.logout(token).status_code == 200
    for route in (ORDERS_REPORT, POSITIONS_TODAY):
        resp = client.trade(route, token)
        assert resp.status_code == 401 and fault_of(resp)["code"] == FAULT_SESSION_EXPIRED
    again = client.logout(token)
    assert again.status_code == 401 and fault_of(again)["code"] == FAULT_SESSION_EXPIRED
    stats = sb.control.stats()
    assert (stats["logouts"], stats["logged_out_token_uses"]) == (1, 3)


def test_new_2fa_replaces_the_previous_session(sb: Sandbox, client: Client) -> None:
    old, new = client.session(), client.session()
    assert fault_of(client.trade(ORDERS_REPORT, old))["code"] == FAULT_SESSION_EXPIRED
    assert client.trade(ORDERS_REPORT, new).status_code == 200
    assert sb.control.stats()["logged_out_token_uses"] == 0


def test_unknown_path_and_wrong_method(client: Client) -> None:
    resp = client.call("GET", "/session/1.0/nothing", client.headers())
    assert resp.status_code == 404 and "fault" in resp.json()
    resp = client.call("GET", LOGIN_PATH, client.headers())
    assert resp.status_code == 405 and "fault" in resp.json()


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
