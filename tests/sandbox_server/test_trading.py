"""The sandbox's trading world over raw HTTP: validation, the order book, fills, market data,
the two "session invalid" answers, one session per user, and the control plane's new verbs."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests

from session_fsm.contract import FAULT_BAD_REQUEST, FAULT_GATEWAY_TOKEN, FAULT_SESSION_EXPIRED
from session_fsm.sandbox import (
    INVALID_SESSION_403,
    Account,
    HttpSandboxControl,
    Sandbox,
    SandboxConfig,
    run_sandbox,
)
from session_fsm.sandbox.orders import FAULT_ORDER_NOT_OPEN, FAULT_ORDER_UNKNOWN
from session_fsm.sandbox.plane import OPERATIONS
from session_fsm.sandbox.routes import ENDPOINTS, GROUPS
from tests.sandbox_server.client import CFG, Client, fault_of

NORMAL = "/orders/1.0/order/normal"
GENERIC = "/orders/1.0/orders"
ORDER = {"instrumentToken": 11536, "transactionType": "BUY", "quantity": 2, "price": 3000.0}


def place(client: Client, token: str, path: str = NORMAL, **over: Any) -> int:
    resp = client.trade(("POST", path), token, json={**ORDER, **over})
    assert resp.status_code == 200, resp.text
    return int(resp.json()["Success"]["NSE"]["orderId"])


def b64(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


# -- validation: a bad body is a 400 naming the field, never its value --------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "named"),
    [
        ("POST", NORMAL, {**ORDER, "instrumentToken": None}, "instrumentToken"),
        ("POST", NORMAL, {**ORDER, "quantity": "2"}, "quantity"),
        ("POST", NORMAL, {**ORDER, "quantity": 0}, "quantity"),
        ("POST", NORMAL, {**ORDER, "quantity": True}, "quantity"),
        ("POST", NORMAL, {**ORDER, "price": -1}, "price"),
        ("POST", NORMAL, {**ORDER, "transactionType": "HOLD-XYZZY"}, "transactionType"),
        ("POST", NORMAL, {**ORDER, "instrumentToken": 999999}, "instrumentToken"),
        ("POST", NORMAL, {**ORDER, "instrument_token": 1}, "instrument_token"),
        ("POST", NORMAL, {**ORDER, "product": "NORMAL"}, "product"),  # only the generic has it
        ("POST", GENERIC, {**ORDER, "cod": {"squareOffFlag": 2}}, "cod.squareOffFlag"),
        ("POST", GENERIC, {**ORDER, "bracket": {"spread": 1.0}}, "bracket.spread"),
        ("POST", "/orders/1.0/order/supermultiple", {**ORDER, "validity": "IOC"}, "validity"),
        ("POST", "/orders/1.0/order/sor", {**ORDER, "variety": "AMO"}, "variety"),
        ("PUT", GENERIC, {"validity": "GFD"}, "orderId"),
        ("PUT", GENERIC, {"orderId": "1"}, "validity"),
        ("PUT", GENERIC, {"orderId": 1, "validity": "GFD", "price": "1"}, "price"),
        ("POST", "/margin/1.0/margin/required", {"transactionType": "BUY"}, "orderInfo"),
        ("POST", "/margin/1.0/margin/required",
         {"transactionType": "BUY", "orderInfo": [{"instrumentToken": 11536}]},
         "orderInfo[0].quantity"),
        ("POST", NORMAL, [ORDER], "request body"),
        ("POST", NORMAL, None, "request body"),
    ],
)  # fmt: skip
def test_bad_body_is_400_naming_the_field(
    client: Client, method: str, path: str, body: Any, named: str
) -> None:
    token = client.session()
    kw = {} if body is None else {"json": body}
    resp = client.trade((method, path), token, **kw)
    assert resp.status_code == 400
    fault = fault_of(resp)
    assert fault["code"] == FAULT_BAD_REQUEST and named in fault["description"]
    assert "XYZZY" not in resp.text and "999999" not in resp.text


@pytest.mark.parametrize(
    ("resource", "data", "named"),
    [
        ("nope", {"symbol": "X"}, "resource"),
        ("NSEFNO_HistoricalContinuousChart", {"symbol": "HDFC"}, "expiry type"),
        ("LiveorEODHistorical", {"exchange": "BSE", "co_code": "1", "period": "Q", "cnt": "3"},
         "period"),
        ("historicalprices-unadjusted", {"exchange": "b", "co_code": "1", "date": "junk",
                                         "extra": "1"}, "extra"),
    ],
)  # fmt: skip
def test_bad_historical_input_is_400_naming_the_key(
    client: Client, resource: str, data: dict[str, str], named: str
) -> None:
    path = f"/trade/1.0.0/equity/{resource}/i/{b64(data)}"
    resp = client.call("GET", path, {"Authorization": f"Bearer {CFG.access_token}"})
    assert resp.status_code == 400 and named in fault_of(resp)["description"]
    garbage = client.call("GET", "/trade/1.0.0/equity/x/i/%%%", client.headers())
    assert garbage.status_code == 400 and "input" in fault_of(garbage)["description"]


def test_trading_headers_and_tokens_are_checked(client: Client) -> None:
    token = client.session()
    no_session = client.call("GET", "/positions/1.0/positions/open", client.headers())
    assert no_session.status_code == 400 and "sessionToken" in fault_of(no_session)["description"]
    headers = {"Authorization": "Bearer wrong", "consumerKey": CFG.consumer_key,
               "sessionToken": token}  # fmt: skip
    wrong = client.call("GET", "/reports/1.0/trades", headers)
    assert wrong.status_code == 401 and fault_of(wrong)["code"] == FAULT_GATEWAY_TOKEN
    dead = client.trade(("GET", "/reports/1.0/trades"), "not-a-session")
    assert dead.status_code == 401 and fault_of(dead)["code"] == FAULT_SESSION_EXPIRED
    history = client.call("GET", f"/trade/1.0.0/equity/x/i/{b64({})}", {})
    assert history.status_code == 401 and fault_of(history)["code"] == FAULT_GATEWAY_TOKEN


def test_403_mode_answers_invalid_session_on_trading_calls(
    client: Client, ctl: HttpSandboxControl
) -> None:
    token = client.session()
    assert ctl.settings(invalid_session=403)["invalid_session"] == 403
    assert client.trade(("GET", "/reports/1.0/orders"), token).status_code == 200  # live: fine
    ctl.expire()
    for method, path in (("GET", "/reports/1.0/orders"), ("POST", NORMAL),
                         ("GET", "/positions/1.0/positions/todays"),
                         ("POST", "/margin/1.0/margin/required")):  # fmt: skip
        resp = client.trade((method, path), token, json={})
        assert resp.status_code == 403
        assert fault_of(resp)["message"] == INVALID_SESSION_403 == (
            "Invalid session, please re-login to continue"
        )
    # The session calls keep their own answer: logout of a dead token is 401 99999.
    assert fault_of(client.logout(token))["code"] == FAULT_SESSION_EXPIRED
    ctl.reset()  # back to the configuration's 401
    resp = client.trade(("GET", "/reports/1.0/orders"), token)
    assert resp.status_code == 401 and fault_of(resp)["code"] == FAULT_SESSION_EXPIRED


# -- the order book --------------------------------------------------------------------------


def test_place_modify_cancel_and_refusals(client: Client, ctl: HttpSandboxControl) -> None:
    token = client.session()
    ctl.settings(fill="never")
    oid = place(client, token)
    mod = {"orderId": str(oid), "quantity": 5, "price": 3005.5, "validity": "GFD"}
    assert client.trade(("PUT", NORMAL), token, json=mod).status_code == 200
    wrong_kind = client.trade(("DELETE", f"/orders/1.0/order/mis/{oid}"), token)
    assert fault_of(wrong_kind)["code"] == FAULT_ORDER_UNKNOWN
    assert client.trade(("DELETE", f"{NORMAL}/{oid}"), token).status_code == 200
    again = client.trade(("DELETE", f"{GENERIC}/{oid}"), token)
    assert again.status_code == 400 and fault_of(again)["code"] == FAULT_ORDER_NOT_OPEN
    late = client.trade(("PUT", GENERIC), token, json=mod)
    assert fault_of(late)["code"] == FAULT_ORDER_NOT_OPEN
    unknown = client.trade(("DELETE", f"{GENERIC}/12345"), token)
    assert unknown.status_code == 400 and fault_of(unknown)["code"] == FAULT_ORDER_UNKNOWN
    (row,) = client.trade(("GET", "/reports/1.0/orders"), token).json()["Success"]
    assert (row["status"], row["orderQuantity"], row["price"]) == ("CAN", 5, 3005.5)
    assert (row["cancelledQuantity"], row["pendingQuantity"], row["filledQuantity"]) == (5, 0, 0)
    assert client.trade(("GET", "/reports/1.0/trades"), token).json()["Success"] == []


def test_fill_rules_and_cancel_of_a_filled_order(client: Client, ctl: HttpSandboxControl) -> None:
    token = client.session()
    filled = place(client, token)  # immediate by default
    refused = client.trade(("DELETE", f"{GENERIC}/{filled}"), token)
    assert fault_of(refused)["code"] == FAULT_ORDER_NOT_OPEN
    assert "filled" in fault_of(refused)["description"]
    ctl.settings(fill="manual")
    first, second = place(client, token), place(client, token, transactionType="SELL")
    assert ctl.fill(order_id=first) == 1 and ctl.fill(userid="someone-else") == 0
    statuses = {o["orderId"]: o["status"] for o in ctl.orders()[CFG.accounts[0].userid]}
    assert statuses == {filled: "TRAD", first: "TRAD", second: "OPN"}
    assert ctl.fill() == 1
    trades = client.trade(("GET", f"/reports/1.0/trades/{second}"), token).json()["Success"]
    assert [(t["transactionType"], t["quantity"], t["price"]) for t in trades] == [
        ("SELL", 2, 3000.0)
    ]
    (pos,) = client.trade(("GET", "/positions/1.0/positions/todays"), token).json()["Success"]
    assert (pos["buyTradedQtyLot"], pos["sellTradedQtyLot"], pos["netTrdQtyLot"]) == (4, 2, 2)
    assert client.trade(("GET", "/positions/1.0/positions/open"), token).json()["Success"] == [
        pos
    ]


def test_positions_pl_and_stocks_follow_the_fills(client: Client) -> None:
    token = client.session()
    place(client, token, instrumentToken=1594, price=1400.0, quantity=4)
    place(client, token, instrumentToken=1594, price=1410.0, quantity=4, transactionType="SELL")
    (pos,) = client.trade(("GET", "/positions/1.0/positions/todays"), token).json()["Success"]
    assert (pos["netTrdQtyLot"], pos["realizedPL"]) == (0, 40.0)
    assert client.trade(("GET", "/positions/1.0/positions/open"), token).json()["Success"] == []
    stocks = client.trade(("GET", "/positions/1.0/positions/stocks"), token).json()["Success"]
    infy = next(s for s in stocks if s["instrumentToken"] == 1594)
    assert (infy["quantity"], infy["sellableQuantity"]) == (10, 6)


def test_books_are_per_user() -> None:
    config = SandboxConfig(accounts=(Account("ann", "pw-a", "11"), Account("bob", "pw-b", "22")))
    with run_sandbox(config) as sandbox:
        ann, bob = Client(sandbox.url, config), Client(sandbox.url, config)
        a = ann.two_fa(ann.login("pw-a", "ann").json()["Success"]["oneTimeToken"], "11", "ann")
        b = bob.two_fa(bob.login("pw-b", "bob").json()["Success"]["oneTimeToken"], "22", "bob")
        ta, tb = a.json()["Success"]["sessionToken"], b.json()["Success"]["sessionToken"]
        oid = place(ann, ta)
        assert bob.trade(("GET", "/reports/1.0/orders"), tb).json() == {"Success": []}
        assert fault_of(bob.trade(("GET", f"/reports/1.0/orders/{oid}"), tb))["code"] == (
            FAULT_ORDER_UNKNOWN
        )
        assert set(sandbox.control.orders()) == {"ann"}
        remote = HttpSandboxControl(sandbox.root)
        assert remote.orders("bob") == {} and [r["orderId"] for r in remote.orders("ann")["ann"]
                                               ] == [oid]  # fmt: skip
        remote.close()
        ann.http.close()
        bob.http.close()


# -- market data --------------------------------------------------------------------------------


def test_quotes_margin_and_history_are_deterministic(client: Client) -> None:
    token = client.session()
    depth = client.trade(("GET", "/quotes/v1.0/depth/instruments/3045"), token).json()
    levels = depth["Success"][0]["depth"]
    assert len(levels["buy"]) == len(levels["sell"]) == 5
    assert levels["buy"][0]["price"] < depth["Success"][0]["lastPrice"] < levels["sell"][0]["price"]
    ohlc = client.trade(("GET", "/quotes/v1.0/ohlc/instruments/3045"), token).json()["Success"][0]
    assert ohlc["low"] <= ohlc["open"] <= ohlc["high"]
    bad = client.trade(("GET", "/quotes/v1.0/instruments/1,x"), token)
    assert bad.status_code == 400 and "instrumentTokens" in fault_of(bad)["description"]
    body = {"transactionType": "SELL", "orderInfo": [{"instrumentToken": 3045, "quantity": 100}]}
    margin = client.trade(("POST", "/margin/1.0/margin/required"), token, json=body).json()
    assert margin["Success"]["totalMarginRequired"] == round(100 * 578.35 * 0.2, 2)
    data = {"exchange": "bse", "cocode": "476", "fromdate": "01-jan-2021", "todate": "31-jan-2021"}
    path = f"/trade/1.0.0/equity/historicalprices/i/{b64(data)}"
    once, twice = (client.call("GET", path, client.headers()).json() for _ in range(2))
    assert once == twice and len(once["Success"]) == 21  # the weekdays of January 2021


# -- one session per user ----------------------------------------------------------------------


def test_single_session_is_switchable(client: Client, ctl: HttpSandboxControl) -> None:
    first, second = client.session(), client.session()
    assert client.trade(("GET", "/reports/1.0/orders"), first).status_code == 401
    ctl.settings(single_session=False)
    third, fourth = client.session(), client.session()
    for token in (second, third, fourth):
        assert client.trade(("GET", "/reports/1.0/orders"), token).status_code == 200
    assert client.logout(third).status_code == 200
    assert client.trade(("GET", "/reports/1.0/orders"), fourth).status_code == 200
    assert ctl.expire(userid=CFG.accounts[0].userid) == 2


# -- control plane ----------------------------------------------------------------------------


def test_control_plane_describes_itself(sb: Sandbox, ctl: HttpSandboxControl) -> None:
    described = ctl.describe()
    ops = {(op["method"], op["path"]): op for op in described["operations"]}
    assert set(ops) == {(op.method, "/_sandbox/" + op.name) for op in OPERATIONS}
    assert {"path", "group", "status", "count"} <= set(ops[("POST", "/_sandbox/faults")]["body"])
    assert set(ops[("POST", "/_sandbox/settings")]["body"]) == {
        "single_session", "invalid_session", "fill"}  # fmt: skip
    assert described["groups"] == GROUPS
    assert len(described["endpoints"]) == len(ENDPOINTS) == 4 + 18 + 4 + 4 + 4 + 1 + 1
    assert described["settings"] == {"single_session": True, "invalid_session": 401,
                                     "fill": "immediate"}  # fmt: skip
    raw = requests.get(sb.root + "/_sandbox", timeout=5)
    assert raw.status_code == 200 and "operations" in raw.json()


def test_stats_count_api_calls_only(client: Client, ctl: HttpSandboxControl) -> None:
    client.init()
    for _ in range(3):
        ctl.stats()
    ctl.describe()
    stats = ctl.stats()
    assert stats["calls"] == {"GET /session/1.0/session/init": 1}
    assert stats["control_calls"] == {"GET stats": 4, "GET /": 1}


@pytest.mark.parametrize(
    ("target", "hit", "missed"),
    [
        ({"group": "orders"}, [("PUT", GENERIC), ("DELETE", f"{NORMAL}/1")],
         ("GET", "/reports/1.0/orders")),
        ({"group": "trading"}, [("GET", "/quotes/v1.0/ltp/instruments/1"),
                                ("POST", "/margin/1.0/margin/required")], None),
        ({"path": "/orders/1.0/order/*/{orderId}"}, [("DELETE", "/orders/1.0/order/mis/7")],
         ("DELETE", f"{GENERIC}/7")),
        ({"path": "/positions/*"}, [("GET", "/positions/1.0/positions")],
         ("GET", "/reports/1.0/trades")),
    ],
)  # fmt: skip
def test_faults_by_group_and_pattern(
    client: Client, ctl: HttpSandboxControl, target: dict[str, str],
    hit: list[tuple[str, str]], missed: tuple[str, str] | None,
) -> None:  # fmt: skip
    token = client.session()
    ctl.fault(**target, status=503, count=len(hit))
    if missed is not None:
        assert client.trade(missed, token).status_code != 503
    for route in hit:
        assert client.trade(route, token).status_code == 503
    assert client.init().status_code == 200  # session calls untouched
    assert ctl.stats()["faults_served"] == len(hit)


def test_bad_fault_targets_and_settings_are_refused(sb: Sandbox, ctl: HttpSandboxControl) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ctl.fault("/x", group="orders", status=503)
    with pytest.raises(ValueError, match="group"):
        ctl.fault(group="everything", status=503)
    with pytest.raises(ValueError, match="invalid_session"):
        ctl.settings(invalid_session=404)
    with pytest.raises(ValueError, match="fill"):
        ctl.settings(fill="sometimes")
    resp = requests.post(sb.root + "/_sandbox/settings", json={"color": "red"}, timeout=5)
    assert resp.status_code == 400 and "color" in resp.json()["error"]
    with pytest.raises(ValueError, match="totp_secret"):
        Account("x", "pw", totp_secret="not base32!")
