"""The control plane served as JSON under ``/_sandbox/``: its operations, described as data.

``GET /_sandbox/`` answers :data:`OPERATIONS` (every operation with its body and answer), the
endpoint groups a fault may target, every API endpoint and the current settings, so a tool in
any language can discover what it may do. Control-plane calls are counted apart from API calls
(``control_calls`` in the statistics), so a tool reading ``stats`` never sees its own reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

from .faults import FaultSpec
from .responses import json_response
from .routes import GROUPS, describe
from .state import SandboxState

#: Path prefix of the control plane.
CONTROL_PREFIX = "/_sandbox/"


@dataclass(frozen=True)
class Operation:
    """One control-plane operation: ``METHOD /_sandbox/name``, its body fields and answer."""

    method: str
    name: str
    summary: str
    body: dict[str, str]
    answer: dict[str, str]
    run: Callable[[SandboxState, dict[str, Any]], Any]

    def to_json(self) -> dict[str, Any]:
        """The description ``GET /_sandbox/`` gives."""
        return {
            "method": self.method,
            "path": CONTROL_PREFIX + self.name,
            "summary": self.summary,
            "body": self.body,
            "answer": self.answer,
        }


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string")
    return value


def _expire(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    userid = _opt_str(body, "userid")
    ott = body.get("ott", False)
    if not isinstance(ott, bool):
        raise ValueError("'ott' must be true or false")
    return {"expired": state.expire_otts(userid) if ott else state.expire_sessions(userid)}


def _advance(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    seconds = body.get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        raise ValueError("'seconds' must be a number")
    return {"offset": state.advance(float(seconds))}


def _reset(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    state.reset()
    return {"reset": True}


def _fill(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    order_id = body.get("order_id")
    if order_id is not None and (not isinstance(order_id, int) or isinstance(order_id, bool)):
        raise ValueError("'order_id' must be an integer")
    return {"filled": state.book.fill(_opt_str(body, "userid"), order_id)}


def _settings(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    return state.change_settings(**body).to_json() if body else state.settings.to_json()


def _orders(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    return {"orders": state.book.dump(_opt_str(body, "userid"))}


def _forget_orders(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    return {"cleared": state.book.forget(_opt_str(body, "userid"))}


def _faults(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    return {"queued": state.queue_fault(FaultSpec.from_json(body))}


_FAULT_BODY = {
    "path": "string: one API path (without /apim), an endpoint's template, or a pattern "
    "where * matches anything (e.g. /orders/*); give path or group",
    "group": f"string: an endpoint group, one of {', '.join(GROUPS)}",
    "method": "string or null: only calls of this method (default any)",
    "status": "integer or null: answer this HTTP status with a fault envelope",
    "code": "integer or null: the fault code (default per status)",
    "retry_after": "number (seconds, rounded up) or string (sent verbatim) or null",
    "delay": "number: seconds to wait before answering (default 0)",
    "malformed": "boolean: answer a non-JSON body",
    "drop": "boolean: close the connection without answering",
    "missing_field": "boolean: leave the call's required answer field out",
    "envelope": "string or null: spell the success envelope Success or success",
    "count": "integer: how many matching calls the fault hits (default 1)",
}

#: Every control-plane operation.
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "", "describe the control plane (this answer)", {},
              {"operations": "list", "groups": "object", "endpoints": "list",
               "settings": "object"}, lambda s, b: describe_plane(s)),
    Operation("GET", "stats", "counters since start or the last reset", {},
              {"calls": "object: API calls per 'METHOD template' (never control-plane calls)",
               "control_calls": "object: control-plane calls per 'METHOD name'",
               "logins": "integer", "sessions": "integer", "logouts": "integer",
               "faults_served": "integer", "logged_out_token_uses": "integer"},
              lambda s, b: s.stats()),
    Operation("POST", "faults", "queue a fault for the next matching API calls", _FAULT_BODY,
              {"queued": "integer: the count"}, _faults),
    Operation("POST", "expire", "expire session tokens (or one-time tokens)",
              {"userid": "string or null: only this user's", "ott": "boolean: one-time tokens"},
              {"expired": "integer: how many"}, _expire),
    Operation("POST", "advance", "move the sandbox clock forward",
              {"seconds": "number >= 0"}, {"offset": "number: the total offset"}, _advance),
    Operation("POST", "reset", "forget faults, tokens, orders, clock offset, counters; "
              "settings back to the configuration's", {}, {"reset": "true"}, _reset),
    Operation("GET", "settings", "the run-time settings", {},
              {"single_session": "boolean", "invalid_session": "401 or 403",
               "fill": "immediate, never or manual"}, lambda s, b: s.settings.to_json()),
    Operation("POST", "settings", "switch run-time settings (any subset)",
              {"single_session": "boolean: a new 2FA ends the user's previous session",
               "invalid_session": "401 (fault 99999) or 403 (Invalid session, please "
               "re-login to continue): the answer to a dead session on trading calls",
               "fill": "immediate, never or manual (orders fill on POST fill)"},
              {"single_session": "boolean", "invalid_session": "integer", "fill": "string"},
              _settings),
    Operation("POST", "fill", "fill open orders (all, one user's, or one order)",
              {"userid": "string or null", "order_id": "integer or null"},
              {"filled": "integer: how many orders"}, _fill),
    Operation("GET", "orders", "every user's order book (query ?userid= for one)", {},
              {"orders": "object: userid -> order report rows"}, _orders),
    Operation("DELETE", "orders", "forget every user's (query ?userid= for one) orders and "
              "trades; order ids keep counting", {},
              {"cleared": "integer: how many orders"}, _forget_orders),
)  # fmt: skip

_BY_KEY = {(op.method, op.name): op for op in OPERATIONS}


def describe_plane(state: SandboxState) -> dict[str, Any]:
    """The answer of ``GET /_sandbox/``."""
    return {
        "operations": [op.to_json() for op in OPERATIONS],
        "groups": dict(GROUPS),
        "endpoints": describe(),
        "settings": state.settings.to_json(),
    }


def handle_control(state: SandboxState, request: Request) -> Response:
    """Serve one control-plane request (``request.path`` starts with ``/_sandbox``)."""
    name = request.path[len(CONTROL_PREFIX) - 1 :].strip("/")
    method = request.method
    op = _BY_KEY.get((method, name))
    if op is None:
        return json_response({"error": f"no control operation {method} {request.path}"}, 404)
    state.count_control(method, name or "/")
    try:
        body = _json_object(request) if method == "POST" else dict(request.args)
        return json_response(op.run(state, body))
    except (ValueError, TypeError) as exc:
        return json_response({"error": str(exc)}, 400)


def _json_object(request: Request) -> dict[str, Any]:
    data = request.get_data()
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except ValueError:
        raise ValueError("control-plane body must be JSON") from None
    if not isinstance(body, dict):
        raise ValueError("control-plane body must be a JSON object")
    return body
