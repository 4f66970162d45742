"""The request bodies of the trading endpoints, as the public generated client builds them, and
their validation: a bad body is a 400 fault whose description names the field (never its value).

Types follow the client's models: ``int`` is a JSON integer; ``float`` is any JSON number (the
client sends a float given as ``0`` as the integer ``0``); ``str`` a string; ``id`` a string or
an integer (the client sends an ``orderId`` given as an int as a number). Unknown fields are
refused too, so a typo in a bot (``instrument_token``) shows up here rather than on the day.
Required fields are the ones the sandbox needs to act (the client marks few as required).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from session_fsm.contract import FAULT_BAD_REQUEST

from .faults import ApiFault

BAD_REQUEST = "Invalid or missing input parameters"


@dataclass(frozen=True)
class Field:
    """One body field: JSON type, whether required, allowed values, minimum, sub-fields."""

    kind: str  # "int" | "float" | "str" | "id" | "object" | "list"
    required: bool = False
    allowed: tuple[str, ...] = ()
    minimum: float | None = None
    fields: Mapping[str, Field] | None = None  # of an object, or of each item of a list


Schema = Mapping[str, Field]

_SIDE = Field("str", True, ("BUY", "SELL"))
_PLACE: Schema = {
    "instrumentToken": Field("int", True, minimum=1),
    "transactionType": _SIDE,
    "quantity": Field("int", True, minimum=1),
    "price": Field("float", True, minimum=0),
    "validity": Field("str", allowed=("GFD", "IOC")),
    "variety": Field("str", allowed=("REGULAR", "AMO", "SQUAREOFF")),
    "disclosedQuantity": Field("int", minimum=0),
    "triggerPrice": Field("float", minimum=0),
    "tag": Field("str"),
}
_F, _I = Field("float"), Field("int")
_TSLO = Field("object", fields={"spread": _F, "trailingPrice": _F})
_BRACKET = Field(
    "object",
    fields={"Spread": _F, "trailingPrice": _F, "bookProfit": _F, "bookDisclosedQty": _I},
)
#: ``product`` values of the generic ``NewOrder``.
PRODUCTS = (
    "NORMAL", "SUPERMULTIPLE", "SUPERMULTIPLEOPTION", "MTF", "SOR", "TSLONEW", "BRACKETNEW",
    "TSLO", "BRACKET", "GTC", "COD", "CONVERT",
)  # fmt: skip
_NEW_ORDER: Schema = {
    **_PLACE,
    "product": Field("str", allowed=PRODUCTS),
    "smartOrderRouting": Field("str"),
    "tslo": _TSLO,
    "tslonew": _TSLO,
    "bracket": _BRACKET,
    "bracketnew": _BRACKET,
    "gtc": Field("object", fields={"closeDate": Field("str")}),
    "ctd": Field("object", fields={"ConvertQuantity": _I}),
    "cod": Field("object", fields={"squareOffFlag": Field("int", allowed=("0", "1"))}),
}
_GFD = Field("str", allowed=("GFD",))

#: Place-order bodies per order kind (``NewOrder``, ``NewNormalOrder``, ...).
PLACE: dict[str, Schema] = {
    "generic": _NEW_ORDER,
    "normal": _PLACE,
    "mis": _PLACE,
    "mtf": _PLACE,
    "sor": {**_PLACE, "validity": _GFD, "variety": Field("str", allowed=("REGULAR",))},
    "supermultiple": {**_PLACE, "validity": _GFD},
}

_MODIFY: Schema = {
    "orderId": Field("id", True),
    "quantity": Field("int", minimum=1),
    "price": Field("float", minimum=0),
    "disclosedQuantity": Field("int", minimum=0),
    "triggerPrice": Field("float", minimum=0),
    "validity": Field("str", True, ("GFD", "IOC")),
}
_OI = {"orderIndicator": _I}
_TSLO_MOD = Field("object", fields={**_OI, "spread": _F, "trailingPrice": _F})
_BRACKET_MOD = Field("object", fields={**_OI, **(_BRACKET.fields or {})})

#: Modify-order bodies per order kind (``ExistingOrder``, ``ExistingNormalOrder``, ...).
MODIFY: dict[str, Schema] = {
    "generic": {
        **_MODIFY,
        "tslo": _TSLO_MOD,
        "tslonew": _TSLO_MOD,
        "bracket": _BRACKET_MOD,
        "bracketnew": _BRACKET_MOD,
        "gtc": Field("object", fields={"gtcOrderNo": Field("str")}),
        "ctd": Field("object", fields={"ConvertQuantity": _I}),
        "cod": Field("object", fields={"orderNo": Field("str")}),
    },
    "normal": _MODIFY,
    "mis": _MODIFY,
    "mtf": _MODIFY,
    "sor": {**_MODIFY, "validity": _GFD},
    "supermultiple": _MODIFY,
}

#: ``MarginApi``'s body (``transactionType`` and a list of ``OrderInfo``).
MARGIN: Schema = {
    "transactionType": _SIDE,
    "orderInfo": Field(
        "list",
        True,
        fields={
            "instrumentToken": Field("int", True, minimum=1),
            "quantity": Field("int", True, minimum=1),
            "price": Field("float", minimum=0),
            "amount": Field("int", minimum=0),
            "triggerPrice": Field("float", minimum=0),
        },
    ),
}

#: Historical resources and the exact key sets of their (base64 JSON) input.
HISTORICAL: dict[str, frozenset[str]] = {
    "historicalprices": frozenset({"exchange", "cocode", "fromdate", "todate"}),
    "historicalprices-unadjusted": frozenset({"exchange", "co_code", "date"}),
    "NSEFNO_HistoricalContinuousChart": frozenset({"symbol", "expiry type"}),
    "LiveorEODHistorical": frozenset({"exchange", "co_code", "period", "cnt"}),
}


def bad_request(description: str) -> ApiFault:
    """A 400 fault with ``description`` (which names fields, never values)."""
    return ApiFault(400, FAULT_BAD_REQUEST, BAD_REQUEST, description)


def check(schema: Schema, body: object, where: str = "") -> dict[str, Any]:
    """Return ``body`` if it fits ``schema``; else raise a 400 fault naming the first bad field
    (dotted from the top, e.g. ``orderInfo[0].quantity``)."""
    if not isinstance(body, dict):
        raise bad_request(f"{where or 'request body'} must be a JSON object")
    for name in body:
        if name not in schema:
            raise bad_request(f"unknown field '{where}{name}'")
    for name, spec in schema.items():
        if name not in body or body[name] is None:
            if spec.required:
                raise bad_request(f"missing required field '{where}{name}'")
            continue
        _value(spec, body[name], f"{where}{name}")
    return body


def _value(spec: Field, value: Any, name: str) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if spec.kind == "int":
        ok = number and isinstance(value, int)
    elif spec.kind == "float":
        ok = number
    elif spec.kind == "str":
        ok = isinstance(value, str)
    elif spec.kind == "id":
        ok = (isinstance(value, str) and value.strip() != "") or (
            number and isinstance(value, int)
        )
    elif spec.kind == "object":
        check(spec.fields or {}, value, f"{name}.")
        return
    else:  # list
        if not isinstance(value, list) or not value:
            raise bad_request(f"field '{name}' must be a non-empty list")
        for i, item in enumerate(value):
            check(spec.fields or {}, item, f"{name}[{i}].")
        return
    if not ok:
        raise bad_request(f"field '{name}' must be of type {_TYPE_NAMES[spec.kind]}")
    if spec.allowed and str(value) not in spec.allowed:
        raise bad_request(f"field '{name}' must be one of {', '.join(spec.allowed)}")
    if spec.minimum is not None and value < spec.minimum:
        raise bad_request(f"field '{name}' must be at least {spec.minimum:g}")


_TYPE_NAMES = {
    "int": "integer",
    "float": "number",
    "str": "string",
    "id": "non-empty string or integer",
}
