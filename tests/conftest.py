"""Shared fixtures: a real sandbox over loopback HTTP, credentials, sessions, captured logs."""

from __future__ import annotations

import gc
import io
import json
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import structlog
from hypothesis import HealthCheck, settings

from session_fsm import Credentials, KSSession, RetryPolicy
from session_fsm.sandbox import Sandbox, run_sandbox

if TYPE_CHECKING:
    from pathlib import Path

    from session_fsm import AsyncKSSession
    from tests.mp_worker import Fleet

T = TypeVar("T")

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def tables_wanted(config: pytest.Config) -> bool:
    """Whether to print the report tables (model coverage, fault matrix) on a green run: only
    on request, ``-v`` or ``SESSION_FSM_TABLES=1``; a failing run prints them anyway."""
    verbose = int(config.getoption("verbose") or 0)
    return os.environ.get("SESSION_FSM_TABLES", "") not in ("", "0") or verbose > 0


#: Retries without real sleeping (recorded instead), for tests.
SLEEPS: list[float] = []
FAST_RETRY = RetryPolicy(total=3, backoff_factor=0.0, backoff_jitter=0.0, sleeper=SLEEPS.append)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One sandbox per test module, reset before each test."""
    with run_sandbox() as sb:
        yield sb


@pytest.fixture
def sb(sandbox: Sandbox) -> Sandbox:
    """The module's sandbox, freshly reset."""
    sandbox.control.reset()
    SLEEPS.clear()
    return sandbox


def make_credentials(**over: Any) -> Credentials:
    """The sandbox's demo account."""
    base: dict[str, Any] = dict(
        userid="demo-user",
        consumer_key="demo-consumer-key",
        access_token="demo-access-token",
        password="demo-password",
        access_code="1234",
        app_id="tests",
    )
    base.update(over)
    return Credentials(**base)


class Gate:
    """A password that makes a login wait while the gate is armed: a re-login in progress,
    holding the session's lock, seen through the public API only.

    ``creds = make_credentials(password=FromCallable(gate))``; ``gate.arm()``; a thread that
    logs in then blocks in the provider (``gate.entered`` is set) until ``gate.open()``."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.released = threading.Event()

    def arm(self) -> None:
        self.armed, self.entered, self.released = True, threading.Event(), threading.Event()

    def open(self) -> None:
        self.armed = False
        self.released.set()

    def __call__(self) -> str:
        if self.armed:
            self.entered.set()
            self.released.wait(10)
        return "demo-password"


class Clock:
    """An injected clock (epoch seconds) that only moves when told."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def new_session(sb: Sandbox, clock: Clock) -> Iterator[Callable[..., KSSession]]:
    """Factory of sessions on the sandbox (fast retries, injected clock); closed after."""
    made: list[KSSession] = []
    yield maker(KSSession, made, sb, clock, (2.0, 2.0))
    for s in made:
        s.close()


def maker(cls: type[T], made: list[T], sb: Sandbox, clock: Clock, timeout: Any) -> Callable[..., T]:
    """A factory of ``cls`` sessions on ``sb`` (fast retries, ``clock``), each kept in ``made``."""

    def make(creds: Credentials | None = None, **options: Any) -> T:
        options.setdefault("retry", FAST_RETRY)
        options.setdefault("timeout", timeout)
        options.setdefault("clock", clock)
        s = cls(creds or make_credentials(), host=sb.url, **options)
        made.append(s)
        return s

    return make


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """The async tests run on asyncio in debug mode (a slow callback is reported)."""
    return "asyncio", {"debug": True}


@pytest.fixture
async def new_async(sb: Sandbox, clock: Clock) -> AsyncIterator[Callable[..., AsyncKSSession]]:
    """Factory of async sessions on the sandbox (as ``new_session``); closed after."""
    from session_fsm import AsyncKSSession  # (imported here: aiohttp only for async tests)

    made: list[AsyncKSSession] = []
    yield maker(AsyncKSSession, made, sb, clock, (2.0, 5.0))
    for s in made:
        await s.close()


@pytest.fixture
def children(sb: Sandbox, tmp_path: Path) -> Iterator[Fleet]:
    """Worker processes (tests/mp_worker.py) on the sandbox, stopped after the test."""
    from tests.mp_worker import fleet

    with fleet(sb.url, tmp_path) as f:
        yield f


def probe(n: int) -> int:
    return 0 if n == 0 else probe(n - 1) + 1


@contextmanager
def collections_probed(starved: list[str]) -> Iterator[list[str]]:
    """Collect at (nearly) every allocation, and at each collection try 50 nested calls:
    ``starved`` gets an entry each time there was no stack for them (code running near the
    recursion limit)."""

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            try:
                probe(50)
            except RecursionError:
                starved.append("no stack")

    threshold = gc.get_threshold()
    gc.callbacks.append(watch)
    gc.set_threshold(1)
    try:
        yield starved
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(watch)


@pytest.fixture
def stack_at_collections() -> Iterator[list[str]]:
    """:func:`collections_probed` for the whole test."""
    with collections_probed([]) as starved:
        yield starved


class LogCapture:
    """Captures the library's events rendered by structlog's JSON and console renderers."""

    def __init__(self) -> None:
        self.json = io.StringIO()
        self.console = io.StringIO()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.json.getvalue().splitlines() if line]

    def text(self) -> str:
        return self.json.getvalue() + self.console.getvalue()


def capture_logs() -> LogCapture:
    """Route structlog through the JSON and console renderers into memory (no redaction of
    its own: the library's events must already be clean). Undo with structlog.reset_defaults()."""
    structlog.reset_defaults()  # nothing of an earlier test's config (a level filter) stays
    cap = LogCapture()

    def tee(_: Any, __: str, event_dict: Any) -> str:
        cap.console.write(structlog.dev.ConsoleRenderer(colors=False)(_, __, dict(event_dict)))
        cap.console.write("\n")
        return json.dumps(event_dict, default=repr)

    structlog.configure(
        processors=[structlog.processors.add_log_level, tee],
        logger_factory=structlog.PrintLoggerFactory(cap.json),
        cache_logger_on_first_use=False,
    )
    return cap


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """Capture the library's events for the test's duration."""
    yield capture_logs()
    structlog.reset_defaults()
