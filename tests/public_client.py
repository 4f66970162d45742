"""The public generated client's trading requests and its way of reading answers, restated.

``osparamatrix/ks-orderapi-python`` (1.0.26) is not on PyPI, so this module reproduces what
``/work/shared/ks-trading-api.md`` records of it: the extra headers it sends on every trading
call (``Content-Type: application/json`` on every method, GET and DELETE too), its bodies (the
models' JSON keys, ``None`` left out, values as given), path parameters percent-encoded with no
safe characters, the historical ``input`` (default ``json.dumps`` separators, URL-safe base64
with ``=`` padding, then percent-encoded), the wrapper's defaults, and the answer rules of
``api_client.py`` (a 2xx body must be a JSON object; a truthy ``fault`` raises with the fault
code as status; anything else is returned raw) and ``get_order_id``.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import requests

#: Headers the client adds to every trading call (the session adds Bearer, consumerKey and
#: sessionToken, as the client does).
CLIENT_HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/json",
    "User-Agent": "KSTradeApi-python/1.0.0/python",
}
#: ``place_order``'s order-type codes and the endpoints they choose.
PLACE_PATHS = {
    "O": "/orders/1.0/orders",
    "N": "/orders/1.0/order/normal",
    "SM": "/orders/1.0/order/supermultiple",
    "SOR": "/orders/1.0/order/sor",
    "MTF": "/orders/1.0/order/mtf",
    "MIS": "/orders/1.0/order/mis",
}
POSITION_PATHS = {
    "TODAYS": "/positions/1.0/positions/todays",
    "OPEN": "/positions/1.0/positions/open",
    "STOCKS": "/positions/1.0/positions/stocks",
}
QUOTE_PATHS = {
    None: "/quotes/v1.0/instruments/",
    "LTP": "/quotes/v1.0/ltp/instruments/",
    "DEPTH": "/quotes/v1.0/depth/instruments/",
    "OHLC": "/quotes/v1.0/ohlc/instruments/",
}


class ApiException(Exception):
    """The client's error: ``status`` is the HTTP status, or the fault code of a 2xx fault."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"({status}) {reason}")
        self.status = status
        self.reason = reason


def body(**fields: Any) -> bytes:
    """A model's JSON: the given keys, ``None`` left out, values not converted."""
    return json.dumps({k: v for k, v in fields.items() if v is not None}).encode()


def path_param(value: object) -> str:
    """A path parameter as the client encodes it (``,`` -> ``%2C``, ``=`` -> ``%3D``)."""
    return quote(str(value), safe="")


def place_body(order_type: str, instrument_token: int, transaction_type: str, quantity: int,
               price: float, *, disclosed_quantity: int = 0, trigger_price: float = 0,
               tag: str = "string", validity: str = "GFD", variety: str = "REGULAR",
               product: str | None = None, smart_order_routing: str | None = None,
               ) -> bytes:  # fmt: skip
    """``KSTradeApi.place_order``'s body, with its defaults (``tag`` is the word "string")."""
    generic = order_type == "O"
    return body(
        instrumentToken=instrument_token, transactionType=transaction_type, quantity=quantity,
        price=price, disclosedQuantity=disclosed_quantity, triggerPrice=trigger_price,
        tag=tag, validity=validity, variety=variety,
        product=product if generic else None,
        smartOrderRouting=smart_order_routing if generic else None,
    )  # fmt: skip


def modify_body(order_id: object, price: float, quantity: int, disclosed_quantity: int,
                trigger_price: float, validity: str) -> bytes:  # fmt: skip
    """``KSTradeApi.modify_order``'s ``ExistingOrder`` body."""
    return body(orderId=order_id, price=price, quantity=quantity,
                disclosedQuantity=disclosed_quantity, triggerPrice=trigger_price,
                validity=validity)  # fmt: skip


def margin_body(transaction_type: str, order_info: list[dict[str, Any]]) -> bytes:
    """``KSTradeApi.margin_required``: each entry's snake_case keys camel-cased."""

    def camel(key: str) -> str:
        head, *rest = key.split("_")
        return head + "".join(p.title() for p in rest)

    info = [{camel(k): v for k, v in entry.items()} for entry in order_info]
    return body(transactionType=transaction_type, orderInfo=info)


def history_path(resource: str, json_input: dict[str, Any]) -> str:
    """``KSTradeApi.history``'s path: default separators, URL-safe base64 with padding."""
    encoded = base64.urlsafe_b64encode(json.dumps(json_input).encode()).decode()
    return f"/trade/1.0.0/equity/{resource}/i/{path_param(encoded)}"


def read(response: requests.Response) -> Any:
    """``api_client``'s answer rules: the raw object, or ApiException."""
    if not 200 <= response.status_code <= 299:
        raise ApiException(response.status_code, response.text)
    data = response.json()
    if data.get("fault"):  # AttributeError on a top-level list, as in the client
        raise ApiException(data["fault"]["code"], data["fault"]["message"])
    return data


def get_order_id(answer: dict[str, Any]) -> str:
    """``KSTradeApi.get_order_id``, rule for rule."""
    inner = answer.get("Success") or answer.get("success")
    if "NSE" in inner and "BSE" in inner:
        chosen = inner["NSE"] if inner["NSE"].get("orderId") else inner["BSE"]
    elif "NSE" in inner or "BSE" in inner:
        chosen = inner.get("NSE") or inner.get("BSE")
    else:
        chosen = inner
    return str(chosen["orderId"])
