"""Issue 4 (2): 64 threads meet one session expiry at once.

A storm round: the sandbox expires the session, then 64 threads released by one barrier each
send a GET; all meet the 401, exactly one of them logs in again (login + 2FA) while the others
wait, and every GET is replayed with the new token. A baseline round: the same 64 threads each
send two GETs, no expiry (a storm costs each thread a 401 and a replay, so two GETs is the fair
comparison). Rounds alternate in one run; the figure is median(storm wall time) /
median(baseline wall time), target at most 1.5, with logins exactly 1 and successes 64 in
every storm round.

A Bearer storm (issue 15): a session whose credentials carry an ``access_token_provider``; the
sandbox is told to answer the next 64 order-report GETs with 401 fault 900901 (the gateway
rejects the Bearer token), each answer held ``BEARER_DELAY`` seconds so that all 64 threads
have sent with the rejected token before the first rejection comes back; then 64 threads send
a GET each. Exactly one provider call per storm (single flight per rejected Bearer generation),
no session login, every GET answered 200 (replayed with the new token), and all 64 rejections
served (so every thread did meet the rejected token).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from common import ORDERS, Figure, Result, Target, cli, credentials, median

from session_fsm import Credentials, KSError, KSSession, Wire, contract

TARGET_RATIO = 1.5
#: Seconds the sandbox holds each 900901 answer: long enough for 64 threads to send first.
BEARER_DELAY = 1.0


class Provider:
    """An ``access_token_provider`` that counts its calls (the sandbox's token, as a portal
    would hand out after a rotation)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.calls += 1
        return self.token


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
    bearer = _bearer_storms(target, threads, 2 if smoke else 5)
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
        *bearer.figures,
    ]
    data = {"threads": threads, "logins": logins, "successes": successes, "ratio": ratio,
            **bearer.data}  # fmt: skip
    return Result("relogin_storm", figures, data, time.perf_counter() - t_start)


def _bearer_storms(target: Target, threads: int, rounds: int) -> Result:
    """``rounds`` 900901 storms of ``threads`` threads on one session with a provider."""
    control = target.control
    provider = Provider(credentials().bearer.reveal())
    c = credentials()
    creds = Credentials(
        userid=c.userid, consumer_key=c.consumer_key, access_token=c.bearer.reveal(),
        password="demo-password", access_code="1234", app_id=c.app_id,
        access_token_provider=provider,
    )  # fmt: skip
    session = KSSession(creds, host=target.url, timeout=(5.0, 10.0))
    session.connect()

    def one_get() -> int:
        return 1 if session.get(ORDERS).status_code == 200 else 0

    _round(threads, one_get)  # warm-up: a connection per thread
    calls: list[int] = []
    oks: list[int] = []
    met: list[int] = []
    logins: list[int] = []
    walls: list[float] = []
    code = contract.FAULT_GATEWAY_TOKEN
    for _ in range(rounds):
        before, asked = control.stats(), provider.calls
        control.fault(ORDERS, status=401, code=code, count=threads, delay=BEARER_DELAY)
        wall, ok = _round(threads, one_get)
        after = control.stats()
        walls.append(wall)
        calls.append(provider.calls - asked)
        oks.append(ok)
        met.append(after["faults_served"] - before["faults_served"])
        logins.append(after["logins"] - before["logins"])
    session.close()
    figures = [
        Figure(
            "900901 storms with exactly 1 provider call",
            sum(n == 1 for n in calls),
            "rounds",
            f"== {rounds}",
            all(n == 1 for n in calls),
            full_only=False,
        ),
        Figure(
            f"  GETs answered 200 per 900901 storm (of {threads}), min",
            min(oks),
            "GETs",
            f"== {threads}",
            all(n == threads for n in oks),
            full_only=False,
        ),
        Figure(
            "  threads that met the rejected token, min",
            min(met),
            "threads",
            f"== {threads}",
            all(n == threads for n in met),
            full_only=False,
        ),
        Figure(
            "  session logins during 900901 storms",
            sum(logins),
            "logins",
            "== 0",
            sum(logins) == 0,
            full_only=False,
        ),
        Figure(
            f"  900901 storm wall time, median (incl. {BEARER_DELAY:g} s held)",
            median(walls) * 1e3,
            "ms",
            "",
            None,
        ),
    ]
    data = {"provider_calls": calls, "bearer_successes": oks, "bearer_met": met}
    return Result("bearer_storm", figures, data)


if __name__ == "__main__":
    raise SystemExit(cli("relogin_storm", run))
