"""Immutable values the session publishes: its snapshot and the record of each transition.

A reader takes ``session.snapshot()`` once and gets a state, host and tokens that belong
together (the botocore ``get_frozen_credentials`` idea): a new session is swapped in as one
attribute assignment, never assembled field by field in place. The snapshot is the session's
whole state: the gateway (Bearer) identity and its generation, the cool-down after a rejected
login, and the soft refresh's progress live in it too, nowhere beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import KSError
from ..frozen import quick_init
from ..secret import Secret
from ..table import State
from .calls import Identity


@dataclass(frozen=True, slots=True)
class Cooldown:
    """A rejected login remembered until ``until`` (epoch s): the login endpoints are not called
    again before then. ``error`` is the error class's name."""

    until: float
    error: str
    status: int | None = None
    fault_code: int | None = None
    #: The error itself, raised again during the cool-down (None: read from the store).
    exc: KSError | None = field(default=None, compare=False, repr=False)
    #: Kept in the token store too: a reset there (another process, the CLI) ends it here.
    stored: bool = False


@quick_init
@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole session state at one instant. Tokens are Secrets, so ``repr`` is safe.

    - ``state``, ``host``: where the session is and the host its calls go to;
    - ``generation``: how many session tokens it has had; ``session_token``, ``login_time``;
    - ``one_time_token``, ``ott_time``: in OTT-issued only;
    - ``who``: the identity calls are made as (its Bearer token a Secret), and
      ``bearer_generation``: how many times the provider replaced that token;
    - ``cooldown``: a rejected login remembered (None: none);
    - ``refreshing``: a proactive refresh is under way (the session stays Authenticated);
      ``refresh_retry_at``: when a failed proactive refresh of this generation is tried again;
    - ``relogins_failed``: how many automatic re-logins failed, and ``relogin_error`` the last
      one's error: the callers that waited for that re-login raise it rather than try again
      (single-flight bookkeeping, left out of equality: a refused re-login changes nothing).
    """

    state: State
    host: str
    generation: int = 0
    session_token: Secret | None = None
    one_time_token: Secret | None = None
    ott_time: float | None = None
    login_time: float | None = None
    who: Identity | None = field(default=None, repr=False)  # who the calls are made as
    bearer_generation: int = 0
    cooldown: Cooldown | None = None
    refreshing: bool = False
    refresh_retry_at: float | None = None
    relogins_failed: int = field(default=0, compare=False)
    relogin_error: KSError | None = field(default=None, repr=False, compare=False)

    def evolve(self, **changes: Any) -> Snapshot:
        """A copy with ``changes``: ``dataclasses.replace`` without its per-call field scan
        (a snapshot is made on every edge). An unknown field name raises TypeError."""
        return self.evolve_with(changes)

    def evolve_with(self, changes: dict[str, Any]) -> Snapshot:
        """:meth:`evolve` with the changes in a dict, which it empties (no keyword arguments
        to pack and unpack: the core's edges build theirs as a dict)."""
        get = changes.pop
        new = Snapshot(
            get("state", self.state),
            get("host", self.host),
            get("generation", self.generation),
            get("session_token", self.session_token),
            get("one_time_token", self.one_time_token),
            get("ott_time", self.ott_time),
            get("login_time", self.login_time),
            get("who", self.who),
            get("bearer_generation", self.bearer_generation),
            get("cooldown", self.cooldown),
            get("refreshing", self.refreshing),
            get("refresh_retry_at", self.refresh_retry_at),
            get("relogins_failed", self.relogins_failed),
            get("relogin_error", self.relogin_error),
        )
        if changes:
            raise TypeError(f"Snapshot has no field {next(iter(changes))!r}")
        return new


#: Outcomes of an attempted transition.
OK, REFUSED, FAILED = "ok", "refused", "failed"


@quick_init
@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One attempted transition, as kept in ``session.history`` and passed to callbacks."""

    time: float
    trigger: str
    src: State
    dst: State
    outcome: str
    status: int | None = None
    fault_code: int | None = None
    error: str | None = None
    duration_ms: float = 0.0
    attempt: int = 1
    guards: tuple[tuple[str, bool], ...] = ()
    reason: str | None = None
    generation: int = 0
    #: The request that met the cause of this transition (``"GET /reports/1.0/orders"``), when
    #: a server answer to a trading call caused it (an expiry); else None.
    call: str | None = None

    def as_event(self) -> dict[str, object]:
        """The record as log-event fields (no secrets: a record never holds one)."""
        return {
            "trigger": self.trigger,
            "src": self.src._value_,  # (not .value: Enum's property is a Python call)
            "dst": self.dst._value_,
            "outcome": self.outcome,
            "status": self.status,
            "fault_code": self.fault_code,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 3),
            "attempt": self.attempt,
            "guards": dict(self.guards),
            "reason": self.reason,
            "generation": self.generation,
            "call": self.call,
        }


#: The fields of a transition event (:meth:`TransitionRecord.as_event` plus who and what):
#: typed values only, which the redaction processor may skip. Derived from ``as_event``, so the
#: two cannot drift apart.
EVENT_KEYS: frozenset[str] = frozenset(
    TransitionRecord(0.0, "", State.UNINITIALISED, State.UNINITIALISED, OK).as_event()
) | {"event", "session_id", "userid"}
