"""Issue 8: a long run under load, with session expiries and server errors.

``requests`` authenticated requests from ``threads`` threads through one session: GETs of
positions and quotes, and every 10th a POST order. Before every 100th request the sandbox
expires the session (1%), and before every 100th (offset 50) it queues one 503 for the next
positions GET (1%), which the wire retries. Every request must end either in success or in a
typed ``KSError``: one that ends otherwise (any other exception, or never) is lost, and none may
be. A typed error is allowed only where the soak's own injections explain it: the sandbox's 401
for an expired session met again by the replay (a second expiry while the request renewed),
or its 503 outlasting the wire's retries; any other error fails the run. The sandbox refuses a
user's orders past ``MAX_ORDERS_PER_USER`` (10,000, and the full run places 20,000), so the
soak has the control plane forget the user's book every half of that many orders: every order
is accepted. Every expiry that killed a live session must cost exactly one login (single
flight), and the process's RSS must not grow by more than 2 MB between the first 10% of the
run and its end.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from common import (
    ORDER,
    ORDER_BODY,
    POSITIONS,
    QUOTES,
    Figure,
    Result,
    Target,
    cli,
    credentials,
    rss_bytes,
)

from session_fsm import KSError, KSSession, ServiceUnavailable, SessionExpired, Wire
from session_fsm.sandbox import orders as sandbox_orders

TARGET_RSS = 2 * 1024 * 1024
EVERY = 100  # 1% of requests


@dataclass
class _Tally:
    """One thread's counts (merged at the end: no lock on the hot path)."""

    success: int = 0
    typed: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)
    expiries: int = 0
    expire_calls: int = 0
    faults: int = 0
    orders: int = 0
    orders_accepted: int = 0
    book_clears: int = 0
    orders_cleared: int = 0


@dataclass(frozen=True)
class SoakCounts:
    """What a soak run counted."""

    requests: int
    threads: int
    success: int
    typed: dict[str, int]  # typed errors by class name
    injected: dict[str, int]  # of those, the ones the soak's injections explain
    other: dict[str, int]  # untyped exceptions by class name (lost)
    expire_calls: int
    expiries: int  # expire calls that killed a live session
    faults: int  # 503s queued
    faults_served: int
    logins: int  # logins after the first connect
    rss_growth: int  # bytes, from the first 10% of requests to the end
    seconds: float
    orders: int  # orders sent
    orders_accepted: int
    book_clears: int  # times the control plane forgot the user's order book
    orders_cleared: int  # orders it forgot

    @property
    def lost(self) -> int:
        """Requests that ended neither in success nor in a typed error."""
        return self.requests - self.success - sum(self.typed.values())

    @property
    def uninjected(self) -> dict[str, int]:
        """Errors by class name that the soak's injections do not explain (typed or not)."""
        typed = Counter(self.typed)
        typed.subtract(self.injected)
        return {k: n for k, n in (typed + Counter(self.other)).items() if n}


def injected(exc: KSError) -> bool:
    """Whether the soak's own injections explain ``exc``: the sandbox's 401 for an expired
    session met again by the replay (a second expiry while the request renewed), or its 503
    outlasting the wire's retries. Not, say, a SessionExpired for a re-login waited on too long
    (no status: no answer of the server)."""
    if isinstance(exc, SessionExpired):
        return exc.status == 401
    return isinstance(exc, ServiceUnavailable) and exc.status == 503


