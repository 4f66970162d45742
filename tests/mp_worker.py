"""Child-process side of the multi-process tests, and the parent's handle on those children.

Children are started with the ``spawn`` context, so everything they run is a module-level
function here (importable by name). A child runs a short script of steps against the sandbox
(reached over loopback; it controls nothing) and reports each step on its own queue, so a child
killed mid-step cannot wedge a queue the others write to.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

#: A trading call every sandbox session may make.
ORDERS = "/reports/1.0/orders"
#: The sandbox's statistics keys of the session calls.
SESSION_CALLS = (
    "GET /session/1.0/session/init",
    "POST /session/1.0/session/login/userid",
    "POST /session/1.0/session/2FA/accesscode",
)
TWO_FA_PATH = "/session/1.0/session/2FA/accesscode"
CTX = multiprocessing.get_context("spawn")

Step = tuple[Any, ...]


# --- in the child -----------------------------------------------------------------------------


def _log_to(path: str) -> None:
    import structlog

    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(open(path, "a", encoding="utf-8")),  # noqa: SIM115
        cache_logger_on_first_use=False,
    )


def run_script(
    worker: int,
    base_url: str,
    store: str,
    script: list[Step],
    sync: dict[str, Any],
    results: Any,
    log_path: str,
    options: dict[str, Any],
) -> None:
    """Open a session on ``store`` and run ``script``; one report per step on ``results``.

    Steps: ``("barrier",)``, ``("wait", name)`` / ``("set", name)`` on the events in ``sync``,
    ``("resume",)``, ``("connect",)``, ``("get", path)``, ``("gets", path, n)`` (n at once:
    threads, or tasks). ``options["driver"]``: ``"sync"`` (KSSession, the default) or
    ``"async"`` (AsyncKSSession on an event loop, see :mod:`tests.drivers`). A failing step
    is reported with the error's type and message (which never hold a secret) and ends the
    child with status 1.
    """
    _log_to(log_path)
    from session_fsm import Credentials
    from tests.drivers import Driver, concurrently

    creds = Credentials(
        userid="demo-user", consumer_key="demo-consumer-key", access_token="demo-access-token",
        password="demo-password", access_code="1234", app_id=f"mp-worker-{worker}",
    )  # fmt: skip
    options = {"timeout": (2.0, 10.0), "relogin_timeout": 10.0, **options}
    driver = Driver(options.pop("driver", "sync"))
    session = driver.session(creds, host=base_url, store=store, **options)
    seen = 0
    status = 0
    for step in script:
        name, *args = step
        t0 = time.monotonic()
        error = None
        try:
            if name == "barrier":
                sync["barrier"].wait(timeout=30)
            elif name == "wait":
                if not sync[args[0]].wait(timeout=30):
                    raise TimeoutError(f"event {args[0]} never set")
            elif name == "set":
                sync[args[0]].set()
            elif name == "resume":
                session.resume()
            elif name == "connect":
                session.connect()
            elif name == "get":
                session.get(args[0])
            elif name == "gets":
                concurrently(session, "get", args[0], args[1])
            else:
                raise ValueError(f"unknown step {name!r}")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            status = 1
        history = session.history
        results.put(
            {
                "worker": worker,
                "pid": os.getpid(),
                "kind": type(getattr(session, "session", session)).__name__,
                "step": name,
                "ok": error is None,
                "error": error,
                "t0": t0,
                "t1": time.monotonic(),
                "state": session.state.value,
                "generation": session.generation,
                "records": [(r.trigger, r.outcome, r.reason) for r in history[seen:]],
            }
        )
        seen = len(history)
        if error is not None:
            break
    session.close()
    sys.exit(status)


def hammer_reads(path: str, stop: Any, ready: Any, results: Any) -> None:
    """Read ``path`` raw as fast as possible until ``stop``; report what was seen.

    Counts reads that parsed as a complete token file, reads that did not (a half-written file
    would be one), missing-file reads, and the distinct versions (``generation`` of key ``v``).
    """
    good = bad = missing = 0
    versions: set[int] = set()
    ready.set()
    while not stop.is_set():
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            missing += 1
            continue
        try:
            data = json.loads(raw)
            versions.add(int(data["sessions"]["v"]["generation"]))
            assert data["format"] == "session_fsm/1"
        except Exception:
            bad += 1
        else:
            good += 1
    results.put({"good": good, "bad": bad, "missing": missing, "versions": len(versions)})


# --- in the parent ----------------------------------------------------------------------------


class Fleet:
    """The children of one test: start, collect reports, kill; never leaves one running."""

    def __init__(self, base_url: str, log_dir: Path) -> None:
        self.base_url = base_url
        self.log_dir = log_dir
        self.procs: list[Any] = []
        self.queues: list[Any] = []

    def start(
        self, store: str, script: list[Step], sync: dict[str, Any] | None = None, **options: Any
    ) -> int:
        """Start a child running ``script`` on ``store``; returns its index."""
        i = len(self.procs)
        q = CTX.Queue()
        log = str(self.log_dir / f"worker-{i}.log")
        p = CTX.Process(
            target=run_script,
            args=(i, self.base_url, store, script, sync or {}, q, log, options),
            daemon=True,
            name=f"mp-worker-{i}",
        )
        p.start()
        self.procs.append(p)
        self.queues.append(q)
        return i

    def report(self, i: int, timeout: float = 30.0) -> dict[str, Any]:
        """The next step report of child ``i``; fails with its log if none comes in time."""
        try:
            rep: dict[str, Any] = self.queues[i].get(timeout=timeout)
        except queue.Empty:
            msg = f"worker {i} sent no report in {timeout}s\n{self.log(i)}"
            raise AssertionError(msg) from None
        assert rep["ok"], f"worker {i} step {rep['step']} failed: {rep['error']}\n{self.log(i)}"
        return rep

    def reports(self, i: int, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The next ``n`` step reports of child ``i``."""
        return [self.report(i, timeout) for _ in range(n)]

    def join(self, i: int, timeout: float = 15.0) -> int:
        """Wait for child ``i`` to exit; its exit code (killed and failed if it hangs)."""
        p = self.procs[i]
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join(5)
            raise AssertionError(f"worker {i} did not exit within {timeout}s\n{self.log(i)}")
        code: int = p.exitcode
        return code

    def kill(self, i: int) -> None:
        """SIGKILL child ``i`` and reap it."""
        self.procs[i].kill()
        self.procs[i].join(5)

    def log(self, i: int) -> str:
        """The tail of child ``i``'s event log (for failure messages)."""
        path = self.log_dir / f"worker-{i}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def all_logs(self) -> str:
        """Every child's whole event log."""
        return "".join(p.read_text(errors="replace") for p in self.log_dir.glob("worker-*.log"))

    def close(self) -> None:
        """Kill whatever still runs and release the queues."""
        for p in self.procs:
            if p.is_alive():
                p.kill()
            p.join(5)
        for q in self.queues:
            with suppress(Exception):
                q.close()
                q.join_thread()


@contextmanager
def fleet(base_url: str, log_dir: Path) -> Iterator[Fleet]:
    """A :class:`Fleet` closed (children killed) on exit, whatever happened."""
    f = Fleet(base_url, log_dir)
    try:
        yield f
    finally:
        f.close()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 10 ms until true; AssertionError naming ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
