"""Fault envelopes the sandbox answers, and the control plane's injected-fault specification."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase

from session_fsm.contract import FAULT_BAD_REQUEST, FAULT_INTERNAL, FAULT_RATE_LIMITED

from .config import ENVELOPE_KEYS
from .routes import GROUPS

#: Prefix of every API path; fault paths given with it are accepted and stripped.
API_BASE = "/apim"


class ApiFault(Exception):
    """A fault answer: HTTP ``status`` with ``{"fault": {"code", "message", "description"}}``."""

    def __init__(self, status: int, code: int, message: str, description: str = "") -> None:
        super().__init__(f"{status} {code} {message}: {description}")
        self.status = status
        self.code = code
        self.message = message
        self.description = description

    def body(self) -> dict[str, object]:
        """The JSON body of this fault."""
        return {
            "fault": {"code": self.code, "message": self.message, "description": self.description}
        }


def default_fault_code(status: int) -> int:
    """Fault code used for an injected ``status`` when none is given (0 = no recognised code)."""
    if status == 429:
        return FAULT_RATE_LIMITED
    if status == 400:
        return FAULT_BAD_REQUEST
    if 500 <= status <= 599:
        return FAULT_INTERNAL
    return 0


_STATUS_MESSAGES = {
    400: "Invalid or missing input parameters",
    401: "Verify resource and path of the request",
    429: "Too many requests to the API",
    500: "Unexpected error",
    503: "Trade API service is unavailable",
    504: "Gateway timeout, trade API is unreachable",
}


def status_message(status: int) -> str:
    """A plausible fault message for an HTTP status (the ones the API docs list, else generic)."""
    return _STATUS_MESSAGES.get(status, f"HTTP {status}")


@dataclass(frozen=True)
class FaultSpec:
    """One injected fault, applied to the next ``count`` calls matching ``method`` and the target.

    The target is ``path`` or ``group`` (exactly one). ``path`` is the API path without
    ``/apim`` (a leading ``/apim`` is stripped): one path (``/orders/1.0/orders/123``), an
    endpoint's template (``/orders/1.0/orders/{orderId}``), or a pattern where ``*`` matches
    any run of characters, ``/`` included (``/orders/*``, ``/orders/1.0/order/*/{orderId}``).
    ``group`` names an endpoint group (``orders``, ``reports``, ``positions``, ``quotes``,
    ``margin``, ``historical``, ``session``, or ``trading`` for every non-session endpoint;
    see ``routes.GROUPS``). ``method=None`` matches any method. Effects, in order: sleep
    ``delay`` seconds; then ``drop`` the connection, or answer a non-JSON body (``malformed``,
    status ``status`` or 200), or a fault envelope with ``status`` (code ``code`` or the default
    per status); otherwise answer normally, minus the call's required field (``missing_field``)
    and/or with the success envelope spelled ``envelope``. ``retry_after`` (seconds, rounded up
    to a whole number as HTTP requires, or a string such as an HTTP-date sent verbatim) adds a
    ``Retry-After`` header to whatever is answered.
    """

    path: str | None = None
    method: str | None = None
    status: int | None = None
    code: int | None = None
    retry_after: float | str | None = None
    delay: float = 0.0
    malformed: bool = False
    drop: bool = False
    missing_field: bool = False
    envelope: str | None = None
    count: int = 1
    group: str | None = None

    def __post_init__(self) -> None:
        path = self.path
        if (path is None) == (self.group is None):
            raise ValueError("a fault needs exactly one of 'path' and 'group'")
        if self.group is not None and self.group not in GROUPS:
            raise ValueError(f"fault group must be one of {', '.join(GROUPS)}")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise ValueError(f"fault path must be a string starting with '/', got {path!r}")
        if path is not None and (path == API_BASE or path.startswith(API_BASE + "/")):
            object.__setattr__(self, "path", path[len(API_BASE) :] or "/")
        if self.method is not None:
            if not isinstance(self.method, str) or not self.method:
                raise ValueError("fault method must be a non-empty string or null")
            object.__setattr__(self, "method", self.method.upper())
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"fault status must be within 100..599, got {self.status}")
        if not (self.delay >= 0 and math.isfinite(self.delay)):
            raise ValueError(f"fault delay must be a finite number >= 0, got {self.delay}")
        if self.count < 1:
            raise ValueError(f"fault count must be >= 1, got {self.count}")
        if self.envelope is not None and self.envelope not in ENVELOPE_KEYS:
            raise ValueError(f"fault envelope must be one of {ENVELOPE_KEYS} or null")
        if isinstance(self.retry_after, float | int) and not (
            self.retry_after >= 0 and math.isfinite(self.retry_after)
        ):
            raise ValueError("fault retry_after must be a finite number >= 0")

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> FaultSpec:
        """Build a spec from a control-plane JSON object, checking every field's type."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        path = _opt_str(data, "path")
        group = _opt_str(data, "group")
        if path is None and group is None:
            raise ValueError("fault needs a string 'path' or 'group'")
        count = _opt_int(data, "count")
        retry_after = data.get("retry_after")
        if retry_after is not None and not isinstance(retry_after, str):
            retry_after = _number(data, "retry_after")
        return cls(
            path=path,
            method=_opt_str(data, "method"),
            status=_opt_int(data, "status"),
            code=_opt_int(data, "code"),
            retry_after=retry_after,
            delay=_number(data, "delay") or 0.0,
            malformed=_bool(data, "malformed"),
            drop=_bool(data, "drop"),
            missing_field=_bool(data, "missing_field"),
            envelope=_opt_str(data, "envelope"),
            count=1 if count is None else count,
            group=group,
        )

    def to_json(self) -> dict[str, object]:
        """The control-plane JSON form of this spec."""
        return asdict(self)

    def matches(
        self, method: str, path: str, template: str | None, group: str | None = None
    ) -> bool:
        """Whether a call ``method path`` (endpoint ``template`` in ``group``) is hit."""
        if self.method is not None and self.method != method:
            return False
        if self.group is not None:
            if self.group == "trading":
                return group not in (None, "session")
            return self.group == group
        pattern = self.path or ""
        if "*" in pattern:
            return fnmatchcase(path, pattern) or (
                template is not None and fnmatchcase(template, pattern)
            )
        return pattern in (path, template)

    def fault_code(self) -> int:
        """The fault code of the injected status answer."""
        if self.code:
            return self.code
        return default_fault_code(self.status or 0)

    def retry_after_header(self) -> str | None:
        """The ``Retry-After`` header value, or ``None``."""
        value = self.retry_after
        if value is None or isinstance(value, str):
            return value
        return str(math.ceil(value))  # HTTP delay-seconds are whole: round up


def _opt_str(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"fault field {key!r} must be a string or null")


def _opt_int(data: Mapping[str, object], key: str) -> int | None:
    value = data.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"fault field {key!r} must be an integer or null")


def _number(data: Mapping[str, object], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"fault field {key!r} must be a number or null")


def _bool(data: Mapping[str, object], key: str) -> bool:
    value = data.get(key, False)
    if value is None or isinstance(value, bool):
        return bool(value)
    raise ValueError(f"fault field {key!r} must be true or false")
