#!/usr/bin/env python3
"""An asyncio trading bot: many instruments at once on one AsyncKSSession, logged in throughout.

Each tick asks for several quotes and the day's positions concurrently (``asyncio.gather``); when
the session has expired, those concurrent requests meet the expiry together and the session logs
in once for all of them (single flight across tasks), then replays each. By default it starts an
embedded sandbox and makes it expire the session every few ticks (``--expire-every``). With
``KS_HOST`` and the other ``KS_*`` settings (see the README) it runs against that host until
``--duration``/``--iterations`` or Ctrl+C/SIGTERM, then logs out. ``--heartbeat S`` checks an
idle session every S seconds from a background task; ``--status`` serves the status page
(``/``, ``/healthz``, ``/metrics``) on loopback while it runs.

    python examples/async_bot.py --iterations 20
    python examples/async_bot.py --duration 10 --json --status
    KS_HOST=https://tradeapi.kotaksecurities.com/apim KS_USERID=... python examples/async_bot.py

It ends with one summary line (``bot_summary`` in ``--json``): ticks, calls, re-logins, errors.
Needs the ``async`` extra: ``pip install 'session_fsm[async]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time

import structlog
from bot import NEEDS_HUMAN, Alerting, credentials_from_env, demo_credentials  # examples/bot.py

from session_fsm import (
    AsyncKSSession,
    KSError,
    RateLimited,
    ServiceUnavailable,
    SessionExpired,
    TransportError,
    configure_logging,
)
from session_fsm.sandbox import run_sandbox
from session_fsm.status import serve_status

log = structlog.get_logger("async_bot")
#: What the bot asks quotes for (instrument tokens: TCS, INFY, both), one request each per tick.
WATCHLIST = ("11536", "1594", "11536-1594")


class AsyncBot(Alerting):
    """Watches a few instruments concurrently, places an order now and then, counts."""

    def __init__(self, session: AsyncKSSession) -> None:
        self.session = session
        self.ticks = self.calls = self.errors = self.relogins = 0
        session.on_transition(self.on_transition)  # the alerting hook of examples/bot.py

    async def tick(self) -> None:
        """One round: every quote and the positions at once; an order every third tick."""
        self.ticks += 1
        s = self.session
        answers = await asyncio.gather(
            *(s.get(f"/quotes/v1.0/ltp/instruments/{i}") for i in WATCHLIST),
            s.get("/positions/1.0/positions/todays"),
        )
        self.calls += len(answers)
        if self.ticks % 3 == 0:
            order = {"instrumentToken": 11536, "transactionType": "BUY", "quantity": 1, "price": 0,
                     "validity": "GFD", "variety": "REGULAR", "tag": "async-bot"}  # fmt: skip
            await s.post("/orders/1.0/order/normal", json=order)
            self.calls += 1
        log.info("tick", n=self.ticks, answers=[r.status_code for r in answers],
                 generation=s.generation)  # fmt: skip


async def run(args: argparse.Namespace) -> int:
    """Run the bot until told to stop; return the exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # (not on Windows)
        loop.add_signal_handler(signal.SIGTERM, stop.set)  # finish the tick, then log out
    deadline = time.monotonic() + args.duration if args.duration else None
    with contextlib.ExitStack() as stack:
        sandbox = None
        if os.environ.get("KS_HOST"):
            host, creds = os.environ["KS_HOST"], credentials_from_env()
        else:
            sandbox = stack.enter_context(run_sandbox())
            host, creds = sandbox.url, demo_credentials()
        store = args.store or os.environ.get("KS_STORE") or "memory:"
        # Leaving the session closes its connections (and stops the heartbeat); this bot also
        # ends its session on the way out.
        session = AsyncKSSession(creds, host=host, store=store, logout_on_exit=True,
                                 heartbeat=args.heartbeat)  # fmt: skip
        bot = AsyncBot(session)
        log.info("bot_start", host=host, userid=creds.userid, store=store.split("@")[-1])
        async with contextlib.AsyncExitStack() as astack:
            await astack.enter_async_context(session)
            if args.status:
                server = await astack.enter_async_context(serve_status(session))
                log.info("status_page", url=server.url)
            try:
                await session.connect()
                while not stop.is_set():
                    if args.iterations and bot.ticks >= args.iterations:
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    if sandbox is not None and bot.ticks and bot.ticks % args.expire_every == 0:
                        sandbox.control.expire()  # what the real API does at its daily cut-off
                    try:
                        await bot.tick()
                    except RateLimited as exc:
                        bot.errors += 1
                        await asyncio.sleep(exc.retry_after or 1.0)
                    except (TransportError, ServiceUnavailable, SessionExpired) as exc:
                        bot.errors += 1  # the next tick tries again (re-logging in if need be)
                        log.warning("tick_failed", error=type(exc).__name__, message=str(exc))
                        await asyncio.sleep(min(args.interval * 4, 5.0))
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), args.interval)
            except NEEDS_HUMAN as exc:
                log.error("needs_a_human", error=type(exc).__name__, message=str(exc))
                return 1
            except KSError as exc:
                log.error("bot_failed", error=type(exc).__name__, message=str(exc))
                return 1
            finally:
                log.info("bot_summary", ticks=bot.ticks, calls=bot.calls,
                         relogins=bot.relogins, errors=bot.errors,
                         generation=session.generation)  # fmt: skip
        if sandbox is not None:
            log.info("sandbox_stats", logins=sandbox.control.stats()["logins"])
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=0, help="stop after N ticks (0: no limit)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: none)")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between ticks")
    p.add_argument("--expire-every", type=int, default=5, metavar="N",
                   help="embedded sandbox only: expire the session every N ticks")  # fmt: skip
    p.add_argument("--heartbeat", type=float, default=None, metavar="S",
                   help="check an idle session every S seconds")  # fmt: skip
    p.add_argument("--status", action="store_true", help="serve the status page on loopback")
    p.add_argument("--store", help="token store: memory:, file:PATH or redis://... (KS_STORE)")
    p.add_argument("--json", action="store_true", help="JSON log lines")
    args = p.parse_args(argv)
    configure_logging(json=args.json, stream=sys.stdout)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
