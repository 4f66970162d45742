"""Prometheus metrics of sessions (``pip install 'session_fsm[metrics]'``).

``metrics = SessionMetrics(); metrics.watch(session)`` feeds counters from the session's
``on_transition`` callbacks and ``on_request`` hooks (a dictionary look-up and an increment per
event), and reads everything that describes the present (state, generation, age, the next
proactive deadline, threads waiting on a re-login) from ``session.snapshot()`` when Prometheus
scrapes, in a custom collector: the request path pays nothing for those.

Labels are ``userid`` and ``session_id`` (plus the counter's own label), never a token or any
other secret. Names follow prometheus_client's conventions (``_total`` on counters, seconds,
``_timestamp_seconds`` for epoch times). ``metrics.registry`` is a registry of its own unless one
is given (pass ``prometheus_client.REGISTRY`` to join the application's default registry).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .snapshot import FAILED, OK, REFUSED, TransitionRecord
from .table import State

try:
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.core import GaugeMetricFamily, Metric, StateSetMetricFamily
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover -- exercised by test_metrics with the module hidden
    raise ConfigurationError(
        "session_fsm.metrics needs the prometheus_client package, which is not installed",
        hint="pip install 'session_fsm[metrics]'",
    ) from None

if TYPE_CHECKING:
    from .session import KSSession

LABELS = ("userid", "session_id")
#: Re-login reasons (``session_fsm_relogins_total{reason}``), by the transition that began one.
RELOGIN_REASONS = {
    "expired": "expiry",  # a 401 on a request (or a heartbeat)
    "deadline": "deadline",  # the hard proactive deadline passed
    "soft_deadline": "soft_refresh",  # renewed ahead of the deadline
}
_LOGIN_TRIGGERS = frozenset({"init", "login", "authenticate", "connect"})


def login_result(rec: TransitionRecord) -> str | None:
    """``session_fsm_logins_total{result}`` for a record: ``ok`` when a session token was
    obtained, the error class when a login step failed, ``cooldown`` when a remembered failure
    refused it; None when the record is not about logging in."""
    if rec.trigger not in _LOGIN_TRIGGERS:
        return None
    if rec.outcome == OK:
        return "ok" if rec.trigger == "authenticate" else None
    if rec.outcome == FAILED:
        return rec.error or "failed"
    if rec.outcome == REFUSED and rec.reason == "cooldown":
        return "cooldown"
    return None


def relogin_reason(rec: TransitionRecord) -> str | None:
    """``session_fsm_relogins_total{reason}`` for a record that begins a re-login, else None:
    ``expiry``, ``deadline``, ``soft_refresh`` (session_expired by why), ``gateway`` (the Bearer
    token was rejected) or ``redirect`` (the user moved host)."""
    if rec.outcome != OK:
        return None
    if rec.trigger == "session_expired":
        return RELOGIN_REASONS.get(rec.reason or "", rec.reason or "expiry")
    if rec.trigger == "gateway_rejected":
        return "gateway"
    if rec.trigger == "redirect_changed":
        return "redirect"
    return None


class SessionMetrics:
    """The metrics of any number of sessions, in one registry (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._sessions: list[KSSession] = []
        self._lock = threading.Lock()
        r = self.registry
        self.logins = Counter(
            "session_fsm_logins", "Logins by result: ok, or the error class of a failed step",
            [*LABELS, "result"], registry=r,
        )  # fmt: skip
        self.relogins = Counter(
            "session_fsm_relogins",
            "Re-logins begun, by reason: expiry, deadline, soft_refresh, gateway, redirect",
            [*LABELS, "reason"], registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "session_fsm_requests",
            "Requests through session.request by outcome: ok or the error class",
            [*LABELS, "outcome"], registry=r,
        )  # fmt: skip
        self.store_errors = Counter(
            "session_fsm_store_errors", "Token store failures (StoreError) seen by the session",
            LABELS, registry=r,
        )  # fmt: skip
        r.register(_PresentState(self))

    @property
    def sessions(self) -> tuple[KSSession, ...]:
        """The watched sessions."""
        return tuple(self._sessions)

    def watch(self, session: KSSession) -> KSSession:
        """Count ``session``'s logins, re-logins, requests and store errors from now on, and
        report its present state at each scrape. Watching a session twice is a no-op."""
        with self._lock:
            if any(s is session for s in self._sessions):
                return session
            self._sessions.append(session)
        labels = (session.credentials.userid, session.session_id)
        session.on_transition(self._on_transition_for(labels))
        session.on_request(self._on_request_for(labels))
        self.store_errors.labels(*labels)  # present from the start, at 0
        return session

    def _on_transition_for(
        self, labels: tuple[str, str]
    ) -> Callable[[Any, TransitionRecord], None]:
        def on_transition(_session: Any, rec: TransitionRecord) -> None:
            result = login_result(rec)
            if result is not None:
                self.logins.labels(*labels, result).inc()
            reason = relogin_reason(rec)
            if reason is not None:
                self.relogins.labels(*labels, reason).inc()
            if rec.error == "StoreError":
                self.store_errors.labels(*labels).inc()

        return on_transition

    def _on_request_for(self, labels: tuple[str, str]) -> Callable[[Any, str], None]:
        children: dict[str, Any] = {}  # outcome -> counter child: one dict look-up per request
        store_errors = self.store_errors.labels(*labels)

        def on_request(_session: Any, outcome: str) -> None:
            child = children.get(outcome)
            if child is None:
                child = children[outcome] = self.requests.labels(*labels, outcome)
            child.inc()
            if outcome == "StoreError":
                store_errors.inc()

        return on_request


class _PresentState(Collector):
    """Reads each watched session's snapshot at scrape time."""

    def __init__(self, metrics: SessionMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        state, generation, age, deadline, waiters = families
        for s in self._metrics.sessions:
            labels = [s.credentials.userid, s.session_id]
            snap = s.snapshot()
            state.add_metric(labels, {st.value: st is snap.state for st in State})
            generation.add_metric(labels, snap.generation)
            waiters.add_metric(labels, s.renewal_waiters)
            if snap.state is State.AUTHENTICATED and snap.login_time is not None:
                age.add_metric(labels, max(0.0, s._clock() - snap.login_time))
                deadlines = s.deadlines(snap)
                if deadlines is not None:
                    soft, hard = deadlines
                    deadline.add_metric(labels, soft if s._clock() < soft else hard)
        yield from families

    @staticmethod
    def _families() -> tuple[
        StateSetMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily,
        GaugeMetricFamily,
    ]:  # fmt: skip
        return (
            StateSetMetricFamily(
                "session_fsm_state", "The session's state (1 for the current one)", labels=LABELS
            ),
            GaugeMetricFamily(
                "session_fsm_generation", "How many session tokens the session has had",
                labels=LABELS,
            ),
            GaugeMetricFamily(
                "session_fsm_session_age_seconds",
                "Age of the current session token (Authenticated only)", labels=LABELS,
            ),
            GaugeMetricFamily(
                "session_fsm_next_deadline_timestamp_seconds",
                "Epoch time of the next proactive re-login deadline (when one is set)",
                labels=LABELS,
            ),
            GaugeMetricFamily(
                "session_fsm_relogin_waiters",
                "Threads blocked now, waiting for a re-login to finish", labels=LABELS,
            ),
        )
