"""The sandbox control plane: inject faults, expire tokens, move the clock, read counters.

Three faces of the same operations (faults, expiry, clock, settings, fills, order book,
counters):

* :func:`~session_fsm.sandbox.plane.handle_control` serves them as JSON under ``/_sandbox/``
  (not under ``/apim``), described by ``GET /_sandbox/``;
* :class:`SandboxControl` calls a :class:`SandboxState` in the same process;
* :class:`HttpSandboxControl` speaks the JSON control plane to a sandbox anywhere.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

import requests

from .faults import FaultSpec
from .plane import CONTROL_PREFIX, describe_plane, handle_control
from .state import SandboxState

__all__ = [
    "CONTROL_PREFIX",
    "ControlPlane",
    "HttpSandboxControl",
    "SandboxControl",
    "SandboxControlError",
    "handle_control",
]


class SandboxControlError(RuntimeError):
    """The HTTP control plane answered something other than success."""


class ControlPlane(Protocol):
    """What both :class:`SandboxControl` and :class:`HttpSandboxControl` offer."""

    def fault(
        self,
        path: str | None = None,
        *,
        group: str | None = None,
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
        """Queue a fault for the next ``count`` calls to ``path`` (or ``group``)."""
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
        """Clear faults, sessions, one-time tokens, orders, the clock offset and counters."""
        ...

    def settings(
        self,
        *,
        single_session: bool | None = None,
        invalid_session: int | None = None,
        fill: str | None = None,
    ) -> dict[str, Any]:
        """Switch the given run-time settings; return all of them."""
        ...

    def fill(self, userid: str | None = None, order_id: int | None = None) -> int:
        """Fill open orders (all, ``userid``'s, or ``order_id``); return how many."""
        ...

    def orders(self, userid: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every user's (or ``userid``'s) order report rows."""
        ...

    def clear_orders(self, userid: str | None = None) -> int:
        """Forget every user's (or ``userid``'s) orders and trades; return how many orders."""
        ...

    def describe(self) -> dict[str, Any]:
        """The control plane's own description (``GET /_sandbox/``)."""
        ...


class SandboxControl:
    """Control plane of a sandbox in this process: calls its state directly, no HTTP."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def fault(
        self,
        path: str | None = None,
        *,
        group: str | None = None,
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
            group=group,
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
        """Clear faults, sessions, one-time tokens, orders, the clock offset and counters."""
        self.state.reset()

    def settings(
        self,
        *,
        single_session: bool | None = None,
        invalid_session: int | None = None,
        fill: str | None = None,
    ) -> dict[str, Any]:
        """Switch the given run-time settings; return all of them."""
        changes = _given(single_session=single_session, invalid_session=invalid_session,
                         fill=fill)  # fmt: skip
        return self.state.change_settings(**changes).to_json()

    def fill(self, userid: str | None = None, order_id: int | None = None) -> int:
        """Fill open orders (all, ``userid``'s, or ``order_id``); return how many."""
        return self.state.book.fill(userid, order_id)

    def orders(self, userid: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every user's (or ``userid``'s) order report rows."""
        return self.state.book.dump(userid)

    def clear_orders(self, userid: str | None = None) -> int:
        """Forget every user's (or ``userid``'s) orders and trades (order ids keep counting);
        return how many orders."""
        return self.state.book.forget(userid)

    def describe(self) -> dict[str, Any]:
        """The control plane's own description (``GET /_sandbox/``)."""
        return describe_plane(self.state)


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
        path: str | None = None,
        *,
        group: str | None = None,
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
            "group": group,
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
        """Clear faults, sessions, one-time tokens, orders, the clock offset and counters."""
        self._call("POST", "reset", {})

    def settings(
        self,
        *,
        single_session: bool | None = None,
        invalid_session: int | None = None,
        fill: str | None = None,
    ) -> dict[str, Any]:
        """Switch the given run-time settings; return all of them."""
        changes = _given(single_session=single_session, invalid_session=invalid_session,
                         fill=fill)  # fmt: skip
        result: dict[str, Any] = self._call("POST", "settings", changes)
        return result

    def fill(self, userid: str | None = None, order_id: int | None = None) -> int:
        """Fill open orders (all, ``userid``'s, or ``order_id``); return how many."""
        body = _given(userid=userid, order_id=order_id)
        return int(self._call("POST", "fill", body)["filled"])

    def orders(self, userid: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every user's (or ``userid``'s) order report rows."""
        name = "orders" if userid is None else f"orders?userid={quote(userid)}"
        result: dict[str, list[dict[str, Any]]] = self._call("GET", name)["orders"]
        return result

    def clear_orders(self, userid: str | None = None) -> int:
        """Forget every user's (or ``userid``'s) orders and trades (order ids keep counting);
        return how many orders."""
        name = "orders" if userid is None else f"orders?userid={quote(userid)}"
        return int(self._call("DELETE", name)["cleared"])

    def describe(self) -> dict[str, Any]:
        """The control plane's own description (``GET /_sandbox/``)."""
        result: dict[str, Any] = self._call("GET", "")
        return result


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
