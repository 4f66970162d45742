"""Every trading endpoint of the public client, driven through KSSession against the sandbox.

Requests are shaped exactly as ``ks_api_client`` sends them (``tests/public_client.py``, from
``ks-trading-api.md``): its extra headers, its bodies with the wrapper's defaults, its
percent-encoded path parameters and historical input. Answers are read with the client's own
rules (a 2xx JSON object, no truthy ``fault``; ``get_order_id`` for orders).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from session_fsm import KSSession
from session_fsm.sandbox import Sandbox
from session_fsm.sandbox.market import INSTRUMENTS, MARGIN_RATE
from session_fsm.sandbox.routes import ENDPOINTS
from tests.public_client import (
    CLIENT_HEADERS,
    PLACE_PATHS,
    POSITION_PATHS,
    QUOTE_PATHS,
    get_order_id,
    history_path,
    margin_body,
    modify_body,
    path_param,
    place_body,
    read,
)

Factory = Callable[..., KSSession]
#: The per-kind endpoints' codes (the wrapper never calls their modify and cancel).
KIND_CODES = ("N", "MIS", "MTF", "SOR", "SM")
HISTORY_EXAMPLES = {
    "historicalprices": {"exchange": "bse", "cocode": "476", "fromdate": "01-jan-2014",
                         "todate": "08-jan-2014"},
    "historicalprices-unadjusted": {"exchange": "bse", "co_code": "476", "date": "16-Jun-2016"},
    "NSEFNO_HistoricalContinuousChart": {"symbol": "HDFC", "expiry type": "near"},
    "LiveorEODHistorical": {"exchange": "BSE", "co_code": "5400", "period": "Y", "cnt": "3"},
}  # fmt: skip


class Bot:
    """A KSSession speaking like the public client."""

    def __init__(self, session: KSSession) -> None:
        self.s = session

    def __call__(self, method: str, path: str, data: bytes | None = None) -> Any:
        return read(self.s.request(method, path, headers=CLIENT_HEADERS, data=data))

    def place(self, code: str, token: int = 11536, qty: int = 2, price: float = 0, **kw: Any
              ) -> str:  # fmt: skip
        answer = self("POST", PLACE_PATHS[code], place_body(code, token, "BUY", qty, price, **kw))
        return get_order_id(answer)


@pytest.fixture
def bot(new_session: Factory) -> Bot:
    s = new_session()
    s.connect()
    return Bot(s)


def test_every_trading_endpoint_answers_what_the_client_parses(sb: Sandbox, bot: Bot) -> None:
    # Orders of every kind through the wrapper's place_order (filled at once by default).
    ids = {code: bot.place(code, product="NORMAL" if code == "O" else None)
           for code in PLACE_PATHS}  # fmt: skip
    assert len(set(ids.values())) == len(PLACE_PATHS) and all(i.isdigit() for i in ids.values())
    sb.control.settings(fill="never")
    # Per-kind modify and cancel (the API modules' own endpoints), then the wrapper's generic.
    for code in KIND_CODES:
        oid = bot.place(code, price=3000.0)
        path = PLACE_PATHS[code]
        changed = bot("PUT", path, modify_body(oid, 3010.0, 3, 0, 0, "GFD"))
        assert get_order_id(changed) == oid and changed["Success"]["NSE"]["quantity"] == 3
        cancelled = bot("DELETE", f"{path}/{path_param(oid)}")
        assert get_order_id(cancelled) == oid
    oid = bot.place("N", price=3000.0)
    assert get_order_id(bot("PUT", PLACE_PATHS["O"], modify_body(oid, 3001, 1, 0, 0, "IOC")))
    assert get_order_id(bot("DELETE", f"{PLACE_PATHS['O']}/{path_param(oid)}")) == oid
    # Reports: all orders; one order's versions (lowercase success, current status last).
    rows = bot("GET", "/reports/1.0/orders")["Success"]
    assert len(rows) == len(PLACE_PATHS) + len(KIND_CODES) + 1
    history = bot("GET", f"/reports/1.0/orders/{path_param(oid)}")["success"]
    assert [v["status"] for v in history] == ["OPN", "OPN", "CAN"]
    trades = bot("GET", "/reports/1.0/trades")["Success"]
    assert sorted(str(t["orderId"]) for t in trades) == sorted(ids.values())
    one = bot("GET", f"/reports/1.0/trades/{path_param(ids['MIS'])}")["Success"]
    assert [(t["quantity"], t["price"]) for t in one] == [(2, INSTRUMENTS[11536].last)]
    # Positions: the wrapper's three types, and the engine's raw snapshot.
    today = bot("GET", POSITION_PATHS["TODAYS"])["Success"]
    assert [(p["instrumentToken"], p["netTrdQtyLot"]) for p in today] == [(11536, 12)]
    assert bot("GET", POSITION_PATHS["OPEN"])["Success"] == today
    assert {p["instrumentName"] for p in bot("GET", POSITION_PATHS["STOCKS"])["Success"]}
    assert set(bot("GET", "/positions/1.0/positions")["Success"]) == {"todays", "open", "stocks"}
    # Quotes: one token, and a comma list as the client encodes it (110%2C727).
    for quote_type, prefix in QUOTE_PATHS.items():
        one_quote = bot("GET", prefix + path_param(11536))["Success"]
        two = bot("GET", prefix + path_param("11536,1594"))["Success"]
        assert [q["instrumentToken"] for q in two] == [11536, 1594] and one_quote == two[:1]
        if quote_type == "LTP":
            assert one_quote[0]["lastPrice"] == INSTRUMENTS[11536].last
    # Margin, with the wrapper's snake_case keys camel-cased.
    info = [{"instrument_token": 1594, "quantity": 10, "price": 1400.0, "amount": 0,
             "trigger_price": 0}]  # fmt: skip
    needed = bot("POST", "/margin/1.0/margin/required", margin_body("BUY", info))["Success"]
    assert needed["totalMarginRequired"] == 10 * 1400.0 * MARGIN_RATE
    # Historical: the README's examples of each resource.
    for resource, example in HISTORY_EXAMPLES.items():
        series = bot("GET", history_path(resource, example))["Success"]
        assert series and {"date", "open", "high", "low", "close"} <= set(series[0])
    served = set(sb.control.stats()["calls"])
    assert {e.key for e in ENDPOINTS if not e.session_call} <= served


@pytest.mark.parametrize("code", list(PLACE_PATHS))
def test_place_answer_gives_get_order_id_its_id_and_the_report_has_it(
    bot: Bot, code: str
) -> None:
    oid = bot.place(code, token=2885, qty=5, price=2400.0, tag="t1")
    (row,) = bot("GET", "/reports/1.0/orders")["Success"]
    assert str(row["orderId"]) == oid and row["instrumentToken"] == "2885"
    assert (row["orderQuantity"], row["price"], row["tag"], row["status"]) == (5, 2400.0, "t1",
                                                                               "TRAD")  # fmt: skip


def test_exact_public_client_headers_without_the_session_extras(sb: Sandbox, bot: Bot) -> None:
    """The client sends no ip/appId on trading calls, and only the Bearer on historical."""
    token = bot.s.snapshot().session_token
    assert token is not None
    bearer = {"Authorization": "Bearer demo-access-token", **CLIENT_HEADERS}
    trading = {**bearer, "consumerKey": "demo-consumer-key", "sessionToken": token.reveal()}
    http = requests.Session()
    try:
        r = http.get(sb.url + "/reports/1.0/orders", headers=trading, timeout=5)
        assert r.status_code == 200 and read(r) == {"Success": []}
        r = http.delete(sb.url + "/orders/1.0/orders/42", headers=trading, timeout=5)
        assert r.status_code == 400 and "orderId" in r.json()["fault"]["description"]
        path = history_path("LiveorEODHistorical", HISTORY_EXAMPLES["LiveorEODHistorical"])
        assert path.endswith("%3D")  # the base64 padding, percent-encoded
        r = http.get(sb.url + path, headers=bearer, timeout=5)
        assert r.status_code == 200 and len(read(r)["Success"]) == 3
    finally:
        http.close()
