#!/usr/bin/env python3
"""Several processes sharing one KS session through a token store.

The broker allows one session per user: if every process logged in by itself, each login
would log the others out. With a shared store (``file:PATH``, the default here, or
``redis://...``) the processes take turns under the store's lock: the first one logs in and
saves the session, the others adopt it; after an expiry, the first to notice re-logs in and the
others adopt the new session. So N processes cost one login per expiry, not N.

By default the parent starts an embedded sandbox, runs ``--workers`` processes, and expires the
session ``--rounds`` times while they work, then prints how many logins the sandbox saw.

    python examples/multiprocess.py --workers 4 --rounds 2
    python examples/multiprocess.py --store redis://localhost:6379/0
    KS_HOST=... KS_USERID=... python examples/multiprocess.py   # a real host: no expiries
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
from contextlib import ExitStack
from typing import Any

import structlog

from session_fsm import Credentials, KSError, KSSession, configure_logging
from session_fsm.sandbox import DEMO_ACCOUNT, SandboxConfig, run_sandbox

#: How long a process waits for the others at a rendezvous before giving up.
WAIT = 60.0


def credentials(embedded: bool) -> Credentials:
    """The demo account on the embedded sandbox, else the KS_* environment variables."""
    if embedded:
        cfg = SandboxConfig()
        return Credentials(DEMO_ACCOUNT.userid, cfg.consumer_key, cfg.access_token,
                           password=DEMO_ACCOUNT.password, access_code=DEMO_ACCOUNT.access_code,
                           app_id="example-multiprocess")  # fmt: skip
    env = os.environ
    return Credentials(env["KS_USERID"], env["KS_CONSUMER_KEY"], env["KS_ACCESS_TOKEN"],
                       password=env.get("KS_PASSWORD"), access_code=env.get("KS_ACCESS_CODE"),
                       totp_secret=env.get("KS_TOTP_SECRET"), ip=env.get("KS_IP", "127.0.0.1"),
                       app_id=env.get("KS_APP_ID", "example-multiprocess"))  # fmt: skip


def worker(n: int, host: str, store: str, embedded: bool, args: dict[str, Any],
           barrier: Any, results: Any) -> None:  # fmt: skip
    """One process: connect through the shared store, then call through every round."""
    configure_logging(json=args["json"], stream=sys.stdout)
    structlog.contextvars.bind_contextvars(worker=n)  # every line says which process wrote it
    log = structlog.get_logger("worker")
    calls = relogins = 0
    ok = True
    session = KSSession(credentials(embedded), host=host, store=store)
    try:
        session.connect()  # under the store lock: one process logs in, the rest adopt
        for rnd in range(args["rounds"] + 1):
            if rnd:
                barrier.wait(WAIT)  # tell the parent this round's calls are done
                barrier.wait(WAIT)  # ... and wait while it expires the session
            for _ in range(args["calls"]):
                session.get("/reports/1.0/orders")
                calls += 1
        relogins = sum(1 for r in session.history if r.trigger == "session_expired")
        log.info("worker_done", calls=calls, generation=session.generation)
    except (KSError, OSError) as exc:
        ok = False
        log.error("worker_failed", error=type(exc).__name__, message=str(exc))
        barrier.abort()  # do not leave the others waiting
    finally:
        session.close()  # no logout: the other processes still use the session
        results.put({"worker": n, "ok": ok, "calls": calls, "relogins": relogins,
                     "generation": session.generation})  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Start the workers, expire the session between their rounds, report the logins."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=3, help="processes (default 3)")
    p.add_argument("--rounds", type=int, default=2, help="expiries to survive (embedded only)")
    p.add_argument("--calls", type=int, default=3, help="calls per worker per round")
    p.add_argument("--store", help="file:PATH or redis://... (default: a file in a temp dir)")
    p.add_argument("--json", action="store_true", help="JSON log lines")
    args = p.parse_args(argv)
    configure_logging(json=args.json, stream=sys.stdout)
    log = structlog.get_logger("parent")
    embedded = not os.environ.get("KS_HOST")
    rounds = args.rounds if embedded else 0
    ctx = mp.get_context("spawn")  # no fork of a process that runs server threads
    with ExitStack() as stack:
        if embedded:
            sandbox = stack.enter_context(run_sandbox())
            host = sandbox.url
        else:
            host = os.environ["KS_HOST"]
        store = args.store or os.environ.get("KS_STORE")
        if not store:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            store = "file:" + os.path.join(folder, "tokens.json")
        barrier = ctx.Barrier(args.workers + 1)
        results = ctx.Queue()
        opts = {"rounds": rounds, "calls": args.calls, "json": args.json}
        procs = [
            ctx.Process(target=worker, args=(n, host, store, embedded, opts, barrier, results))
            for n in range(1, args.workers + 1)
        ]
        for proc in procs:
            proc.start()
        try:
            for _ in range(rounds):
                barrier.wait(WAIT)
                log.info("expiring_session", expired=sandbox.control.expire())
                barrier.wait(WAIT)
        except Exception as exc:  # a worker failed and broke the rendezvous
            log.error("rendezvous_broken", error=type(exc).__name__)
        done = [results.get(timeout=WAIT) for _ in procs]
        for proc in procs:
            proc.join(WAIT)
        logins = sandbox.control.stats()["logins"] if embedded else None
    summary = {
        "workers": args.workers,
        "ok": all(r["ok"] for r in done),
        "calls": sum(r["calls"] for r in done),
        "expiries": rounds,
        "relogins_seen": sum(r["relogins"] for r in done),
        "sandbox_logins": logins,
        "store": store.split("@")[-1],
    }
    log.info("multiprocess_summary", **summary)
    print("SUMMARY " + json.dumps(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
