"""Issue 4 (2): 64 threads meet one session expiry at once.

A storm round: the sandbox expires the session, then 64 threads released by one barrier each
send a GET; all meet the 401, exactly one of them logs in again (login + 2FA) while the others
wait, and every GET is replayed with the new token. A baseline round: the same 64 threads each
send two GETs, no expiry (a storm costs each thread a 401 and a replay, so two GETs is the fair
comparison). Rounds alternate in one run; the figure is median(storm wall time) /
median(baseline wall time), target at most 1.5, with logins exactly 1 and successes 64 in
every storm round.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from common import ORDERS, Figure, Result, Target, cli, credentials, median

from session_fsm import KSError, KSSession, Wire

TARGET_RATIO = 1.5


def _round(threads: int, work: Callable[[], int]) -> tuple[float, int]:
    """Run ``work`` in ``threads`` threads released together; (wall seconds, successes)."""
    barrier = threading.Barrier(threads + 1)
    ok = [0] * threads

    def body(i: int) -> None:
        barrier.wait()
        try:
            ok[i] = work()
        except KSError:
            ok[i] = 0

    pool = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return time.perf_counter() - t0, sum(ok)


def run(target: Target, smoke: bool = False) -> Result:
    """Measure and return the figures."""
    threads, rounds = (16, 2) if smoke else (64, 15)
    t_start = time.perf_counter()
    control = target.control
    control.reset()
    session = KSSession(credentials(), host=target.url, wire=Wire())
    session.connect()

    def one_get() -> int:
        return 1 if session.get(ORDERS).ok else 0

    def two_gets() -> int:
        return one_get() & one_get()

    _round(threads, two_gets)  # warm-up: fill the connection pool, start server threads
    storm: list[float] = []
    base: list[float] = []
    logins: list[int] = []
    successes: list[int] = []
    for i in range(rounds):
        for kind in ("storm", "base") if i % 2 == 0 else ("base", "storm"):
            if kind == "base":
                base.append(_round(threads, two_gets)[0])
                continue
            before = control.stats()
            control.expire()
            wall, ok = _round(threads, one_get)
            after = control.stats()
            storm.append(wall)
            logins.append(after["logins"] - before["logins"])
            successes.append(ok)
            assert after["sessions"] - before["sessions"] == logins[-1]  # each login did 2FA
    session.close()
    ratio = median(storm) / median(base)
    one_login = all(n == 1 for n in logins)
    all_ok = all(n == threads for n in successes)
    figures = [
        Figure(
            "storm rounds with exactly 1 login",
            sum(n == 1 for n in logins),
            "rounds",
            f"== {rounds}",
            one_login,
            full_only=False,
        ),
        Figure(
            f"GETs succeeded per storm (of {threads}), min",
            min(successes),
            "GETs",
            f"== {threads}",
            all_ok,
            full_only=False,
        ),
        Figure("storm wall time, median", median(storm) * 1e3, "ms", "", None),
        Figure("baseline (2 GETs/thread) wall time, median", median(base) * 1e3, "ms", "", None),
        Figure("storm / baseline ratio", ratio, "x", f"<= {TARGET_RATIO}", ratio <= TARGET_RATIO),
    ]
    data = {"threads": threads, "logins": logins, "successes": successes, "ratio": ratio}
    return Result("relogin_storm", figures, data, time.perf_counter() - t_start)


if __name__ == "__main__":
    raise SystemExit(cli("relogin_storm", run))
