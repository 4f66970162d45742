"""Issues 3 and 15: the cost of creating many sessions in one process (multi-account bots,
platforms).

Creates 1,000 and 100,000 ``KSSession`` objects sharing one ``Wire`` (the connection pool is
shared, so it is not counted), alternating the two sizes over several rounds, and prints per
session: the creation time (median over rounds; the cyclic garbage collector left on, as in an
application, so its passes over a growing heap are in the figure), the memory (tracemalloc, a
separate pass so tracing does not slow the timed one), how the 100,000 figure compares with the
1,000 one, and whether the memory comes back when the sessions are dropped (every session
garbage-collected, what tracemalloc still holds afterwards). No network: creating a session
sends nothing. Targets (issue 15): <= 50 us and <= 8 KB per session at 100,000 sessions, time
ratio 100,000 / 1,000 <= 1.2.

A session's core and snapshot are made at its first use (``SessionView._core``), so a session
made and not used is one object for the garbage collector; the figures "made and read once"
show what a session costs by the time it is used (information).

Each session gets its own ``Credentials`` (a distinct userid, as a multi-account process would
have), made before the measurement: the user's data is not the session's cost.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
import weakref

from common import Figure, Result, Target, cli, credentials, median

from session_fsm import Credentials, KSSession, Wire, contract

TARGET_US = 50.0
TARGET_BYTES = 8 * 1024
TARGET_SCALING = 1.2
#: Timed passes of the small size per round (one of the large): its median needs samples.
SMALL_REPEATS = 5
#: What may stay allocated after all sessions are dropped, per session created.
TARGET_RETAINED = 64


def _make(creds: list[Credentials], wire: Wire) -> list[KSSession]:
    return [KSSession(c, host=contract.PRODUCTION_HOST, wire=wire) for c in creds]


def _time(creds: list[Credentials], wire: Wire, collect: bool = True) -> tuple[float, int]:
    """Seconds per session, and how many sessions survived being dropped. ``collect=False``:
    the cyclic garbage collector paused while they are made (information: the constructors'
    own cost, without the collector's passes over the growing heap)."""
    gc.collect()
    if not collect:
        gc.disable()
    try:
        t0 = time.perf_counter()
        sessions = _make(creds, wire)
        per = (time.perf_counter() - t0) / len(creds)
    finally:
        gc.enable()
    refs = [weakref.ref(s) for s in sessions]
    del sessions
    gc.collect()
    return per, sum(r() is not None for r in refs)


def _time_used(creds: list[Credentials], wire: Wire) -> float:
    """Seconds per session made and then read once (``state``): a session's core and snapshot
    are made at its first use, so this is what a session costs by the time it is used
    (information)."""
    gc.collect()
    t0 = time.perf_counter()
    sessions = _make(creds, wire)
    for s in sessions:
        s.state  # noqa: B018 (the first use makes the core)
    per = (time.perf_counter() - t0) / len(creds)
    del sessions
    gc.collect()
    return per


def _tracked(creds: list[Credentials], wire: Wire) -> float:
    """Objects the cyclic garbage collector tracks, per session made."""
    gc.collect()
    before = len(gc.get_objects())
    sessions = _make(creds, wire)
    per = (len(gc.get_objects()) - before - 1) / len(creds)  # (-1: the list)
    del sessions
    return per


def _memory(creds: list[Credentials], wire: Wire) -> tuple[float, float]:
    """Bytes per session while alive, and bytes per session still held after dropping them."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        sessions = _make(creds, wire)
        alive = tracemalloc.get_traced_memory()[0] - base
        del sessions
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return alive / len(creds), max(0, retained) / len(creds)


def run(target: Target | None = None, smoke: bool = False) -> Result:
    """Measure and return the figures (``target`` is unused: no network)."""
    small, large, rounds = (100, 1000, 1) if smoke else (1000, 100_000, 5)
    t_start = time.perf_counter()
    wire = Wire()
    creds = [credentials(f"user-{i:05d}") for i in range(large)]
    _make(creds[:100], wire)  # warm-up: imports, caches
    times: dict[int, list[float]] = {small: [], large: []}
    paused: list[float] = []
    survivors = 0
    arms = [(small, True), (large, True), (large, False)]
    for i in range(rounds):
        k = i % len(arms)
        for n, collect in arms[k:] + arms[:k]:
            for _ in range(SMALL_REPEATS if n == small else 1):  # 1,000: a few samples a round
                per, alive = _time(creds[:n], wire, collect)
                (times[n] if collect else paused).append(per)
                survivors += alive
    used = {n: _time_used(creds[:n], wire) * 1e6 for n in (small, large)}
    tracked = _tracked(creds[:small], wire)
    mem = {n: _memory(creds[:n], wire) for n in (small, large)}
    t_small, t_large = median(times[small]) * 1e6, median(times[large]) * 1e6
    m_small, m_large = mem[small][0], mem[large][0]
    retained = max(mem[small][1], mem[large][1])
    time_scaling = t_large / t_small
    mem_scaling = m_large / m_small
    t_paused = median(paused) * 1e6
    figures = [
        Figure(
            f"create time per session, {small:,}",
            t_small,
            "us",
            f"<= {TARGET_US:g}",
            t_small <= TARGET_US,
        ),
        Figure(
            f"create time per session, {large:,}",
            t_large,
            "us",
            f"<= {TARGET_US:g}",
            t_large <= TARGET_US,
        ),
        Figure(
            f"time scaling {large:,} / {small:,}",
            time_scaling,
            "x",
            f"<= {TARGET_SCALING}",
            time_scaling <= TARGET_SCALING,
        ),
        Figure(
            f"  create time per session, {large:,}, GC paused",
            t_paused,
            "us",
            "(information)",
            None,
        ),
        Figure(
            f"  cyclic GC's share of the {large:,} time",
            max(0.0, 1 - t_paused / t_large) * 100,
            "%",
            "(information)",
            None,
        ),
        Figure("  GC-tracked objects per session", tracked, "objects", "(information)", None),
        Figure(
            f"  made and read once, per session, {small:,}",
            used[small],
            "us",
            "(information)",
            None,
        ),
        Figure(
            f"  made and read once, per session, {large:,}",
            used[large],
            "us",
            "(information)",
            None,
        ),
        Figure(
            f"memory per session, {small:,}",
            m_small,
            "bytes",
            f"<= {TARGET_BYTES:,}",
            m_small <= TARGET_BYTES,
            full_only=False,
        ),
        Figure(
            f"memory per session, {large:,}",
            m_large,
            "bytes",
            f"<= {TARGET_BYTES:,}",
            m_large <= TARGET_BYTES,
            full_only=False,
        ),
        Figure(
            f"memory scaling {large:,} / {small:,}",
            mem_scaling,
            "x",
            f"<= {TARGET_SCALING}",
            mem_scaling <= TARGET_SCALING,
            full_only=False,
        ),
        Figure(
            "sessions alive after drop + gc",
            survivors,
            "sessions",
            "== 0",
            survivors == 0,
            full_only=False,
        ),
        Figure(
            "memory kept after drop, per session",
            retained,
            "bytes",
            f"<= {TARGET_RETAINED}",
            retained <= TARGET_RETAINED,
            full_only=False,
        ),
    ]
    data = {"survivors": survivors, "bytes": m_large, "retained": retained, "us": t_large,
            "us_gc_paused": t_paused, "tracked": tracked, "us_used": used}  # fmt: skip
    return Result("sessions_create", figures, data, time.perf_counter() - t_start)


if __name__ == "__main__":
    raise SystemExit(cli("sessions_create", run, needs_sandbox=False))
