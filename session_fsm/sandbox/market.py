"""The sandbox's market: a fixed instrument list, quotes, the margin rule, historical series.

Everything here is a pure function of its input (no clock, no randomness), so a test can
assert exact numbers. Shapes follow the hints of the public client's old test stubs
(``ks-trading-api.md`` section 8): LTP ``{instrumentName, instrumentToken, lastPrice}``, OHLC,
depth with five levels a side, and a full quote combining them.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import zlib
from dataclasses import dataclass
from typing import Any

from .schemas import HISTORICAL, bad_request


@dataclass(frozen=True)
class Instrument:
    """One scrip: token, name, exchange, previous close, last price."""

    token: int
    name: str
    exchange: str
    close: float
    last: float

    def ohlc(self) -> dict[str, float]:
        """Today's open, high, low and (previous) close."""
        open_ = round(self.close * 1.002, 2)
        return {
            "open": open_,
            "high": round(max(open_, self.last) * 1.004, 2),
            "low": round(min(open_, self.last) * 0.996, 2),
            "close": self.close,
        }

    def depth(self) -> dict[str, list[dict[str, float | int]]]:
        """Five bids below and five offers above the last price, 0.05 apart."""
        step = 0.05
        return {
            "buy": [
                {"price": round(self.last - step * (i + 1), 2), "quantity": 100 * (i + 1),
                 "orders": i + 1}
                for i in range(5)
            ],
            "sell": [
                {"price": round(self.last + step * (i + 1), 2), "quantity": 120 * (i + 1),
                 "orders": i + 2}
                for i in range(5)
            ],
        }  # fmt: skip


#: The instruments the sandbox knows (tokens of the NSE cash segment).
INSTRUMENTS: dict[int, Instrument] = {
    i.token: i
    for i in (
        Instrument(11536, "TCS", "NSE", 3125.0, 3130.0),
        Instrument(1594, "INFY", "NSE", 1450.0, 1447.5),
        Instrument(2885, "RELIANCE", "NSE", 2420.0, 2431.25),
        Instrument(1333, "HDFCBANK", "NSE", 1610.0, 1604.8),
        Instrument(3045, "SBIN", "NSE", 575.0, 578.35),
        Instrument(1660, "ITC", "NSE", 410.0, 411.2),
        Instrument(5900, "AXISBANK", "NSE", 990.0, 986.4),
        Instrument(11483, "LT", "NSE", 2280.0, 2291.0),
    )
}

#: The share of an order's value the margin rule asks for, and the funds every user has.
MARGIN_RATE = 0.2
AVAILABLE_MARGIN = 1_000_000.0


def instrument(token: int, field: str = "instrumentToken") -> Instrument:
    """The instrument of ``token``, or a 400 fault naming ``field``."""
    found = INSTRUMENTS.get(token)
    if found is None:
        raise bad_request(f"field '{field}' is not a known instrument token")
    return found


def parse_tokens(text: str) -> list[Instrument]:
    """Tokens joined by ``,`` (the client's ``%2C``) or ``-``: their instruments."""
    parts = text.replace("-", ",").split(",")
    if not text or not all(p.isdigit() for p in parts):
        raise bad_request("path parameter 'instrumentTokens' must be digits joined by , or -")
    return [instrument(int(p), "instrumentTokens") for p in parts]


def quote(kind: str, inst: Instrument) -> dict[str, Any]:
    """One instrument's quote of ``kind`` (full, ltp, depth, ohlc)."""
    head = {"instrumentName": inst.name, "instrumentToken": inst.token}
    if kind == "ltp":
        return {**head, "lastPrice": inst.last}
    if kind == "ohlc":
        return {**head, **inst.ohlc()}
    if kind == "depth":
        return {**head, "lastPrice": inst.last, "depth": inst.depth()}
    return {
        **head,
        "exchange": inst.exchange,
        "lastPrice": inst.last,
        "lastTradedQuantity": 10,
        "tradedQuantity": 125_000,
        "totalBuyQuantity": 1500,
        "totalSellQuantity": 1800,
        "averageTradedPrice": round((inst.close + inst.last) / 2, 2),
        "openInterest": 0,
        "netChange": round(inst.last - inst.close, 2),
        "dprLow": round(inst.close * 0.8, 2),
        "dprHigh": round(inst.close * 1.2, 2),
        "ohlc": inst.ohlc(),
        "depth": inst.depth(),
    }


