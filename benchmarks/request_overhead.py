"""Issue 4 (1): what the session adds to an authenticated GET.

The same GET (``/reports/1.0/orders``) is sent through ``session.get`` (A) and through a raw
``requests.Session`` carrying identical headers (B), in alternating blocks in one run
(A B B A A B ...), each request timed on its own. The figure is median(A) / median(B); the
target is at most 1.05. Both use keep-alive connections to the same sandbox.

The Wire reads proxies and the CA bundle from the environment once, where requests' default
reads them on every call; a third arm C, interleaved too, is B with ``trust_env`` off and the
same proxies/verify passed explicitly, so the session's own cost shows without that saving.
"""

from __future__ import annotations

import time

import requests
from common import ORDERS, Figure, Result, Target, cli, credentials, env_once_client, median

from session_fsm import KSSession, Wire
from session_fsm.wire import USER_AGENT

TARGET_RATIO = 1.05


def run(target: Target, smoke: bool = False) -> Result:
    """Measure and return the figures."""
    rounds, block = (2, 10) if smoke else (40, 100)
    t_start = time.perf_counter()
    target.control.reset()
    session = KSSession(credentials(), host=target.url, wire=Wire())
    session.connect()
    snap = session.snapshot()
    assert snap.session_token is not None
    raw = requests.Session()
    # Identical headers: what the session sends (Bearer, consumerKey, sessionToken, ...).
    raw.headers["User-Agent"] = USER_AGENT
    raw.headers.update(Wire.trading_headers(session.identity(), snap.session_token))
    url = snap.host + ORDERS
    timeout = session.config.timeout
    # C: the environment read once, as the Wire does
    lean, env_once = env_once_client(url, session.config.verify, raw.headers)

    def through_session() -> float:
        t0 = time.perf_counter()
        session.get(ORDERS)
        return time.perf_counter() - t0

    def through_raw() -> float:
        t0 = time.perf_counter()
        r = raw.get(url, timeout=timeout, allow_redirects=False)
        r.raise_for_status()
        return time.perf_counter() - t0

    def through_lean() -> float:
        t0 = time.perf_counter()
        r = lean.get(url, timeout=timeout, allow_redirects=False, **env_once)
        r.raise_for_status()
        return time.perf_counter() - t0

    through_session(), through_raw(), through_lean()  # warm the connection pools
    a: list[float] = []
    b: list[float] = []
    c: list[float] = []
    for i in range(rounds):
        order = ((through_session, a), (through_raw, b), (through_lean, c))
        for fn, out in order if i % 2 == 0 else order[::-1]:
            out.extend(fn() for _ in range(block))
    session.close()
    raw.close()
    lean.close()
    ratio = median(a) / median(b)
    own = median(a) / median(c)
    figures = [
        Figure("GET through session, median", median(a) * 1e6, "us", "", None),
        Figure("GET with raw requests, median", median(b) * 1e6, "us", "", None),
        Figure(
            "session / raw median ratio", ratio, "x", f"<= {TARGET_RATIO}", ratio <= TARGET_RATIO
        ),
        Figure("GET, raw, environment read once, median", median(c) * 1e6, "us", "", None),
        Figure("session / raw with environment read once", own, "x", "(information)", None),
    ]
    data = {"requests": len(a) + len(b) + len(c), "ratio": ratio, "ratio_env_once": own}
    return Result("request_overhead", figures, data, time.perf_counter() - t_start)


if __name__ == "__main__":
    raise SystemExit(cli("request_overhead", run))
