"""The sandbox WSGI application: routing, request validation and the API handlers.

API paths live under ``/apim`` (the base URL is ``http://HOST:PORT/apim``); the control plane
lives under ``/_sandbox/`` (see :mod:`session_fsm.sandbox.control`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from werkzeug.wrappers import Request, Response

from session_fsm.contract import (
    FAULT_BAD_REQUEST,
    FAULT_GATEWAY_TOKEN,
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

from .config import SandboxConfig
from .control import CONTROL_PREFIX, handle_control
from .faults import API_BASE, ApiFault, FaultSpec, status_message
from .responses import drop_connection, fault_response, json_response, malformed_response
from .state import SandboxState, Session

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

#: The quotes route as it is keyed in the statistics and may be named in a fault path.
QUOTES_LTP_TEMPLATE = QUOTES_LTP_PREFIX + "{tokens}"

_BAD_REQUEST = "Invalid or missing input parameters"
_INVALID_CREDENTIALS = "Invalid Credentials"

_Handler = Callable[[Request, str], Any]


@dataclass(frozen=True)
class _Route:
    handler: _Handler
    #: The answer field a ``missing_field`` fault leaves out (``None``: send an empty payload).
    required_field: str | None
    template: str | None = None


class SandboxApp:
    """WSGI application emulating the KS Trade API session calls and a few trading calls."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.config: SandboxConfig = state.config
        self._routes: dict[tuple[str, str], _Route] = {
            SESSION_INIT: _Route(self._session_init, "redirect"),
            LOGIN_USERID: _Route(self._login, "oneTimeToken"),
            TWO_FA_ACCESSCODE: _Route(self._two_fa, "sessionToken"),
            SESSION_LOGOUT: _Route(self._logout, "message"),
            ORDERS_REPORT: _Route(self._orders, None),
            POSITIONS_TODAY: _Route(self._positions, None),
            ORDER_NORMAL: _Route(self._place_order, None),
        }
        self._quotes = _Route(self._quotes_ltp, None, QUOTES_LTP_TEMPLATE)
        self._methods: dict[str, list[str]] = {}
        for method, path in self._routes:
            self._methods.setdefault(path, []).append(method)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        request = Request(environ)
        path = request.path
        if path == API_BASE or path.startswith(API_BASE + "/"):
            response = self._api(request, path[len(API_BASE) :] or "/")
        elif path.startswith(CONTROL_PREFIX):
            response = handle_control(self.state, request)
        else:
            response = fault_response(_not_found(path))
        return response(environ, start_response)

    # -- dispatch ------------------------------------------------------------------------------

    def _resolve(self, method: str, path: str) -> tuple[_Route | None, str | None]:
        route = self._routes.get((method, path))
        if route is not None:
            return route, None
        if path.startswith(QUOTES_LTP_PREFIX):
            return (self._quotes if method == "GET" else None), QUOTES_LTP_TEMPLATE
        return None, None

    def _api(self, request: Request, path: str) -> Response:
        method = request.method
        route, template = self._resolve(method, path)
        fault = self.state.begin_call(method, path, template)
        response = self._answer(request, path, route, fault)
        if fault is not None:
            retry_after = fault.retry_after_header()
            if retry_after is not None:
                response.headers["Retry-After"] = retry_after
        return response

    def _answer(
        self, request: Request, path: str, route: _Route | None, fault: FaultSpec | None
    ) -> Response:
        if fault is not None:
            if fault.delay > 0:
                self.state.sleep(fault.delay)
            if fault.drop:
                return drop_connection(request.environ)
            if fault.malformed:
                return malformed_response(fault.status or 200)
            if fault.status is not None:
                return fault_response(
                    ApiFault(
                        fault.status,
                        fault.fault_code(),
                        status_message(fault.status),
                        f"Injected fault for {request.method} {path}",
                    )
                )
        if route is None:
            if path in self._methods or path.startswith(QUOTES_LTP_PREFIX):
                allowed = ", ".join(self._methods.get(path, ["GET"]))
                response = fault_response(
                    ApiFault(405, 0, "Method not allowed", f"{path} allows {allowed}")
                )
                response.headers["Allow"] = allowed
                return response
            return fault_response(_not_found(API_BASE + path))
        try:
            payload = route.handler(request, path)
        except ApiFault as exc:
            return fault_response(exc)
        if fault is not None and fault.missing_field:
            if route.required_field is not None and isinstance(payload, dict):
                payload = {k: v for k, v in payload.items() if k != route.required_field}
            else:
                payload = {}
        envelope = (fault.envelope if fault is not None else None) or self.config.envelope
        return json_response({envelope: payload})

    # -- validation ----------------------------------------------------------------------------

    def _check(self, request: Request, *names: str) -> dict[str, str]:
        """Gateway checks (Bearer token, consumerKey) and presence of the ``names`` headers."""
        scheme, _, token = request.headers.get(H_AUTHORIZATION, "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.config.access_token:
            raise ApiFault(
                401,
                FAULT_GATEWAY_TOKEN,
                _INVALID_CREDENTIALS,
                "Make sure you have provided the correct security credentials "
                f"({H_AUTHORIZATION}: Bearer <access token>)",
            )
        values = {name: request.headers.get(name, "").strip() for name in names}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise ApiFault(
                400,
                FAULT_BAD_REQUEST,
                _BAD_REQUEST,
                f"Missing required header(s): {', '.join(missing)}",
            )
        if H_CONSUMER_KEY in values and values[H_CONSUMER_KEY] != self.config.consumer_key:
            raise ApiFault(
                401, FAULT_GATEWAY_TOKEN, _INVALID_CREDENTIALS, f"Invalid {H_CONSUMER_KEY}"
            )
        return values

    def _body(self, request: Request, *fields: str) -> dict[str, Any]:
        """The JSON object body, with each of ``fields`` a non-empty string."""
        try:
            body = json.loads(request.get_data())
        except ValueError:
            raise ApiFault(
                400, FAULT_BAD_REQUEST, _BAD_REQUEST, "Request body is not valid JSON"
            ) from None
        if not isinstance(body, dict):
            raise ApiFault(400, FAULT_BAD_REQUEST, _BAD_REQUEST, "Request body must be an object")
        missing = [f for f in fields if not isinstance(body.get(f), str) or not body[f]]
        if missing:
            raise ApiFault(
                400,
                FAULT_BAD_REQUEST,
                _BAD_REQUEST,
                f"Missing or invalid body field(s): {', '.join(missing)}",
            )
        return body

    def _session(self, request: Request) -> Session:
        headers = self._check(request, H_CONSUMER_KEY, H_SESSION_TOKEN)
        return self.state.session(headers[H_SESSION_TOKEN])

    # -- session calls -------------------------------------------------------------------------

    def _session_init(self, request: Request, path: str) -> dict[str, Any]:
        headers = self._check(request, H_USERID, H_CONSUMER_KEY, H_IP, H_APP_ID)
        root = self._root_url(request)
        host, port = self._redirect(root)
        return {
            "clientType": "ONLINE",
            "encryption": {"keySize": 0, "publickKey": "", "type": "PLAIN"},
            "isNRI": "N",
            "message": "",
            "redirect": {"host": host, "port": port},
            "status": "Success",
            "userType": "G",
            "userid": headers[H_USERID],
            "weblink": {"url": root + "/weblink"},
        }

    def _login(self, request: Request, path: str) -> dict[str, Any]:
        self._check(request, H_CONSUMER_KEY, H_IP, H_APP_ID)
        body = self._body(request, "userid", "password")
        ott = self.state.login(body["userid"], body["password"])
        return {
            "oneTimeToken": ott,
            "mpin": "N",
            "biometric": "N",
            "message": "Your login is successful. Please use the one time token for 2FA",
        }

    def _two_fa(self, request: Request, path: str) -> dict[str, Any]:
        headers = self._check(request, H_ONE_TIME_TOKEN, H_CONSUMER_KEY, H_IP, H_APP_ID)
        body = self._body(request, "userid", "accessCode")
        userid: str = body["userid"]
        session = self.state.two_fa(headers[H_ONE_TIME_TOKEN], userid, body["accessCode"])
        return {
            "sessionToken": session.token,
            "userId": userid,
            "clientCode": userid.upper(),
            "clientName": f"Sandbox {userid}",
            "emailId": f"{userid}@example.com",
            "phoneNo": "XXXXXX0000",
            "enabledSegments": ["CASH", "DERIVATIVES", "CURRENCY"],
            "enabledProducts": ["NORMAL", "MIS", "SUPERMULTIPLE", "MTF"],
            "publicToken": session.public_token,
            "loginTime": session.login_time,
        }

    def _logout(self, request: Request, path: str) -> dict[str, Any]:
        headers = self._check(request, H_SESSION_TOKEN, H_CONSUMER_KEY, H_IP, H_APP_ID, H_USERID)
        self.state.logout(headers[H_SESSION_TOKEN], headers[H_USERID])
        return {"message": "Your session has been logged out successfully"}

    # -- trading calls -------------------------------------------------------------------------

    def _orders(self, request: Request, path: str) -> list[dict[str, Any]]:
        return self.state.orders(self._session(request))

    def _positions(self, request: Request, path: str) -> list[dict[str, Any]]:
        self._session(request)
        return [
            {
                "instrumentToken": 11536,
                "instrumentName": "TCS",
                "exchange": "NSE",
                "buyTradedQtyLot": 10,
                "buyTradedVal": 31250.0,
                "sellTradedQtyLot": 10,
                "sellTradedVal": 31300.0,
                "netTrdQtyLot": 0,
                "lastPrice": 3130.0,
                "realizedPL": 50.0,
            }
        ]

    def _place_order(self, request: Request, path: str) -> dict[str, Any]:
        session = self._session(request)
        record = self.state.place_order(session, self._body(request))
        return {
            **record,
            "message": f"Your Order has been Placed and Forwarded to the Exchange: "
            f"{record['orderId']}",
        }

    def _quotes_ltp(self, request: Request, path: str) -> list[dict[str, Any]]:
        self._session(request)
        tokens = path[len(QUOTES_LTP_PREFIX) :].split("-")
        if not all(t.isdigit() for t in tokens):
            raise ApiFault(
                400, FAULT_BAD_REQUEST, _BAD_REQUEST, "Instrument tokens must be digits joined by -"
            )
        return [
            {
                "instrumentToken": int(t),
                "instrumentName": f"INSTRUMENT-{t}",
                "lastPrice": round(10 + zlib.crc32(t.encode()) % 500000 / 100, 2),
            }
            for t in tokens
        ]

    # -- URLs ----------------------------------------------------------------------------------

    def _root_url(self, request: Request) -> str:
        """This sandbox's own base URL (with ``/apim``)."""
        if self.state.base_url is not None:
            return self.state.base_url
        return request.host_url.rstrip("/") + API_BASE

    def _redirect(self, root: str) -> tuple[str, int]:
        own = urlsplit(root)
        own_port = own.port or (443 if own.scheme == "https" else 80)
        if self.config.redirect_host is None:
            return root, own_port
        host = self.config.redirect_host.replace("{port}", str(own_port))
        split = urlsplit(host)
        return host, split.port or (443 if split.scheme == "https" else 80)


def _not_found(path: str) -> ApiFault:
    return ApiFault(404, 0, "Resource not found", f"No API resource matches {path}")


def make_app(config: SandboxConfig | None = None) -> SandboxApp:
    """A fresh sandbox WSGI app (with its own :class:`SandboxState`) for ``config``."""
    return SandboxApp(SandboxState(config or SandboxConfig()))
