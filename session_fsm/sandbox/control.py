"""The sandbox control plane: inject faults, expire tokens, move the clock, read counters.

Three faces of the same operations:

* :func:`handle_control` serves them as JSON under ``/_sandbox/`` (not under ``/apim``);
* :class:`SandboxControl` calls a :class:`SandboxState` in the same process;
* :class:`HttpSandboxControl` speaks the JSON control plane to a sandbox anywhere.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import requests
from werkzeug.wrappers import Request, Response

from .faults import FaultSpec
from .responses import json_response
from .state import SandboxState

#: Path prefix of the control plane.
CONTROL_PREFIX = "/_sandbox/"


class SandboxControlError(RuntimeError):
    """The HTTP control plane answered something other than success."""


class ControlPlane(Protocol):
    """What both :class:`SandboxControl` and :class:`HttpSandboxControl` offer."""

    def fault(
        self,
        path: str,
        *,
        method: str | None = None,
        status: int | None = None,
        code: int | None = None,
        retry_after: float | str | None = None,
        delay: float = 0.0,
        malformed: bool = False,
        drop: bool = False,
        missing_field: bool = False,
        envelope: str | None = None,
        count: int = 1,
    ) -> int:
        """Queue a fault for the next ``count`` calls to ``path``; return ``count``."""
        ...

    def expire(self, userid: str | None = None) -> int:
        """Expire all (or ``userid``'s) session tokens; return how many."""
        ...

    def expire_ott(self, userid: str | None = None) -> int:
        """Expire all (or ``userid``'s) outstanding one-time tokens; return how many."""
        ...

    def advance(self, seconds: float) -> float:
        """Advance the sandbox clock; return the total offset."""
        ...

    def stats(self) -> dict[str, Any]:
        """The sandbox counters."""
        ...

    def reset(self) -> None:
        """Clear faults, sessions, one-time tokens, the clock offset and counters."""
        ...


class SandboxControl:
    """Control plane of a sandbox in this process: calls its state directly, no HTTP."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def fault(
        self,
        path: str,
        *,
        method: str | None = None,
        status: int | None = None,
        code: int | None = None,
        retry_after: float | str | None = None,
        delay: float = 0.0,
        malformed: bool = False,
        drop: bool = False,
        missing_field: bool = False,
        envelope: str | None = None,
        count: int = 1,
    ) -> int:
        """Queue a fault (see :class:`FaultSpec`) for the next ``count`` matching calls."""
        spec = FaultSpec(
            path=path,
            method=method,
            status=status,
            code=code,
            retry_after=retry_after,
            delay=delay,
            malformed=malformed,
            drop=drop,
            missing_field=missing_field,
            envelope=envelope,
            count=count,
        )
        return self.state.queue_fault(spec)

    def expire(self, userid: str | None = None) -> int:
        """Expire all (or ``userid``'s) session tokens; return how many."""
        return self.state.expire_sessions(userid)

    def expire_ott(self, userid: str | None = None) -> int:
        """Expire all (or ``userid``'s) outstanding one-time tokens; return how many."""
        return self.state.expire_otts(userid)

    def advance(self, seconds: float) -> float:
        """Advance the sandbox clock by ``seconds``; return the total offset."""
        return self.state.advance(seconds)

    def stats(self) -> dict[str, Any]:
        """The sandbox counters (see :meth:`SandboxState.stats`)."""
        return self.state.stats()

    def reset(self) -> None:
        """Clear faults, sessions, one-time tokens, the clock offset and counters."""
        self.state.reset()


class HttpSandboxControl:
    """Control plane of a sandbox reached over HTTP at ``root_url`` (the URL without /apim)."""

    def __init__(self, root_url: str, *, timeout: float = 10.0) -> None:
        root = root_url.rstrip("/")
        if root.endswith("/apim"):
            root = root[: -len("/apim")]
        self.root_url = root
        self.timeout = timeout
        self._http = requests.Session()

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._http.close()

    def _call(self, method: str, name: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.root_url}{CONTROL_PREFIX}{name}"
        resp = self._http.request(method, url, json=body, timeout=self.timeout)
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code == 400 and isinstance(data, dict):
            raise ValueError(str(data.get("error", data)))
        if resp.status_code != 200 or not isinstance(data, dict):
            raise SandboxControlError(f"{method} {url} answered {resp.status_code}: {resp.text}")
        return data

    def fault(
        self,
        path: str,
        *,
        method: str | None = None,
        status: int | None = None,
        code: int | None = None,
        retry_after: float | str | None = None,
        delay: float = 0.0,
        malformed: bool = False,
        drop: bool = False,
        missing_field: bool = False,
        envelope: str | None = None,
        count: int = 1,
    ) -> int:
        """Queue a fault (see :class:`FaultSpec`) for the next ``count`` matching calls."""
        body = {
            "path": path,
            "method": method,
            "status": status,
            "code": code,
            "retry_after": retry_after,
            "delay": delay,
            "malformed": malformed,
            "drop": drop,
            "missing_field": missing_field,
            "envelope": envelope,
            "count": count,
        }
        return int(self._call("POST", "faults", body)["queued"])

    def expire(self, userid: str | None = None) -> int:
        """Expire all (or ``userid``'s) session tokens; return how many."""
        body = {} if userid is None else {"userid": userid}
        return int(self._call("POST", "expire", body)["expired"])

    def expire_ott(self, userid: str | None = None) -> int:
        """Expire all (or ``userid``'s) outstanding one-time tokens; return how many."""
        body: dict[str, Any] = {"ott": True}
        if userid is not None:
            body["userid"] = userid
        return int(self._call("POST", "expire", body)["expired"])

    def advance(self, seconds: float) -> float:
        """Advance the sandbox clock by ``seconds``; return the total offset."""
        return float(self._call("POST", "advance", {"seconds": seconds})["offset"])

    def stats(self) -> dict[str, Any]:
        """The sandbox counters."""
        result: dict[str, Any] = self._call("GET", "stats")
        return result

    def reset(self) -> None:
        """Clear faults, sessions, one-time tokens, the clock offset and counters."""
        self._call("POST", "reset", {})


# -- server side -------------------------------------------------------------------------------


def handle_control(state: SandboxState, request: Request) -> Response:
    """Serve one control-plane request (``request.path`` starts with ``/_sandbox/``)."""
    name = request.path[len(CONTROL_PREFIX) :].strip("/")
    method = request.method
    try:
        if (method, name) == ("GET", "stats"):
            return json_response(state.stats())
        if method != "POST" or name not in ("faults", "expire", "advance", "reset"):
            return json_response({"error": f"no control operation {method} {request.path}"}, 404)
        body = _json_object(request)
        if name == "faults":
            return json_response({"queued": state.queue_fault(FaultSpec.from_json(body))})
        if name == "expire":
            userid = body.get("userid")
            if userid is not None and not isinstance(userid, str):
                raise ValueError("'userid' must be a string")
            ott = body.get("ott", False)
            if not isinstance(ott, bool):
                raise ValueError("'ott' must be true or false")
            n = state.expire_otts(userid) if ott else state.expire_sessions(userid)
            return json_response({"expired": n})
        if name == "advance":
            seconds = body.get("seconds")
            if not isinstance(seconds, int | float) or isinstance(seconds, bool):
                raise ValueError("'seconds' must be a number")
            return json_response({"offset": state.advance(float(seconds))})
        state.reset()
        return json_response({"reset": True})
    except ValueError as exc:
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
