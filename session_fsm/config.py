"""Every setting of a KSSession, with its default, in one immutable value.

``KSSession(credentials, host=..., **options)`` passes ``options`` here, so an unknown or
mistyped option fails at once with the list of valid names.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from typing import Any
from zoneinfo import ZoneInfo

from . import contract
from .errors import ConfigurationError
from .wire import RetryPolicy, WireConfig


@dataclass(frozen=True)
class SessionConfig:
    """Settings of a session. Times are in seconds.

    - ``timeout``: (connect, read) timeout of every HTTP call.
    - ``retry``: urllib3 retry policy below the session (429/5xx/connection faults).
    - ``verify``: TLS verification (True, or a CA bundle path).
    - ``allowed_domains`` / ``allow_loopback``: where ``session_init`` may redirect to.
    - ``ott_ttl``: how long a one-time token is trusted locally before authenticate().
    - ``auto_relogin``: log in again by itself when a request meets an expired session, and
      renew proactively at the deadlines below (off: neither; a passed deadline raises).
    - ``relogin_timeout``: how long a request waits for another thread's (or process's)
      re-login before it gives up with ``SessionExpired``.
    - ``cooldown``: after a wrong password/access code or a rejected gateway token, calls fail
      at once with that error for this long instead of hitting the login endpoints again.
    - ``max_session_age`` / ``daily_cutoff`` (``"HH:MM"``) in ``cutoff_tz``: proactive re-login
      deadlines (off by default). Within ``soft_window`` before a deadline one caller re-logs
      in while the others carry on; if that fails, the old token is used and the re-login
      tried again later; past the deadline everyone waits for the new session.
    - ``replay_posts``: replay a POST once after re-login when its body is bytes or JSON.
    - ``history_size``: how many transition records ``session.history`` keeps.
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
    heartbeat: float | None = None
    heartbeat_call: tuple[str, str] = contract.ORDERS_REPORT

    def __post_init__(self) -> None:
        if self.daily_cutoff is not None:
            try:
                dt.time.fromisoformat(self.daily_cutoff)
                ZoneInfo(self.cutoff_tz)
            except (ValueError, KeyError) as exc:
                raise ConfigurationError(
                    f"daily_cutoff/cutoff_tz invalid: {type(exc).__name__}",
                    hint='use daily_cutoff="HH:MM" and an IANA zone like "Asia/Kolkata"',
                ) from None
        if not self.ott_ttl > 0:  # 0 would make every one-time token stale: no login possible
            raise ConfigurationError("ott_ttl must be > 0 (seconds a one-time token is usable)")
        for name in ("relogin_timeout", "cooldown", "soft_window"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must be >= 0")
        if self.history_size < 1:
            raise ConfigurationError("history_size must be >= 1")
        if self.heartbeat is not None and not self.heartbeat > 0:
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


_DEFAULT = SessionConfig()