def margin(body: dict[str, Any]) -> dict[str, Any]:
    """The margin rule: :data:`MARGIN_RATE` of each order's value (its price, or the last
    price when the price is 0 or left out), against :data:`AVAILABLE_MARGIN` of funds."""
    rows = []
    for i, info in enumerate(body["orderInfo"]):
        inst = instrument(info["instrumentToken"], f"orderInfo[{i}].instrumentToken")
        price = float(info.get("price") or inst.last)
        value = round(price * info["quantity"], 2)
        rows.append({
            "instrumentToken": inst.token, "quantity": info["quantity"], "price": price,
            "orderValue": value, "marginRequired": round(value * MARGIN_RATE, 2),
        })  # fmt: skip
    total = round(sum(r["marginRequired"] for r in rows), 2)
    return {
        "transactionType": body["transactionType"],
        "orderInfo": rows,
        "totalMarginRequired": total,
        "availableMargin": AVAILABLE_MARGIN,
        "shortfall": round(max(0.0, total - AVAILABLE_MARGIN), 2),
    }


# -- historical ----------------------------------------------------------------------------------

#: The last day of every historical series that does not name its own dates.
SERIES_END = dt.date(2021, 6, 30)
_MAX_ROWS = 400


def decode_input(text: str) -> dict[str, Any]:
    """The historical ``input`` path parameter: URL-safe base64 (padded) of a JSON object."""
    try:
        data = json.loads(base64.urlsafe_b64decode(text.encode("ascii")).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeError):
        raise bad_request("path parameter 'input' must be URL-safe base64 of JSON") from None
    if not isinstance(data, dict):
        raise bad_request("path parameter 'input' must encode a JSON object")
    return data


def historical(resource: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """A deterministic price series for ``resource`` and its input ``data``."""
    keys = HISTORICAL.get(resource)
    if keys is None:
        raise bad_request("path parameter 'resource' is not a known historical resource")
    for key in sorted(keys | set(data)):
        if key not in data:
            raise bad_request(f"input field '{key}' is missing")
        if key not in keys:
            raise bad_request(f"unknown input field '{key}'")
        if not isinstance(data[key], str) or not data[key]:
            raise bad_request(f"input field '{key}' must be a non-empty string")
    seed = data.get("cocode") or data.get("co_code") or data["symbol"]
    if resource == "historicalprices":
        start, end = _date(data, "fromdate"), _date(data, "todate")
        if end < start or (end - start).days > _MAX_ROWS:
            raise bad_request(f"input field 'todate' must be 0 to {_MAX_ROWS} days after fromdate")
        days = [start + dt.timedelta(n) for n in range((end - start).days + 1)]
    elif resource == "historicalprices-unadjusted":
        days = [_date(data, "date")]
    elif resource == "LiveorEODHistorical":
        step = {"D": 1, "W": 7, "M": 30, "Y": 365}.get(data["period"].upper())
        cnt = data["cnt"]
        if step is None:
            raise bad_request("input field 'period' must be one of D, W, M, Y")
        if not cnt.isdigit() or not 1 <= int(cnt) <= _MAX_ROWS:
            raise bad_request(f"input field 'cnt' must be a whole number 1 to {_MAX_ROWS}")
        days = [SERIES_END - dt.timedelta(step * n) for n in reversed(range(int(cnt)))]
    else:
        days = [SERIES_END - dt.timedelta(n) for n in reversed(range(30))]
    return [_bar(seed, day) for day in days if day.weekday() < 5 or len(days) == 1]


def _date(data: dict[str, Any], key: str) -> dt.date:
    try:
        return dt.datetime.strptime(data[key], "%d-%b-%Y").date()
    except ValueError:
        raise bad_request(f"input field '{key}' must be a date like 01-jan-2014") from None


def _bar(seed: str, day: dt.date) -> dict[str, Any]:
    base = 100 + zlib.crc32(seed.encode()) % 2000
    close = round(base * (1 + 0.05 * math.sin(day.toordinal() / 9)), 2)
    return {
        "date": day.strftime("%d-%b-%Y"),
        "open": round(close * 0.995, 2),
        "high": round(close * 1.01, 2),
        "low": round(close * 0.985, 2),
        "close": close,
        "volume": 10_000 + zlib.crc32(f"{seed}{day}".encode()) % 90_000,
    }
