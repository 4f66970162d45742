"""A small soak (the one of ``benchmarks/soak.py``, fewer requests) as an ordinary test.

Several threads share one session against the sandbox while 1% of requests are preceded by a
session expiry and 1% by an injected 503 on a GET. Every request must end in success or in a
typed error (none lost), and every expiry that killed a live session must cost exactly one
login: no storm, no missed re-login.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import structlog

from session_fsm.sandbox import Sandbox

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
REQUESTS = 3000
THREADS = 6


def bench(name: str) -> ModuleType:
    """Import a benchmark module (they import ``common`` as a sibling, like scripts do)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.fixture
def quiet() -> Iterator[None]:
    """The library's events into /dev/null for the run (thousands of them), then undone."""
    level = logging.getLogger("urllib3").level
    bench("common").quiet_logging()
    yield
    structlog.reset_defaults()
    logging.getLogger("urllib3").setLevel(level)


def test_soak(sb: Sandbox, quiet: None) -> None:
    common = bench("common")
    target = common.Target(sb.url, sb.control, "in-process thread")
    counts = bench("soak").soak(target, REQUESTS, THREADS)
    assert counts.other == {}, "requests ended in an untyped exception"
    assert counts.lost == 0
    assert counts.success >= REQUESTS * 0.95, counts.typed
    assert counts.expire_calls == REQUESTS // 100
    assert counts.expiries > 0
    assert counts.logins == counts.expiries  # single flight: one login per dead session
    assert counts.faults == REQUESTS // 100
    assert counts.faults_served > 0
    # The injected 503s were retried below the session, not surfaced (each is served once).
    assert counts.typed.get("ServiceUnavailable", 0) <= counts.faults_served
    stats = sb.control.stats()
    assert stats["sessions"] == counts.logins + 1  # every login completed its 2FA
