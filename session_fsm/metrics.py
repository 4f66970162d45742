"""Prometheus metrics of sessions (``pip install 'session_fsm[metrics]'``).

``metrics = SessionMetrics(); metrics.watch(session)`` counts from the session's
``on_transition`` callbacks and ``on_request`` hooks into plain integers (a dictionary update
per request, no lock), and builds every metric family when Prometheus scrapes, in one custom
collector: counters from those integers, and everything that describes the present (state,
generation, age, the next proactive deadline, callers waiting on a re-login) from
``session.snapshot()``, so the request path pays nothing for those.

Labels are ``userid`` and ``session_id`` (plus the counter's own label), never a token or any
other secret. Names follow prometheus_client's conventions (``_total`` on counters, seconds,
``_timestamp_seconds`` for epoch times). ``metrics.registry`` is a registry of its own unless one
is given (pass ``prometheus_client.REGISTRY`` to join the application's default registry).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from .core.snapshot import FAILED, OK, REFUSED, TransitionRecord
from .errors import ConfigurationError
from .table import State

try:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        Metric,
        StateSetMetricFamily,
    )
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover -- exercised by test_metrics with the module hidden
    raise ConfigurationError(
        "session_fsm.metrics needs the prometheus_client package, which is not installed",
        hint="pip install 'session_fsm[metrics]'",
    ) from None

if TYPE_CHECKING:
    from .aio.session import AsyncKSSession
    from .sync.session import KSSession

    #: What :meth:`SessionMetrics.watch` takes: a session of either driver.
    Watched = KSSession | AsyncKSSession

#: A watched session, given back as it came.
W = TypeVar("W", "KSSession", "AsyncKSSession")
LABELS = ("userid", "session_id")
#: Re-login reasons (``session_fsm_relogins_total{reason}``), by the transition that began one.
RELOGIN_REASONS = {
    "expired": "expiry",  # a 401 on a request (or a heartbeat)
    "deadline": "deadline",  # the hard proactive deadline passed
    "soft_deadline": "soft_refresh",  # renewed ahead of the deadline
}
_LOGIN_TRIGGERS = frozenset({"init", "login", "authenticate", "connect", "refresh"})


def login_result(rec: TransitionRecord) -> str | None:
    """``session_fsm_logins_total{result}`` for a record: ``ok`` when a session token was
    obtained, the error class when a login step failed, ``cooldown`` when a remembered failure
    refused it; None when the record is not about logging in."""
    if rec.trigger not in _LOGIN_TRIGGERS:
        return None
    if rec.outcome == OK:
        return "ok" if rec.trigger in ("authenticate", "refresh") else None
    if rec.outcome == FAILED:
        return rec.error or "failed"
    if rec.outcome == REFUSED and rec.reason == "cooldown":
        return "cooldown"
    return None


def relogin_reason(rec: TransitionRecord) -> str | None:
    """``session_fsm_relogins_total{reason}`` for a record that begins a re-login, else None:
    ``expiry``, ``deadline``, ``soft_refresh`` (session_expired by why), ``gateway`` (the Bearer
    token was rejected) or ``redirect`` (the user moved host). A soft refresh (the ``refresh``
    edge) counts whether it succeeded or failed: each attempt is a login at the broker."""
    if rec.trigger == "refresh" and rec.outcome in (OK, FAILED):
        return "soft_refresh"
    if rec.outcome != OK:
        return None
    if rec.trigger == "session_expired":
        return RELOGIN_REASONS.get(rec.reason or "", rec.reason or "expiry")
    if rec.trigger == "gateway_rejected":
        return "gateway"
    if rec.trigger == "redirect_changed":
        return "redirect"
    return None


class _Counts:
    """The counters of one session, kept as plain integers and read at scrape time.

    Requests are counted in a dictionary per thread (only its own thread writes it, so no lock
    and no lost increment; a scrape sums copies, each made atomically): one attribute look-up
    and one dictionary update per request, well under a microsecond. Transitions (logins,
    re-logins, store errors) are rare and counted under a lock.
    """

    def __init__(self, session: Watched) -> None:
        self.labels = (session.credentials.userid, session.session_id)
        self._local = threading.local()
        self._per_thread: list[dict[str, int]] = []
        self._lock = threading.Lock()
        self.logins: dict[str, int] = {}
        self.relogins: dict[str, int] = {}
        self.store_errors = 0

    def on_request(self, _session: Any, outcome: str) -> None:
        try:
            counts: dict[str, int] = self._local.counts
        except AttributeError:
            counts = self._local.counts = {}
            with self._lock:
                self._per_thread.append(counts)
        counts[outcome] = counts.get(outcome, 0) + 1

    def on_transition(self, _session: Any, rec: TransitionRecord) -> None:
        result, reason = login_result(rec), relogin_reason(rec)
        with self._lock:
            if result is not None:
                self.logins[result] = self.logins.get(result, 0) + 1
            if reason is not None:
                self.relogins[reason] = self.relogins.get(reason, 0) + 1
            if rec.error == "StoreError":
                self.store_errors += 1

    def requests(self) -> dict[str, int]:
        """Requests by outcome, summed over threads."""
        with self._lock:
            copies = [counts.copy() for counts in self._per_thread]
        total: dict[str, int] = {}
        for counts in copies:
            for outcome, n in counts.items():
                total[outcome] = total.get(outcome, 0) + n
        return total


class SessionMetrics:
    """The metrics of any number of sessions, in one registry (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._counts: list[tuple[Watched, _Counts]] = []
        self._lock = threading.Lock()
        self.registry.register(_Collector(self))

    @property
    def sessions(self) -> tuple[Watched, ...]:
        """The watched sessions."""
        return tuple(s for s, _ in self._counts)

    def watch(self, session: W) -> W:
        """Count ``session``'s logins, re-logins, requests and store errors from now on, and
        report its present state at each scrape. Watching a session twice is a no-op."""
        with self._lock:
            if any(s is session for s, _ in self._counts):
                return session
            counts = _Counts(session)
            self._counts.append((session, counts))
        session.on_transition(counts.on_transition)
        session.on_request(counts.on_request)
        return session

    def counted(self) -> tuple[tuple[Watched, _Counts], ...]:
        """(session, its counts) for every watched session."""
        with self._lock:
            return tuple(self._counts)


class _Collector(Collector):
    """Builds every metric family at scrape time: counters from the sessions' counts, present
    state from their snapshots."""

    def __init__(self, metrics: SessionMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return [*self._counters(), *self._present()]

    def collect(self) -> Iterator[Metric]:
        logins, relogins, requests, store_errors = counters = self._counters()
        state, generation, age, deadline, waiters = present = self._present()
        for s, counts in self._metrics.counted():
            labels = list(counts.labels)
            for result, n in sorted(counts.logins.items()):
                logins.add_metric([*labels, result], n)
            for reason, n in sorted(counts.relogins.items()):
                relogins.add_metric([*labels, reason], n)
            by_outcome = counts.requests()
            for outcome, n in sorted(by_outcome.items()):
                requests.add_metric([*labels, outcome], n)
            store_errors.add_metric(labels, counts.store_errors + by_outcome.get("StoreError", 0))
            snap = s.snapshot()
            state.add_metric(labels, {st.value: st is snap.state for st in State})
            generation.add_metric(labels, snap.generation)
            waiters.add_metric(labels, s.renewal_waiters)
            if snap.state is State.AUTHENTICATED and snap.login_time is not None:
                now = s._clock()
                age.add_metric(labels, max(0.0, now - snap.login_time))
                deadlines = s.deadlines(snap)
                if deadlines is not None:
                    soft, hard = deadlines
                    deadline.add_metric(labels, soft if now < soft else hard)
        yield from counters
        yield from present

    @staticmethod
    def _counters() -> tuple[
        CounterMetricFamily, CounterMetricFamily, CounterMetricFamily, CounterMetricFamily
    ]:
        return (
            CounterMetricFamily(
                "session_fsm_logins",
                "Logins by result: ok, or the error class of a failed step",
                labels=[*LABELS, "result"],
            ),
            CounterMetricFamily(
                "session_fsm_relogins",
                "Re-logins begun, by reason: expiry, deadline, soft_refresh, gateway, redirect",
                labels=[*LABELS, "reason"],
            ),
            CounterMetricFamily(
                "session_fsm_requests",
                "Requests through session.request by outcome: ok or the error class",
                labels=[*LABELS, "outcome"],
            ),
            CounterMetricFamily(
                "session_fsm_store_errors",
                "Token store failures (StoreError) seen by the session",
                labels=LABELS,
            ),
        )

    @staticmethod
    def _present() -> tuple[
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
                "Threads or tasks waiting now for a re-login to finish", labels=LABELS,
            ),
        )
