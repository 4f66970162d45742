#!/usr/bin/env python3
"""A long-running trading bot that stays logged in through session expiries.

By default it starts an embedded sandbox and makes it expire the session every few ticks
(``--expire-every``), so you can watch the bot re-log in by itself without missing a call.
Point it at a real (or ``session-fsm sandbox``) host with ``KS_HOST`` and the other ``KS_*``
settings (see the README) and it runs until ``--duration``/``--iterations`` or Ctrl+C/SIGTERM,
then logs out.

    python examples/bot.py --iterations 20
    python examples/bot.py --duration 10 --json
    KS_HOST=https://tradeapi.kotaksecurities.com/apim KS_USERID=... python examples/bot.py

It ends with one summary line (``bot_summary`` in ``--json``): ticks, calls, re-logins, errors.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from typing import Any

import structlog

from session_fsm import (
    Credentials,
    GatewayAuthError,
    KSError,
    KSSession,
    LoginRejected,
    NotAuthorized,
    RateLimited,
    ReloginNeedsHuman,
    ServiceUnavailable,
    SessionExpired,
    TransitionRecord,
    TransportError,
    configure_logging,
)
from session_fsm.sandbox import DEMO_ACCOUNT, SandboxConfig, run_sandbox

log = structlog.get_logger("bot")
#: Errors only a person can fix: the bot alerts and stops instead of hammering the login.
NEEDS_HUMAN = (ReloginNeedsHuman, GatewayAuthError, LoginRejected, NotAuthorized)


class Alerting:
    """The alerting hook of a bot (also examples/async_bot.py's): counts re-logins, shouts
    about anything that failed."""

    relogins = 0

    def on_transition(self, session: Any, record: TransitionRecord) -> None:
        """Called after every attempted transition, where it was made (thread or task)."""
        if record.trigger == "session_expired":
            self.relogins += 1
        if record.outcome != "ok":
            log.warning("ALERT", trigger=record.trigger, outcome=record.outcome,
                        error=record.error, status=record.status)  # fmt: skip


class Bot(Alerting):
    """Watches a few instruments, places an order now and then, counts what happened."""

    def __init__(self, session: KSSession) -> None:
        self.session = session
        self.ticks = self.calls = self.errors = self.relogins = 0
        session.on_transition(self.on_transition)

    def tick(self) -> None:
        """One round of the strategy: quotes and positions; an order every third tick."""
        self.ticks += 1
        quotes = self.session.get("/quotes/v1.0/ltp/instruments/11536-1594").json()
        positions = self.session.get("/positions/1.0/positions/todays").json()
        self.calls += 2
        if self.ticks % 3 == 0:
            order = {"instrumentToken": 11536, "transactionType": "BUY", "quantity": 1,
                     "price": 0, "validity": "GFD", "variety": "REGULAR", "tag": "bot"}  # fmt: skip
            self.session.post("/orders/1.0/order/normal", json=order)
            self.calls += 1
        log.info(
            "tick",
            n=self.ticks,
            quotes=len(quotes["Success"]),
            positions=len(positions["Success"]),
            generation=self.session.generation,
        )


def credentials_from_env() -> Credentials:
    """The KS_* settings (the same names as the ``session-fsm`` command line)."""
    env = os.environ
    return Credentials(
        userid=env["KS_USERID"],
        consumer_key=env["KS_CONSUMER_KEY"],
        access_token=env["KS_ACCESS_TOKEN"],
        password=env.get("KS_PASSWORD"),
        access_code=env.get("KS_ACCESS_CODE"),
        totp_secret=env.get("KS_TOTP_SECRET"),
        ip=env.get("KS_IP", "127.0.0.1"),
        app_id=env.get("KS_APP_ID", "example-bot"),
    )


def demo_credentials() -> Credentials:
    """The embedded sandbox's demo account."""
    cfg = SandboxConfig()
    return Credentials(
        userid=DEMO_ACCOUNT.userid,
        consumer_key=cfg.consumer_key,
        access_token=cfg.access_token,
        password=DEMO_ACCOUNT.password,
        access_code=DEMO_ACCOUNT.access_code,
        app_id="example-bot",
    )


def run(args: argparse.Namespace) -> int:
    """Run the bot until told to stop; return the exit code."""
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True  # finish the tick, then log out cleanly

    signal.signal(signal.SIGTERM, on_signal)
    deadline = time.monotonic() + args.duration if args.duration else None
    with contextlib.ExitStack() as stack:
        sandbox = None
        if os.environ.get("KS_HOST"):
            host, creds = os.environ["KS_HOST"], credentials_from_env()
        else:
            sandbox = stack.enter_context(run_sandbox())
            host, creds = sandbox.url, demo_credentials()
        store = args.store or os.environ.get("KS_STORE") or "memory:"
        # Leaving a KSSession only closes connections; this bot ends its session on the way out.
        session = stack.enter_context(
            KSSession(creds, host=host, store=store, logout_on_exit=True)
        )
        bot = Bot(session)
        log.info("bot_start", host=host, userid=creds.userid, store=store.split("@")[-1])
        try:
            session.connect()
            while not stop:
                if args.iterations and bot.ticks >= args.iterations:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if sandbox is not None and bot.ticks and bot.ticks % args.expire_every == 0:
                    sandbox.control.expire()  # what the real API does at its daily cut-off
                try:
                    bot.tick()
                except RateLimited as exc:
                    bot.errors += 1
                    time.sleep(exc.retry_after or 1.0)
                except (TransportError, ServiceUnavailable, SessionExpired) as exc:
                    # Network trouble, a 5xx after urllib3's retries, or a re-login that timed
                    # out: the next tick tries again (and re-logs in if it has to).
                    bot.errors += 1
                    log.warning("tick_failed", error=type(exc).__name__, message=str(exc))
                    time.sleep(min(args.interval * 4, 5.0))
                time.sleep(args.interval)
        except NEEDS_HUMAN as exc:
            log.error("needs_a_human", error=type(exc).__name__, message=str(exc))
            return 1
        except KeyboardInterrupt:
            log.info("interrupted")
        except KSError as exc:
            log.error("bot_failed", error=type(exc).__name__, message=str(exc))
            return 1
        finally:
            log.info("bot_summary", ticks=bot.ticks, calls=bot.calls, relogins=bot.relogins,
                     errors=bot.errors, generation=session.generation)  # fmt: skip
    return 0  # leaving the ExitStack logged out and stopped the sandbox


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=0, help="stop after N ticks (0: no limit)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: none)")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between ticks")
    p.add_argument("--expire-every", type=int, default=5, metavar="N",
                   help="embedded sandbox only: expire the session every N ticks")  # fmt: skip
    p.add_argument("--store", help="token store: memory:, file:PATH or redis://... (KS_STORE)")
    p.add_argument("--json", action="store_true", help="JSON log lines")
    args = p.parse_args(argv)
    configure_logging(json=args.json, stream=sys.stdout)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
