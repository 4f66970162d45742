"""The wire layer against the sandbox over loopback HTTP: every call, envelope and error class."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from session_fsm import (
    BadRequest,
    GatewayAuthError,
    KSError,
    LoginRejected,
    MalformedAnswer,
    NetworkError,
    NotAuthorized,
    OneTimeTokenRejected,
    RateLimited,
    RequestTimeout,
    RetryPolicy,
    Secret,
    ServiceUnavailable,
    SessionExpired,
    UnsafeRedirect,
    Wire,
    WireConfig,
    WrongDomain,
    contract,
)
from session_fsm.errors import Call, error_for
from session_fsm.models import (
    ResLogin,
    ResLogout,
    ResSession2FA,
    ResSessionInit,
    UserCredentials,
    UserDetails,
)
from session_fsm.sandbox import Sandbox, SandboxConfig, run_sandbox
from session_fsm.wire import Identity, check_host, host_allowed

NO_RETRY = RetryPolicy(total=0)


@pytest.fixture
def wire() -> Iterator[Wire]:
    w = Wire(WireConfig(timeout=(1.0, 0.4), retry=NO_RETRY))
    yield w
    w.close()


def who(token: str = "demo-access-token") -> Identity:
    return Identity("demo-user", "demo-consumer-key", "127.0.0.1", "tests", Secret(token))


def login_body(pw: str = "demo-password") -> UserCredentials:
    return UserCredentials("demo-user", Secret(pw))


def details(code: str = "1234") -> UserDetails:
    return UserDetails("demo-user", Secret(code))


def authenticate(wire: Wire, sb: Sandbox) -> ResSession2FA:
    ott = wire.login_with_user_id(sb.url, who(), login_body()).one_time_token
    return wire.generate_session2_fa(sb.url, who(), ott, details())


def test_four_calls_and_a_trading_call(wire: Wire, sb: Sandbox) -> None:
    init = wire.session_init(sb.url, who())
    assert isinstance(init, ResSessionInit)
    assert init.redirect is not None and init.redirect.host == sb.url
    assert init.encryption.type == "PLAIN"
    login = wire.login_with_user_id(sb.url, who(), login_body())
    assert isinstance(login, ResLogin) and login.one_time_token
    fa = wire.generate_session2_fa(sb.url, who(), login.one_time_token, details())
    assert isinstance(fa, ResSession2FA) and fa.session_token and fa.user_id == "demo-user"
    r = wire.trading_request("GET", sb.url + "/reports/1.0/orders", who(), fa.session_token)
    assert r.status_code == 200
    out = wire.session_logout(sb.url, who(), fa.session_token)
    assert isinstance(out, ResLogout)
    calls = sb.control.stats()["calls"]
    assert calls == {
        "GET /session/1.0/session/init": 1,
        "POST /session/1.0/session/login/userid": 1,
        "POST /session/1.0/session/2FA/accesscode": 1,
        "GET /reports/1.0/orders": 1,
        "DELETE /session/1.0/session/logout": 1,
    }


@pytest.mark.parametrize(
    "path", [contract.SESSION_INIT[1], contract.LOGIN_USERID[1], contract.TWO_FA_ACCESSCODE[1]]
)
def test_lowercase_success_envelope_accepted(wire: Wire, sb: Sandbox, path: str) -> None:
    sb.control.fault(path, envelope="success")
    wire.session_init(sb.url, who())
    assert authenticate(wire, sb).session_token
    assert sb.control.stats()["faults_served"] == 1


def test_lowercase_envelope_from_a_whole_sandbox(wire: Wire) -> None:
    with run_sandbox(SandboxConfig(envelope="success")) as other:
        assert wire.session_init(other.url, who()).redirect is not None
        assert authenticate(wire, other).session_token


def test_unknown_fields_are_kept_not_fatal() -> None:
    init = ResSessionInit.parse(
        {"redirect": {"host": "https://x.kotaksecurities.com/apim"}, "brandNew": {"a": 1}}
    )
    assert init.extra == {"brandNew": {"a": 1}}
    assert ResLogin.parse({"oneTimeToken": "t", "surprise": 2}).extra == {"surprise": 2}


# Each fault: (call, fault kwargs, expected error class). Calls are run through ``CALLS``.
FAULTS: list[tuple[str, dict[str, Any], type[KSError]]] = [
    ("init", {"status": 400}, BadRequest),
    ("init", {"status": 401, "code": contract.FAULT_GATEWAY_TOKEN}, GatewayAuthError),
    ("login", {"status": 401, "code": 0}, LoginRejected),
    ("twofa", {"status": 401, "code": contract.FAULT_OTT_INVALID}, OneTimeTokenRejected),
    ("trading", {"status": 401, "code": contract.FAULT_SESSION_EXPIRED}, SessionExpired),
    ("trading", {"status": 401, "code": 0}, SessionExpired),
    ("logout", {"status": 401, "code": contract.FAULT_SESSION_EXPIRED}, SessionExpired),
    ("init", {"status": 403, "code": contract.FAULT_WRONG_DOMAIN}, WrongDomain),
    ("login", {"status": 403, "code": contract.FAULT_NOT_AUTHORIZED}, NotAuthorized),
    ("login", {"status": 429, "retry_after": 7}, RateLimited),
    ("init", {"status": 500}, ServiceUnavailable),
    ("twofa", {"status": 503}, ServiceUnavailable),
    ("logout", {"status": 504}, ServiceUnavailable),
    ("login", {"drop": True}, NetworkError),
    ("init", {"delay": 0.8}, RequestTimeout),
    ("login", {"malformed": True}, MalformedAnswer),
    ("twofa", {"missing_field": True}, MalformedAnswer),
]

PATHS = {
    "init": contract.SESSION_INIT[1],
    "login": contract.LOGIN_USERID[1],
    "twofa": contract.TWO_FA_ACCESSCODE[1],
    "logout": contract.SESSION_LOGOUT[1],
    "trading": contract.ORDERS_REPORT[1],
}


def run_call(wire: Wire, sb: Sandbox, call: str, arm: Callable[[], None]) -> Any:
    """Bring the server to where ``call`` makes sense, arm the fault, make the call."""
    if call == "init":
        arm()
        return wire.session_init(sb.url, who())
    if call == "login":
        arm()
        return wire.login_with_user_id(sb.url, who(), login_body())
    ott = wire.login_with_user_id(sb.url, who(), login_body()).one_time_token
    if call == "twofa":
        arm()
        return wire.generate_session2_fa(sb.url, who(), ott, details())
    token = wire.generate_session2_fa(sb.url, who(), ott, details()).session_token
    arm()
    if call == "logout":
        return wire.session_logout(sb.url, who(), token)
    r = wire.trading_request("GET", sb.url + PATHS["trading"], who(), token)
    Wire.raise_for(Call.TRADING, r)
    return r


@pytest.mark.parametrize(
    ("call", "fault", "error"),
    FAULTS,
    ids=[f"{c}-{'-'.join(map(str, f.values()))}" for c, f, _ in FAULTS],
)
def test_each_error_class(
    wire: Wire, sb: Sandbox, call: str, fault: dict[str, Any], error: type[KSError]
) -> None:
    with pytest.raises(error) as info:
        run_call(wire, sb, call, lambda: sb.control.fault(PATHS[call], **fault))
    exc = info.value
    if "status" in fault:
        assert exc.status == fault["status"]
    if fault.get("code"):
        assert exc.fault_code == fault["code"]
    if error is RateLimited:
        assert isinstance(exc, RateLimited) and exc.retry_after == 7
    if error is MalformedAnswer and fault.get("missing_field"):
        assert isinstance(exc, MalformedAnswer) and exc.field == "sessionToken"
        assert "sessionToken" in str(exc) and "HTTP 200" in str(exc)
    assert exc.hint and exc.hint in str(exc)  # says what to do next


def test_real_validation_errors(wire: Wire, sb: Sandbox) -> None:
    with pytest.raises(GatewayAuthError):
        wire.session_init(sb.url, who("wrong-bearer"))
    with pytest.raises(LoginRejected):
        wire.login_with_user_id(sb.url, who(), login_body("wrong"))
    ott = wire.login_with_user_id(sb.url, who(), login_body()).one_time_token
    with pytest.raises(LoginRejected):
        wire.generate_session2_fa(sb.url, who(), ott, details("0000"))
    sb.control.advance(301)
    with pytest.raises(OneTimeTokenRejected):
        wire.generate_session2_fa(sb.url, who(), ott, details())
    missing = Identity("demo-user", "demo-consumer-key", "", "tests", Secret("demo-access-token"))
    with pytest.raises(BadRequest):
        wire.session_init(sb.url, missing)


def test_session_calls_retry_on_503_trading_post_does_not(sb: Sandbox) -> None:
    slept: list[float] = []
    w = Wire(WireConfig(retry=RetryPolicy(total=2, backoff_factor=0, sleeper=slept.append)))
    sb.control.fault(PATHS["login"], status=503, retry_after=3, count=1)
    ott = w.login_with_user_id(sb.url, who(), login_body()).one_time_token
    assert slept == [3.0]
    token = w.generate_session2_fa(sb.url, who(), ott, details()).session_token
    sb.control.fault(contract.ORDER_NORMAL[1], status=503, count=1)
    r = w.trading_request("POST", sb.url + contract.ORDER_NORMAL[1], who(), token, json={})
    assert r.status_code == 503
    assert sb.control.stats()["calls"]["POST /orders/1.0/order/normal"] == 1
    w.close()


def test_allow_list() -> None:
    cfg = WireConfig()
    assert host_allowed("https://ctradeapi.kotaksecurities.com/apim", cfg)
    assert host_allowed("http://127.0.0.1:9/apim", cfg)
    assert host_allowed("http://localhost:9/apim", cfg)
    for bad in (
        "http://ctradeapi.kotaksecurities.com/apim",  # not https
        "https://kotaksecurities.com.evil.example/apim",  # lookalike
        "https://evilkotaksecurities.com/apim",
        "https://10.0.0.1/apim",
        "ftp://127.0.0.1/",
        "not a url",
    ):
        assert not host_allowed(bad, cfg), bad
    assert not host_allowed("http://127.0.0.1/", WireConfig(allow_loopback=False))
    with pytest.raises(UnsafeRedirect):
        check_host("https://evil.example/apim", cfg)


@pytest.mark.parametrize(
    "target", ["https://evil.example.com/apim", "http://ctradeapi.kotaksecurities.com/apim"]
)
def test_unsafe_redirect_refused_before_any_password(new_session: Any, target: str) -> None:
    with run_sandbox(SandboxConfig(redirect_host=target)) as evil:
        from session_fsm import KSSession
        from tests.conftest import make_credentials

        s = KSSession(make_credentials(), host=evil.url)
        with pytest.raises(UnsafeRedirect) as info:
            s.connect()
        assert target.split("/")[2] in str(info.value)
        calls = evil.control.stats()["calls"]
        assert calls == {"GET /session/1.0/session/init": 1}  # no login call was made
        assert s.state.value == "Uninitialised"
        s.close()


def test_allowed_redirect_is_followed() -> None:
    from session_fsm import KSSession
    from tests.conftest import make_credentials

    with run_sandbox(SandboxConfig(redirect_host="http://localhost:{port}/apim")) as sb:
        s = KSSession(make_credentials(), host=sb.url)
        s.connect()
        assert s.snapshot().host.startswith("http://localhost:")
        assert s.get("/reports/1.0/orders").status_code == 200
        s.close()


def test_error_for_maps_every_documented_code() -> None:
    assert isinstance(error_for(Call.TRADING, 401, None), SessionExpired)
    assert isinstance(error_for(Call.LOGIN, 401, None), LoginRejected)
    assert isinstance(error_for(Call.INIT, 401, None), GatewayAuthError)
    assert isinstance(error_for(Call.TRADING, 418, None), KSError)


def test_no_network_in_constructors() -> None:
    # Port 9 on loopback is closed: a constructor that connected would fail or hang here.
    from session_fsm import KSSession
    from tests.conftest import make_credentials

    w = Wire()
    s = KSSession(make_credentials(), host="http://127.0.0.1:9/apim", wire=w)
    assert w._http is None  # no pool was even created
    assert s.state.value == "Uninitialised"


def test_requests_shaped_like_the_public_generated_client(sb: Sandbox) -> None:
    """The public client (ks_api_client, OpenAPI-generated) sends these headers and reads the
    answers as plain dicts: ``res.get("Success") or res.get("success")`` then keys by name. It
    is not on PyPI, so this reproduces its requests and its way of reading the answers."""
    import requests

    base = {
        "Authorization": "Bearer demo-access-token",
        "Accept": "application/json",
        "User-Agent": "OpenAPI-Generator/1.0.0/python",
        "consumerKey": "demo-consumer-key",
        "ip": "127.0.0.1",
        "appId": "DefaultApplication",
    }

    def answer(r: requests.Response) -> Any:
        body = r.json()
        return body.get("Success") or body.get("success")

    http = requests.Session()
    init = answer(
        http.get(
            sb.url + "/session/1.0/session/init", headers={**base, "userid": "demo-user"}, timeout=5
        )
    )
    host = init["redirect"]["host"]
    login = answer(
        http.post(
            host + "/session/1.0/session/login/userid",
            headers={**base, "Content-Type": "application/json"},
            json={"userid": "demo-user", "password": "demo-password"},
            timeout=5,
        )
    )
    ott = login["oneTimeToken"]
    fa = answer(
        http.post(
            host + "/session/1.0/session/2FA/accesscode",
            headers={**base, "oneTimeToken": ott, "Content-Type": "application/json"},
            json={"userid": "demo-user", "accessCode": "1234"},
            timeout=5,
        )
    )
    token = fa["sessionToken"]
    orders = http.get(
        host + "/reports/1.0/orders", headers={**base, "sessionToken": token}, timeout=5
    )
    assert orders.status_code == 200 and "Success" in orders.json()
    out = http.delete(
        host + "/session/1.0/session/logout",
        headers={**base, "sessionToken": token, "userid": "demo-user"},
        timeout=5,
    )
    assert out.status_code == 200 and answer(out)["message"]
    http.close()
