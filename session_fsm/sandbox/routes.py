"""Every API endpoint the sandbox serves: method, path template, group and handler name.

Paths are relative to ``/apim``. A ``{name}`` segment is a path parameter (percent-decoded;
possibly empty, so that a missing one is a 400 naming it rather than a 404). Statistics and
faults name an endpoint by its template, e.g. ``DELETE /orders/1.0/orders/{orderId}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from session_fsm.contract import (
    LOGIN_USERID,
    SESSION_INIT,
    SESSION_LOGOUT,
    TWO_FA_ACCESSCODE,
)

#: Endpoint groups a fault may target (``group=``), besides one path or a path pattern.
GROUPS: dict[str, str] = {
    "session": "the four session calls",
    "orders": "place, modify and cancel of every order kind (18 endpoints)",
    "reports": "order and trade reports",
    "positions": "positions: all, today's, open, stocks",
    "quotes": "quotes: full, LTP, depth, OHLC",
    "margin": "margin required",
    "historical": "historical prices",
    "trading": "every endpoint but the session calls",
}

#: Order kinds: name -> (place/modify path, cancel path prefix).
ORDER_KINDS: dict[str, str] = {
    "generic": "/orders/1.0/orders",
    "normal": "/orders/1.0/order/normal",
    "mis": "/orders/1.0/order/mis",
    "mtf": "/orders/1.0/order/mtf",
    "sor": "/orders/1.0/order/sor",
    "supermultiple": "/orders/1.0/order/supermultiple",
}

#: Quote kinds: name -> path prefix (the tokens follow).
QUOTE_KINDS: dict[str, str] = {
    "full": "/quotes/v1.0/instruments/",
    "ltp": "/quotes/v1.0/ltp/instruments/",
    "depth": "/quotes/v1.0/depth/instruments/",
    "ohlc": "/quotes/v1.0/ohlc/instruments/",
}

#: Position kinds: name -> path.
POSITION_KINDS: dict[str, str] = {
    "all": "/positions/1.0/positions",
    "todays": "/positions/1.0/positions/todays",
    "open": "/positions/1.0/positions/open",
    "stocks": "/positions/1.0/positions/stocks",
}

HISTORICAL_TEMPLATE = "/trade/1.0.0/equity/{resource}/i/{input}"


@dataclass(frozen=True)
class Endpoint:
    """One API endpoint. ``handler`` names the method of the app that serves it; ``kind`` is
    the order, quote or position kind it serves (``""`` when none)."""

    method: str
    template: str
    group: str
    handler: str
    kind: str = ""
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    #: The template up to its first parameter (a cheap test before the pattern).
    prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", self.template.split("{", 1)[0])
        parts = re.split(r"(\{[^}]+\})", self.template)
        regex = "".join(
            f"(?P<{p[1:-1]}>[^/]*)" if p.startswith("{") else re.escape(p) for p in parts
        )
        object.__setattr__(self, "pattern", re.compile(regex))

    @property
    def key(self) -> str:
        """``METHOD template``: how statistics name this endpoint."""
        return f"{self.method} {self.template}"

    @property
    def session_call(self) -> bool:
        """Whether this is one of the four session calls."""
        return self.group == "session"

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters if ``path`` is this endpoint's, else ``None``."""
        m = self.pattern.fullmatch(path)
        if m is None:
            return None
        return m.groupdict()


def _endpoints() -> tuple[Endpoint, ...]:
    eps = [
        Endpoint(*SESSION_INIT, "session", "session_init"),
        Endpoint(*LOGIN_USERID, "session", "login"),
        Endpoint(*TWO_FA_ACCESSCODE, "session", "two_fa"),
        Endpoint(*SESSION_LOGOUT, "session", "logout"),
    ]
    for kind, path in ORDER_KINDS.items():
        eps.append(Endpoint("POST", path, "orders", "place_order", kind))
        eps.append(Endpoint("PUT", path, "orders", "modify_order", kind))
        eps.append(Endpoint("DELETE", path + "/{orderId}", "orders", "cancel_order", kind))
    eps += [
        Endpoint("GET", "/reports/1.0/orders", "reports", "order_report"),
        Endpoint("GET", "/reports/1.0/orders/{orderId}", "reports", "order_report"),
        Endpoint("GET", "/reports/1.0/trades", "reports", "trade_report"),
        Endpoint("GET", "/reports/1.0/trades/{orderId}", "reports", "trade_report"),
    ]
    eps += [Endpoint("GET", p, "positions", "positions", k) for k, p in POSITION_KINDS.items()]
    eps += [
        Endpoint("GET", p + "{tokens}", "quotes", "quotes", k) for k, p in QUOTE_KINDS.items()
    ]
    eps.append(Endpoint("POST", "/margin/1.0/margin/required", "margin", "margin"))
    eps.append(Endpoint("GET", HISTORICAL_TEMPLATE, "historical", "historical"))
    return tuple(eps)


#: Every endpoint, session calls first.
ENDPOINTS: tuple[Endpoint, ...] = _endpoints()

_EXACT = {(e.method, e.template): e for e in ENDPOINTS if "{" not in e.template}
_EXACT_METHODS: dict[str, list[str]] = {}
for _ep in _EXACT.values():
    _EXACT_METHODS.setdefault(_ep.template, []).append(_ep.method)
_PARAMETRISED = [e for e in ENDPOINTS if "{" in e.template]


def resolve(method: str, path: str) -> tuple[Endpoint | None, dict[str, str], list[str]]:
    """The endpoint serving ``method path`` and its path parameters; when none does, the
    methods the path allows (empty: no such path at all)."""
    exact = _EXACT.get((method, path))
    if exact is not None:
        return exact, {}, []
    allowed = list(_EXACT_METHODS.get(path, ()))
    for ep in _PARAMETRISED:
        if not path.startswith(ep.prefix):
            continue
        params = ep.match(path)
        if params is None:
            continue
        if ep.method == method:
            return ep, params, []
        allowed.append(ep.method)
    return None, {}, sorted(set(allowed))


def describe() -> list[dict[str, str]]:
    """Every endpoint as JSON: method, path template, group."""
    return [{"method": e.method, "path": e.template, "group": e.group} for e in ENDPOINTS]
