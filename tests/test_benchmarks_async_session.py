"""benchmarks/async_session.py at a tiny size against the in-process sandbox: its structural
figures (none of the concurrent GETs failed, exactly one login per storm, every task served,
both connect arms made the same three calls) hold; timings are not judged at this size."""

from __future__ import annotations

import pytest

pytest.importorskip("aiohttp")

from session_fsm import contract
from tests.test_benchmarks_smoke import _judged_ok, bench, target

__all__ = ["target"]  # the fixture, imported for this module's test


def test_async_session_benchmark_structure(target: object) -> None:
    result = bench("async_session").run(target, smoke=True)
    _judged_ok(result)
    data = result.data
    assert data["burst_failed"] == 0 and data["burst_errors"] == {}
    assert data["logins"] == [1, 1] and data["successes"] == [data["tasks"]] * 2
    calls = {f"{m} {p}" for m, p in (contract.SESSION_INIT, contract.LOGIN_USERID,
                                      contract.TWO_FA_ACCESSCODE)}  # fmt: skip
    assert set(data["connect_calls"]) == calls
    assert len(set(data["connect_calls"].values())) == 1  # as many of each, from both arms
    names = [f.name for f in result.figures]
    assert "session / raw aiohttp median ratio" in names
    assert "CPU: session / raw aiohttp" in names  # the judged one (the event loop's CPU time)
    assert data["get_cpu_ratio"] > 0 and data["httpx_cpu_ratio"] > 0
    # The judged GET ratio is the ratio of the two GET medians printed above it (a merge once
    # overwrote it with the connect arm's CPU ratio).
    value = {f.name: f.value for f in result.figures}
    mine, raw = (value[f"GET + JSON, {arm}, loop CPU"] for arm in ("AsyncKSSession", "raw aiohttp"))
    get_cpu = mine / raw
    assert value["CPU: session / raw aiohttp"] == pytest.approx(get_cpu, rel=1e-9)
    assert "session / raw httpx median ratio" in names
    assert "connect / raw median ratio" in names and "storm / baseline ratio" in names
