"""Every setting of a KSSession, with its default, in one immutable value.

``KSSession(credentials, host=..., **options)`` passes ``options`` here, so an unknown or
mistyped option fails at once with the list of valid names.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, fields
from typing import Any
from zoneinfo import ZoneInfo

from . import contract
from . import validation as v
from .errors import ConfigurationError
from .models import DEFAULT_MAX_ANSWER_BYTES
from .retry import RetryPolicy
from .wire import WireConfig, check_deadline

#: Bounds of ``max_answer_bytes``: below 1 KiB no real answer fits; above 1 GiB is no cap.
MIN_ANSWER_BYTES, MAX_ANSWER_BYTES = 1 << 10, 1 << 30


@dataclass(frozen=True)
class SessionConfig:
    """Settings of a session. Times are in seconds.

    - ``timeout``: (connect, read) timeout of every HTTP call.
    - ``deadline``: the most one HTTP call may take in all (connect, the whole answer, retries
      and their waits); past it the call raises ``RequestTimeout``. Finite, > 0.
    - ``retry``: urllib3 retry policy below the session (429/5xx/connection faults).
    - ``verify``: TLS verification (True, or a CA bundle path).
    - ``allowed_domains`` / ``allow_loopback``: where ``session_init`` may redirect to
      (loopback only from a session whose own host is loopback: the sandbox).
    - ``ott_ttl``: how long a one-time token is trusted locally before authenticate().
    - ``auto_relogin``: log in again by itself when a request meets an expired session, and
      renew proactively at the deadlines below (off: neither; a passed deadline raises).
    - ``relogin_timeout``: how long a request waits for another thread's (or process's)
      re-login before it gives up with ``SessionExpired``; also the longest any call waits for
      the session's lock (connect, triggers).
    - ``cooldown``: after a wrong password/access code or a rejected gateway token, calls fail
      at once with that error for this long instead of hitting the login endpoints again.
    - ``max_session_age`` / ``daily_cutoff`` (``"HH:MM"``) in ``cutoff_tz``: proactive re-login
      deadlines (off by default). Within ``soft_window`` before a deadline one caller re-logs
      in while the others carry on; if that fails, the old token is used and the re-login
      tried again later; past the deadline everyone waits for the new session.
    - ``replay_posts``: replay a POST once after re-login when its body is bytes or JSON.
    - ``history_size``: how many transition records ``session.history`` keeps.
    - ``logout_on_exit``: leaving ``with KSSession(...)`` also logs out (off: it only closes
      connections, like ``requests.Session``, and a session shared through a store lives on).
    - ``max_answer_bytes``: the largest session-call answer body read (and trading error body:
      one is never read past it and one chunk), in bytes; a larger one is a
      ``MalformedAnswer``. 1 MiB by default.
    - ``heartbeat``: when no request has been made for this long, one cheap authenticated call
      (``heartbeat_call``: method and path, read-only by default) checks the session from a
      background thread, which renews a dead one there (None: off).
    """

    timeout: tuple[float, float] = (3.05, 10.0)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    verify: bool | str = True
    allowed_domains: tuple[str, ...] = (contract.KS_DOMAIN,)
    allow_loopback: bool = True
    ott_ttl: float = 300.0
    auto_relogin: bool = True
    relogin_timeout: float = 30.0
    cooldown: float = 300.0
    max_session_age: float | None = None
    daily_cutoff: str | None = None
    cutoff_tz: str = "Asia/Kolkata"
    soft_window: float = 60.0
    replay_posts: bool = True
    history_size: int = 64
    logout_on_exit: bool = False
    deadline: float = 60.0
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    heartbeat: float | None = None
    heartbeat_call: tuple[str, str] = contract.ORDERS_REPORT

    def __post_init__(self) -> None:
        check_deadline(self.deadline)
        # Every option is checked here, at construction (type, range, finiteness), so a bad
        # one fails at once naming the option, never later inside a request with a raw error.
        _check_session_config(self)
        cap = self.max_answer_bytes
        if type(cap) is not int or not MIN_ANSWER_BYTES <= cap <= MAX_ANSWER_BYTES:
            raise ConfigurationError(
                f"max_answer_bytes must be an integer within {MIN_ANSWER_BYTES}..{MAX_ANSWER_BYTES}"
            )
        if self.heartbeat is not None and not (
            isinstance(self.heartbeat, (int, float))
            and not isinstance(self.heartbeat, bool)
            and math.isfinite(self.heartbeat)
            and self.heartbeat > 0
        ):
            raise ConfigurationError("heartbeat must be > 0 seconds (or None: off)")
        call = self.heartbeat_call
        if not (
            isinstance(call, tuple)
            and len(call) == 2
            and all(isinstance(part, str) for part in call)
            and call[0].upper() in ("GET", "HEAD", "POST", "PUT", "DELETE")
            and call[1].startswith("/")
        ):
            raise ConfigurationError(
                "heartbeat_call must be (method, path) with a path starting with /",
                hint='e.g. heartbeat_call=("GET", "/reports/1.0/orders")',
            )

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SessionConfig:
        """Build from keyword options, naming any unknown one. Without options, the one
        shared default (it is immutable; a process with 10,000 sessions keeps one, not 10,000,
        for the garbage collector to walk)."""
        if not options and cls is SessionConfig:
            return _DEFAULT
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown option(s): {', '.join(unknown)}",
                hint=f"valid options: {', '.join(sorted(known))}",
            )
        return cls(**options)

    def wire_config(self) -> WireConfig:
        """The transport settings implied by this config."""
        return WireConfig(
            timeout=self.timeout,
            retry=self.retry,
            verify=self.verify,
            allowed_domains=self.allowed_domains,
            allow_loopback=self.allow_loopback,
            deadline=self.deadline,
            max_answer_bytes=self.max_answer_bytes,
        )

    def deadlines(self, login_time: float) -> tuple[float, float] | None:
        """(soft, hard) proactive re-login times (epoch s) of a session made at ``login_time``.

        ``max_session_age`` gives a soft window of ``soft_window`` before its deadline. The
        daily cut-off is hard only: a session made just before the cut-off dies with it, so
        renewing early would not help; the first request after the cut-off renews (everyone
        waits) and the new session lives until the next day's cut-off.
        """
        soft: list[float] = []
        hard: list[float] = []
        if self.max_session_age is not None:
            hard.append(login_time + self.max_session_age)
            soft.append(hard[-1] - self.soft_window)
        if self.daily_cutoff is not None:
            tz = ZoneInfo(self.cutoff_tz)
            made = dt.datetime.fromtimestamp(login_time, tz)
            cut = dt.datetime.combine(made.date(), dt.time.fromisoformat(self.daily_cutoff), tz)
            if cut <= made:
                cut += dt.timedelta(days=1)
            hard.append(cut.timestamp())
            soft.append(hard[-1])
        return (min(soft), min(hard)) if hard else None


def _check_session_config(config: SessionConfig) -> None:
    def put(name: str, value: Any) -> None:
        object.__setattr__(config, name, value)  # the canonical form (frozen dataclass)

    put("timeout", v.timeout("timeout", config.timeout))
    v.instance("retry", config.retry, RetryPolicy, hint="use retry=RetryPolicy(total=...)")
    put("verify", v.verify("verify", config.verify))
    put("allowed_domains", v.domains("allowed_domains", config.allowed_domains))
    for name in ("allow_loopback", "auto_relogin", "replay_posts", "logout_on_exit"):
        v.flag(name, getattr(config, name))
    put("ott_ttl", v.seconds("ott_ttl", config.ott_ttl, positive=True))
    for name in ("relogin_timeout", "cooldown", "soft_window"):
        put(name, v.seconds(name, getattr(config, name)))
    put(
        "max_session_age",
        v.optional_seconds("max_session_age", config.max_session_age, positive=True),
    )
    if not isinstance(config.cutoff_tz, str):
        v.zone("cutoff_tz", config.cutoff_tz)  # raises, naming the type
    if config.daily_cutoff is not None:  # the zone is loaded only when a cut-off uses it
        v.time_of_day("daily_cutoff", config.daily_cutoff)
        v.zone("cutoff_tz", config.cutoff_tz)
    v.count("history_size", config.history_size, minimum=1, maximum=MAX_HISTORY)


#: The most transition records a session may keep.
MAX_HISTORY = 1_000_000

_DEFAULT = SessionConfig()
#: The options that configure the transport: with ``wire=``, the wire's own settings rule.
WIRE_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(WireConfig) if f.name in
                                      {f.name for f in fields(SessionConfig)})  # fmt: skip


def check_wire_options(options: dict[str, Any], wire: WireConfig) -> None:
    """Refuse transport options that differ from those of a given wire (they would be dropped
    silently otherwise). Names the options, never their values."""
    conflicting = [
        name
        for name in WIRE_OPTIONS
        if name in options and _as_tuple(options[name]) != _as_tuple(getattr(wire, name))
    ]
    if conflicting:
        raise ConfigurationError(
            f"option(s) {', '.join(conflicting)} conflict with the given wire= "
            "(the wire's own settings are used)",
            hint="leave them out, or set them on the Wire's WireConfig",
        )


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
