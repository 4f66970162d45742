"""Issue 16: which async HTTP client carries the async session, chosen by measurement.

The same authenticated GET (``/reports/1.0/orders``, the session's headers, JSON parsed) is sent
through ``httpx.AsyncClient`` (A) and ``aiohttp.ClientSession`` (B), each with one keep-alive
pool to the same sandbox, on one event loop. Sequential latency: alternating blocks
(A B, B A, ...), each request timed on its own; the figure is median(A) / median(B).

Concurrency: 1,000 GETs started at once through each client: httpx with its default limits
(100 connections, a 5 s pool timeout), httpx with the pool timeout off (requests queue for a
connection), and aiohttp with its default connector (100 connections, requests queue). Each
arm reports how many of the 1,000 failed and the wall time. A client whose default fails
requests under load would need its pool configured to carry 1,000 tasks; the session's wire
(:class:`session_fsm.aio.wire.AsyncWire`) queues instead, and is measured as a fourth arm.
The wire also runs in the latency rounds (secrets written by ``CallAuth``, as the async session
will send), for information. The two httpx storms take minutes at full size (their requests
wait out connect and pool timeouts); the smoke size starts 50 requests per storm.

First measurement (2 CPUs, shared and loaded, load average 6.8; Python 3.11, aiohttp 3.14.5,
httpx 0.28.1): GET + JSON 4,836 us through httpx, 824 us through aiohttp (5.9x), 859 us through
the wire (1.04x aiohttp); 1,000 concurrent GETs: httpx with default limits lost all 1,000
(100 ConnectTimeout, 900 PoolTimeout), httpx with no pool timeout lost 132 (ConnectTimeout) in
140 s, aiohttp 0 in 0.8 s, the wire (32 connections) 0 in 1.9 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import ORDERS, Figure, Result, Target, cli, credentials, median

from session_fsm import KSSession, Wire
from session_fsm.wire import USER_AGENT

CONCURRENT = 1_000


def run(target: Target, smoke: bool = False) -> Result:
    """Measure and return the figures."""
    return asyncio.run(_run(target, smoke))


async def _run(target: Target, smoke: bool) -> Result:
    import aiohttp
    import httpx

    from session_fsm.aio.wire import AsyncWire

    rounds, block = (2, 10) if smoke else (20, 100)
    concurrent = 50 if smoke else CONCURRENT
    t_start = time.perf_counter()
    target.control.reset()
    session = KSSession(credentials(), host=target.url, wire=Wire())
    session.connect()
    snap = session.snapshot()
    assert snap.session_token is not None
    headers = {"User-Agent": USER_AGENT}
    headers.update(Wire.trading_headers(session.identity(), snap.session_token))
    url = snap.host + ORDERS
    connect, read = session.config.timeout
    who, token = session.identity(), snap.session_token

    def httpx_client(pool_timeout: bool = True) -> Any:
        hx_timeout = httpx.Timeout(read, connect=connect, pool=5.0 if pool_timeout else None)
        return httpx.AsyncClient(headers=headers, trust_env=False, timeout=hx_timeout)

    def clients() -> tuple[Any, Any, AsyncWire]:
        """Each client as a bot would make it: defaults, the session's timeouts, keep-alive."""
        return (
            httpx_client(),
            aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(sock_connect=connect, sock_read=read)
            ),
            AsyncWire(),
        )

    hx, aio, wire = clients()

    async def through_httpx() -> float:
        t0 = time.perf_counter()
        r = await hx.get(url)
        r.raise_for_status()
        r.json()
        return time.perf_counter() - t0

    async def through_aiohttp() -> float:
        t0 = time.perf_counter()
        async with aio.get(url, allow_redirects=False) as r:
            r.raise_for_status()
            await r.json()
        return time.perf_counter() - t0

    async def through_wire() -> float:  # as the async session sends: secrets via CallAuth
        t0 = time.perf_counter()
        r = await wire.trading_request("GET", url, who, token)
        if r.status >= 300:
            raise RuntimeError(f"status {r.status}")
        r.json()
        return time.perf_counter() - t0

    arms: list[tuple[Callable[[], Awaitable[float]], list[float]]] = [
        (through_httpx, []),
        (through_aiohttp, []),
        (through_wire, []),
    ]
    for fn, _ in arms:
        await fn()  # warm each pool
    for i in range(rounds):
        for fn, out in arms if i % 2 == 0 else arms[::-1]:
            for _ in range(block):
                out.append(await fn())
    a, b, w = (out for _, out in arms)

    kinds: dict[str, dict[str, int]] = {}

    async def storm(name: str, fn: Callable[[], Awaitable[Any]]) -> tuple[int, float]:
        t0 = time.perf_counter()
        done = await asyncio.gather(*(fn() for _ in range(concurrent)), return_exceptions=True)
        wall = time.perf_counter() - t0
        errors = [type(d).__name__ for d in done if isinstance(d, BaseException)]
        kinds[name] = {k: errors.count(k) for k in sorted(set(errors))}
        return len(errors), wall

    await hx.aclose()  # the storms start from cold pools, like a bot's first burst
    await aio.close()
    await wire.close()
    hx, aio, wire = clients()
    hx_failed, hx_wall = await storm("httpx", through_httpx)
    await hx.aclose()
    hx = httpx_client(pool_timeout=False)
    hq_failed, hq_wall = await storm("httpx_queued", through_httpx)
    aio_failed, aio_wall = await storm("aiohttp", through_aiohttp)
    w_failed, w_wall = await storm("wire", through_wire)
    await hx.aclose()
    await aio.close()
    await wire.close()
    session.close()

    def what(name: str) -> str:  # the errors of a storm, in the target column (information)
        return " ".join(f"{k} x{n}" for k, n in kinds[name].items()) or "-"

    ratio = median(a) / median(b)
    own = median(w) / median(b)
    figures = [
        Figure("GET + JSON, httpx.AsyncClient, median", median(a) * 1e6, "us", "", None),
        Figure("GET + JSON, aiohttp.ClientSession, median", median(b) * 1e6, "us", "", None),
        Figure("httpx / aiohttp median ratio", ratio, "x", "(information)", None),
        Figure("GET + JSON, AsyncWire, median", median(w) * 1e6, "us", "", None),
        Figure("AsyncWire / aiohttp median ratio", own, "x", "(information)", None),
        Figure(
            f"{concurrent} GETs, httpx default limits, failed",
            hx_failed,
            "",
            what("httpx"),
            None,
            full_only=False,
        ),
        Figure(f"{concurrent} GETs, httpx default limits, wall", hx_wall * 1e3, "ms", "", None),
        Figure(
            f"{concurrent} GETs, httpx no pool timeout, failed",
            hq_failed,
            "",
            what("httpx_queued"),
            None,
            full_only=False,
        ),
        Figure(f"{concurrent} GETs, httpx no pool timeout, wall", hq_wall * 1e3, "ms", "", None),
        Figure(
            f"{concurrent} GETs, aiohttp default, failed",
            aio_failed,
            "",
            what("aiohttp"),
            None,
            full_only=False,
        ),
        Figure(f"{concurrent} GETs, aiohttp default, wall", aio_wall * 1e3, "ms", "", None),
        Figure(f"{concurrent} GETs, AsyncWire, failed", w_failed, "", "== 0", w_failed == 0, False),
        Figure(f"{concurrent} GETs, AsyncWire, wall", w_wall * 1e3, "ms", "", None),
    ]
    data = {
        "requests": len(a) + len(b) + len(w),
        "ratio": ratio,
        "wire_ratio": own,
        "failed": {"httpx": hx_failed, "httpx_queued": hq_failed, "aiohttp": aio_failed,
                   "wire": w_failed},
        "errors": kinds,
    }  # fmt: skip
    return Result("async_clients", figures, data, time.perf_counter() - t_start)


if __name__ == "__main__":
    raise SystemExit(cli("async_clients", run))
