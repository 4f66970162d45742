"""Every benchmark at a tiny size, so they keep working. Structural outputs only, never timing.

Each benchmark's ``run(target, smoke=True)`` runs against this module's in-process sandbox;
one test also runs ``benchmarks/run_all.py --smoke`` as a user would (its own sandbox process).
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import structlog

from session_fsm import contract
from session_fsm.sandbox import Sandbox

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def bench(name: str) -> ModuleType:
    """Import a benchmark module (they import ``common`` as a sibling, like scripts do)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.fixture
def target(sb: Sandbox) -> Iterator[object]:
    """The sandbox as a benchmark target; the benchmarks' logging set-up undone afterwards."""
    common = bench("common")
    urllib3_level = logging.getLogger("urllib3").level
    common.quiet_logging()
    yield common.Target(sb.url, sb.control, "in-process thread")
    structlog.reset_defaults()
    logging.getLogger("urllib3").setLevel(urllib3_level)


def _judged_ok(result: object) -> None:
    failed = result.failed(smoke=True)  # type: ignore[attr-defined]
    assert failed == [], [f.name for f in failed]


def test_sessions_create_are_collected_and_small(target: object) -> None:
    result = bench("sessions_create").run(None, smoke=True)
    _judged_ok(result)
    assert result.data["survivors"] == 0  # every dropped session was garbage-collected
    assert 0 < result.data["bytes"] <= 8 * 1024
    assert result.data["retained"] <= 64


def test_request_overhead_runs(target: object) -> None:
    result = bench("request_overhead").run(target, smoke=True)
    _judged_ok(result)
    assert result.data["requests"] == 3 * 2 * 10  # three arms, two rounds of 10
    assert result.data["ratio"] > 0


def test_relogin_storm_logs_in_once_per_storm(target: object) -> None:
    result = bench("relogin_storm").run(target, smoke=True)
    _judged_ok(result)
    assert result.data["logins"] and all(n == 1 for n in result.data["logins"])
    assert all(n == result.data["threads"] for n in result.data["successes"])
    # the 900901 storm: every thread met the rejected Bearer token, one provider call each
    assert result.data["provider_calls"] and all(n == 1 for n in result.data["provider_calls"])
    assert all(n == result.data["threads"] for n in result.data["bearer_successes"])
    assert all(n == result.data["threads"] for n in result.data["bearer_met"])


def test_connect_overhead_makes_the_same_calls(target: object) -> None:
    result = bench("connect_overhead").run(target, smoke=True)
    _judged_ok(result)
    rounds = result.data["rounds"]
    calls = {f"{m} {p}" for m, p in (contract.SESSION_INIT, contract.LOGIN_USERID,
                                     contract.TWO_FA_ACCESSCODE)}  # fmt: skip
    # four arms (library, raw, library with events filtered, raw reading the environment
    # once), each one connect per round plus its warm-up
    assert result.data["calls"] == {c: 4 * (rounds + 1) for c in calls}


def test_metrics_overhead_counts_every_request(target: object) -> None:
    pytest.importorskip("prometheus_client")
    result = bench("metrics_overhead").run(target, smoke=True)
    _judged_ok(result)
    assert result.data["requests"] == 2 * 20  # two arms, 20 pairs
    assert result.data["counted"] == 20 + 1  # the metrics arm's requests and its warm-up


def test_soak_loses_nothing_and_logs_in_once_per_expiry(target: object) -> None:
    result = bench("soak").run(target, smoke=True)
    _judged_ok(result)
    counts = result.data["counts"]
    assert counts.lost == 0 and counts.other == {}
    assert counts.expiries > 0 and counts.logins == counts.expiries
    assert counts.faults_served > 0


def test_run_all_smoke_command() -> None:
    """The command CI and users run: its own sandbox process, every benchmark, exit 0."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("sessions_create", "request_overhead", "relogin_storm", "connect_overhead",
                 "metrics_overhead", "soak"):  # fmt: skip
        assert name in proc.stdout
    assert "FAIL" not in proc.stdout
    assert "all judged figures PASS" in proc.stdout
