"""The sandbox WSGI application: routing, request validation and the session calls' handlers
(the trading endpoints' handlers are in :mod:`~session_fsm.sandbox.trading`).

API paths live under ``/apim`` (the base URL is ``http://HOST:PORT/apim``); the control plane
lives under ``/_sandbox/`` (see :mod:`session_fsm.sandbox.control`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from werkzeug.wrappers import Request, Response

from session_fsm.contract import (
    FAULT_BAD_REQUEST,
    FAULT_GATEWAY_TOKEN,
    FAULT_SESSION_EXPIRED,
    H_APP_ID,
    H_AUTHORIZATION,
    H_CONSUMER_KEY,
    H_IP,
    H_ONE_TIME_TOKEN,
    H_SESSION_TOKEN,
    H_USERID,
    QUOTES_LTP_PREFIX,
)

from .config import SandboxConfig
from .control import CONTROL_PREFIX, handle_control
from .faults import API_BASE, ApiFault, FaultSpec, status_message
from .responses import drop_connection, fault_response, json_response, malformed_response
from .routes import Endpoint, resolve
from .state import SandboxState, Session
from .trading import HANDLERS, Enveloped, TradingCall

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

#: The quotes route as it is keyed in the statistics and may be named in a fault path.
QUOTES_LTP_TEMPLATE = QUOTES_LTP_PREFIX + "{tokens}"
#: The message of the 403 "session invalid" answer (``invalid_session=403``).
INVALID_SESSION_403 = "Invalid session, please re-login to continue"
#: Its fault code: the API's docs give none, so none is recognised (0).
FAULT_INVALID_SESSION_403 = 0

_BAD_REQUEST = "Invalid or missing input parameters"
_INVALID_CREDENTIALS = "Invalid Credentials"
#: The answer field a ``missing_field`` fault leaves out of each session call's answer.
_REQUIRED_FIELDS = {
    "session_init": "redirect",
    "login": "oneTimeToken",
    "two_fa": "sessionToken",
    "logout": "message",
}


class SandboxApp:
    """WSGI application emulating the KS Trade API: the session calls and every trading
    endpoint of the public client (see :mod:`session_fsm.sandbox.routes`)."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.config: SandboxConfig = state.config
        self._session_handlers: dict[str, Callable[[Request], dict[str, Any]]] = {
            "session_init": self._session_init,
            "login": self._login,
            "two_fa": self._two_fa,
            "logout": self._logout,
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        request = Request(environ)
        path = request.path
        if path == API_BASE or path.startswith(API_BASE + "/"):
            response = self._api(request, path[len(API_BASE) :] or "/")
        elif path.startswith(CONTROL_PREFIX) or path == CONTROL_PREFIX.rstrip("/"):
            response = handle_control(self.state, request)
        else:
            response = fault_response(_not_found(path))
        return response(environ, start_response)

    # -- dispatch ------------------------------------------------------------------------------

    def _api(self, request: Request, path: str) -> Response:
        method = request.method
        endpoint, params, allowed = resolve(method, path)
        fault = self.state.begin_call(method, path, endpoint)
        response = self._answer(request, path, endpoint, params, allowed, fault)
        if fault is not None:
            retry_after = fault.retry_after_header()
            if retry_after is not None:
                response.headers["Retry-After"] = retry_after
        return response

    def _answer(
        self,
        request: Request,
        path: str,
        endpoint: Endpoint | None,
        params: dict[str, str],
        allowed: list[str],
        fault: FaultSpec | None,
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
        if endpoint is None:
            if allowed:
                response = fault_response(
                    ApiFault(405, 0, "Method not allowed", f"{path} allows {', '.join(allowed)}")
                )
                response.headers["Allow"] = ", ".join(allowed)
                return response
            return fault_response(_not_found(API_BASE + path))
        try:
            payload = self._handle(request, endpoint, params)
        except ApiFault as exc:
            return fault_response(exc)
        envelope = self.config.envelope
        if isinstance(payload, Enveloped):
            payload, envelope = payload.payload, payload.envelope
        if fault is not None and fault.missing_field:
            required = _REQUIRED_FIELDS.get(endpoint.handler)
            if required is not None and isinstance(payload, dict):
                payload = {k: v for k, v in payload.items() if k != required}
            else:
                payload = {}
        envelope = (fault.envelope if fault is not None else None) or envelope
        return json_response({envelope: payload})

    def _handle(self, request: Request, endpoint: Endpoint, params: dict[str, str]) -> Any:
        if endpoint.session_call:
            return self._session_handlers[endpoint.handler](request)
        if endpoint.group == "historical":  # the client sends only the Bearer token here
            self._check(request)
            userid = ""
        else:
            userid = self._session(request).userid
        call = TradingCall(self.state, request, endpoint, params, userid)
        return HANDLERS[endpoint.handler](call)

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
        """The live session of a trading call; a dead one answers as ``invalid_session`` says:
        401 with fault 99999, or 403 "Invalid session, please re-login to continue"."""
        headers = self._check(request, H_CONSUMER_KEY, H_SESSION_TOKEN)
        try:
            return self.state.session(headers[H_SESSION_TOKEN])
        except ApiFault as exc:
            if exc.code != FAULT_SESSION_EXPIRED or self.state.settings.invalid_session != 403:
                raise
            raise ApiFault(
                403, FAULT_INVALID_SESSION_403, INVALID_SESSION_403, exc.description
            ) from None

    # -- session calls -------------------------------------------------------------------------

    def _session_init(self, request: Request) -> dict[str, Any]:
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

    def _login(self, request: Request) -> dict[str, Any]:
        self._check(request, H_CONSUMER_KEY, H_IP, H_APP_ID)
        body = self._body(request, "userid", "password")
        ott = self.state.login(body["userid"], body["password"])
        return {
            "oneTimeToken": ott,
            "mpin": "N",
            "biometric": "N",
            "message": "Your login is successful. Please use the one time token for 2FA",
        }

    def _two_fa(self, request: Request) -> dict[str, Any]:
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

    def _logout(self, request: Request) -> dict[str, Any]:
        headers = self._check(request, H_SESSION_TOKEN, H_CONSUMER_KEY, H_IP, H_APP_ID, H_USERID)
        self.state.logout(headers[H_SESSION_TOKEN], headers[H_USERID])
        return {"message": "Your session has been logged out successfully"}

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
