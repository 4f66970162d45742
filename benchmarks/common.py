"""Shared helpers of the benchmarks: a sandbox to run against, credentials, figures, RSS.

Every benchmark module has ``run(target, smoke=False) -> Result`` (``target`` is a running
sandbox, or None for benchmarks that need none) and a ``main()`` that starts the sandbox in a
separate process and prints the figures. The sandbox runs in its own process by default so the
server's CPU time (werkzeug, JSON, its threads) does not compete with the client for the GIL:
the client's cost is what is being measured, and on a 2-core machine an in-process server would
both slow the client down and dilute every ratio towards 1. Tests pass an in-process sandbox
instead (``in_process()``), which is faster to start and gives the same structural results.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from session_fsm import Credentials, configure_logging, contract
from session_fsm.environment import EnvironmentSettings
from session_fsm.sandbox import ControlPlane, HttpSandboxControl, run_sandbox

#: Users of their own for benchmarks whose clients each log in as a different user.
BENCH_USERS = tuple(f"bench-{i}" for i in range(1, 6))

#: Run in the child process: serve a sandbox on a free port and print its base URL.
_SERVE = (
    "from session_fsm.sandbox import serve, SandboxConfig\n"
    "from session_fsm.sandbox.config import Account, DEMO_ACCOUNT\n"
    f"users = {BENCH_USERS!r}\n"
    "accounts = (DEMO_ACCOUNT, *(Account(u, 'demo-password', '1234') for u in users))\n"
    "serve(SandboxConfig(accounts=accounts), port=0, ready=lambda url: print(url, flush=True))\n"
)

_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 -- lives as long as the process

ORDERS = contract.ORDERS_REPORT[1]
POSITIONS = contract.POSITIONS_TODAY[1]
ORDER = contract.ORDER_NORMAL[1]
QUOTES = contract.QUOTES_LTP_PREFIX + "11536-2885"
ORDER_BODY = {"instrumentToken": 11536, "transactionType": "BUY", "quantity": 1, "price": 0}


@dataclass(frozen=True)
class Target:
    """A running sandbox: its base URL (with ``/apim``) and its control plane."""

    url: str
    control: ControlPlane
    where: str


@contextlib.contextmanager
def sandbox_process() -> Iterator[Target]:
    """Start ``serve()`` in a child process on a free port; stop it (SIGTERM) on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE], stdout=subprocess.PIPE, text=True, env=_child_env()
    )
    control: HttpSandboxControl | None = None
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the sandbox process did not start (exit {proc.poll()})")
        control = HttpSandboxControl(url)
        yield Target(url, control, f"separate process (pid {proc.pid})")
    finally:
        if control is not None:
            control.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import the same session_fsm as this process.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


@contextlib.contextmanager
def in_process() -> Iterator[Target]:
    """A sandbox served by a thread of this process (for tests and smoke runs)."""
    with run_sandbox() as sb:
        yield Target(sb.url, sb.control, "in-process thread")


def credentials(userid: str = "demo-user") -> Credentials:
    """The sandbox's demo account."""
    return Credentials(
        userid=userid,
        consumer_key="demo-consumer-key",
        access_token="demo-access-token",
        password="demo-password",
        access_code="1234",
        app_id="benchmarks",
    )


def quiet_logging(level: int = logging.INFO) -> None:
    """Log as an application would (``configure_logging``, JSON lines), into /dev/null.

    The events' cost (redaction, rendering, writing) stays in the figures; the noise goes.
    """
    configure_logging(json=True, level=level, stream=_DEVNULL)
    # 64 threads on a pool of 32 make urllib3 warn about each connection it discards.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def median(values: Sequence[float]) -> float:
    """The median (0.0 for no values)."""
    return statistics.median(values) if values else 0.0


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` took."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass(frozen=True)
class Figure:
    """One printed figure. ``ok`` is None when there is no target (information only).

    ``full_only`` figures (times, ratios, RSS growth) are only judged at full size: a smoke run
    is too small for them to mean anything. Structural figures (lost == 0, logins == expiries)
    are judged at every size.
    """

    name: str
    value: float
    unit: str
    target: str
    ok: bool | None
    full_only: bool = True

    def judged(self, smoke: bool) -> bool | None:
        """The verdict that counts for this run."""
        return None if smoke and self.full_only else self.ok

    def verdict(self, smoke: bool) -> str:
        """PASS, FAIL, ``(smoke)`` (a target not judged at smoke size) or ``-`` (no target)."""
        judged = self.judged(smoke)
        if judged is None:
            return "-" if self.ok is None else "(smoke)"
        return "PASS" if judged else "FAIL"

    @staticmethod
    def format_value(v: float) -> str:
        """Whole numbers with separators; small fractions with three decimals."""
        return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.3f}".rstrip("0")

    def line(self, smoke: bool) -> str:
        """``name  value unit  target  verdict``."""
        value = self.format_value(self.value)
        return (
            f"  {self.name:<46} {value:>12} {self.unit:<9} {self.target:<22} {self.verdict(smoke)}"
        )


@dataclass
class Result:
    """What one benchmark measured: its figures, plus raw data for tests."""

    name: str
    figures: list[Figure]
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def failed(self, smoke: bool) -> list[Figure]:
        """Figures whose verdict for this run is FAIL."""
        return [f for f in self.figures if f.judged(smoke) is False]

    def report(self, smoke: bool) -> str:
        """The printable block of this result."""
        head = f"{self.name}  ({self.seconds:.1f} s{', smoke size' if smoke else ''})"
        return "\n".join([head, *(f.line(smoke) for f in self.figures)])


def cli(name: str, run: Callable[..., Result], needs_sandbox: bool = True) -> int:
    """The ``main()`` of one benchmark script: ``--smoke`` for a tiny size."""
    parser = argparse.ArgumentParser(description=f"benchmark: {name}")
    parser.add_argument("--smoke", action="store_true", help="tiny size, to check it works")
    args = parser.parse_args()
    quiet_logging()
    with sandbox_process() if needs_sandbox else contextlib.nullcontext() as target:
        result = run(target, smoke=args.smoke)
    print(result.report(args.smoke))
    return 1 if result.failed(args.smoke) else 0


def env_once_client(
    url: str, verify: bool | str, headers: Mapping[str, Any]
) -> tuple[requests.Session, dict[str, Any]]:
    """A raw ``requests.Session`` that reads the environment once, as the ``Wire`` does:
    ``trust_env`` off, and the per-call keyword arguments that give it the proxies and CA bundle
    the ``Wire`` would send to ``url``."""
    http = requests.Session()
    http.trust_env = False
    http.headers.update(headers)
    env = EnvironmentSettings()
    return http, {"proxies": env.proxies(url), "verify": env.verify(verify)}
