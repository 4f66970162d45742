"""The sandbox's four session calls and trading endpoints: answers, validation, token rules."""

from __future__ import annotations

from typing import Any

import pytest

from session_fsm.contract import (
    FAULT_BAD_REQUEST,
    FAULT_GATEWAY_TOKEN,
    FAULT_OTT_INVALID,
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
    ORDER_NORMAL,
    ORDERS_REPORT,
    POSITIONS_TODAY,
    QUOTES_LTP_PREFIX,
)
from session_fsm.sandbox import (
    QUOTES_LTP_TEMPLATE,
    HttpSandboxControl,
    Sandbox,
)
from tests.sandbox_server.client import (
    CFG,
    INIT_PATH,
    LOGIN_PATH,
    LOGOUT_PATH,
    TWO_FA_PATH,
    USER,
    Client,
    fault_of,
)

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
    echo = placed.json()["Success"]["NSE"]
    assert echo["orderId"] and echo["quantity"] == 1 and echo["price"] == 0
    report = client.trade(ORDERS_REPORT, token).json()["Success"]
    assert [o["orderId"] for o in report] == [echo["orderId"]]
    positions = client.trade(POSITIONS_TODAY, token).json()["Success"]
    assert [p["instrumentToken"] for p in positions] == [11536]
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