def soak(target: Target, requests: int, threads: int) -> SoakCounts:
    """Run the soak; return its counts."""
    control = target.control
    control.reset()
    session = KSSession(credentials(), host=target.url, wire=Wire())
    session.connect()
    userid = credentials().userid
    # Forget the book every half of the sandbox's limit: the orders other threads place while
    # one clears (a few) never take it to the limit.
    per_clear = max(1, sandbox_orders.MAX_ORDERS_PER_USER // 2)
    start_logins = control.stats()["logins"]
    counter = itertools.count()
    tenth = max(1, requests // 10)
    rss_at_tenth: list[int] = []
    tallies = [_Tally() for _ in range(threads)]

    def work(tally: _Tally) -> None:
        while (i := next(counter)) < requests:  # itertools.count is atomic under the GIL
            if i % EVERY == 0:
                tally.expire_calls += 1
                tally.expiries += control.expire() > 0  # 0: nothing live (a login in flight)
            elif i % EVERY == EVERY // 2:
                tally.faults += control.fault(POSITIONS, method="GET", status=503)
            if i == tenth:
                rss_at_tenth.append(rss_bytes())
            order = i % 10 == 9
            if order and i // 10 and (i // 10) % per_clear == 0:
                tally.book_clears += 1
                tally.orders_cleared += control.clear_orders(userid)
            try:
                if order:
                    tally.orders += 1
                    session.post(ORDER, json=ORDER_BODY)
                    tally.orders_accepted += 1
                else:
                    session.get(QUOTES if i % 3 == 0 else POSITIONS)
                tally.success += 1
            except KSError as exc:
                tally.typed[type(exc).__name__] += 1
                if injected(exc):
                    tally.injected[type(exc).__name__] += 1
            except Exception as exc:  # a lost request: counted, never hidden
                tally.other[type(exc).__name__] += 1

    pool = [threading.Thread(target=work, args=(t,)) for t in tallies]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    rss_end = rss_bytes()
    stats = control.stats()
    session.close()
    return SoakCounts(
        requests=requests,
        threads=threads,
        success=sum(t.success for t in tallies),
        typed=dict(sum((t.typed for t in tallies), Counter())),
        injected=dict(sum((t.injected for t in tallies), Counter())),
        other=dict(sum((t.other for t in tallies), Counter())),
        expire_calls=sum(t.expire_calls for t in tallies),
        expiries=sum(t.expiries for t in tallies),
        faults=sum(t.faults for t in tallies),
        faults_served=stats["faults_served"],
        logins=stats["logins"] - start_logins,
        rss_growth=rss_end - (rss_at_tenth[0] if rss_at_tenth else rss_end),
        seconds=elapsed,
        orders=sum(t.orders for t in tallies),
        orders_accepted=sum(t.orders_accepted for t in tallies),
        book_clears=sum(t.book_clears for t in tallies),
        orders_cleared=sum(t.orders_cleared for t in tallies),
    )


def run(target: Target, smoke: bool = False) -> Result:
    """Measure and return the figures."""
    requests, threads = (1000, 4) if smoke else (200_000, 8)
    t_start = time.perf_counter()
    d = soak(target, requests, threads)
    injected = ", ".join(f"{k} {v}" for k, v in sorted(d.injected.items())) or "none"
    uninjected = ", ".join(f"{k} {v}" for k, v in sorted(d.uninjected.items())) or "none"
    errors = sum(d.uninjected.values())
    figures = [
        Figure("requests ended in success", d.success, "requests", "", None),
        Figure(
            f"requests ended in an injected error ({injected})",
            sum(d.injected.values()),
            "requests",
            "",
            None,
        ),
        Figure(
            f"requests ended in another error ({uninjected})",
            errors,
            "requests",
            "== 0",
            errors == 0,
            full_only=False,
        ),
        Figure("requests lost", d.lost, "requests", "== 0", d.lost == 0, full_only=False),
        Figure(f"orders accepted (of {d.orders:,} sent)", d.orders_accepted, "orders", "", None),
        Figure(
            f"order book clears ({d.orders_cleared:,} orders forgotten)",
            d.book_clears,
            "clears",
            "",
            None,
        ),
        Figure("expiries (that killed a live session)", d.expiries, "expiries", "", None),
        Figure(
            "logins",
            d.logins,
            "logins",
            f"== expiries ({d.expiries})",
            d.logins == d.expiries,
            full_only=False,
        ),
        Figure("503s served (retried by the wire)", d.faults_served, "faults", "", None),
        Figure(
            "RSS growth, first 10% -> end",
            d.rss_growth / 1024,
            "KiB",
            "<= 2,048",
            d.rss_growth <= TARGET_RSS,
        ),
        Figure("throughput", d.requests / d.seconds, "req/s", "", None),
    ]
    return Result("soak", figures, {"counts": d}, time.perf_counter() - t_start)


if __name__ == "__main__":
    raise SystemExit(cli("soak", run))
