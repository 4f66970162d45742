"""A real ``redis-server`` for the tests: its own loopback port and temp folder, stopped after.

Without the binary the Redis tests are skipped locally with the reason, but fail in CI
(env ``CI=true``), where ``.ci/run`` installs Debian's ``redis-server``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

STARTUP_TIMEOUT = 10.0


def binary() -> str:
    """Path of ``redis-server``; skips the test (fails it in CI) when it is not installed."""
    found = shutil.which("redis-server")
    if found is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must install it in .ci/run", pytrace=False)
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One running ``redis-server`` (no persistence) bound to 127.0.0.1 on a free port."""

    def __init__(self, exe: str, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = folder / "redis.log"
        # No RDB/AOF files, no protected-mode surprises; logs go to a file read on failure.
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder),
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", str(self.log)]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )

    def wait_ready(self) -> None:
        """Block until the server answers PING; RuntimeError (with its log) if it never does."""
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.02)
        finally:
            client.close()
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log[-2000:]}")

    def client(self) -> redis.Redis:
        """A client of this server (close it when done)."""
        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@contextmanager
def running() -> Iterator[RedisServer]:
    """A fresh ``redis-server`` for the duration of the block (skips/fails without the binary)."""
    exe = binary()
    with tempfile.TemporaryDirectory(prefix="session-fsm-redis-") as tmp:
        for attempt in range(3):  # the free port may be taken between probe and bind
            server = RedisServer(exe, Path(tmp))
            try:
                server.wait_ready()
                break
            except RuntimeError:
                server.stop()
                if attempt == 2:
                    raise
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A fresh ``redis-server`` for the module (import this fixture into a test module)."""
    with running() as server:
        yield server.url


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the module's server, its database emptied for the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(params=["redis", "file"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh shared store of each kind: an emptied database of the module's redis-server, or
    a new file (import this fixture and ``redis_url`` into a test module)."""
    if request.param == "file":
        return f"file:{tmp_path / 'tokens.json'}"
    url: str = request.getfixturevalue("redis_url")
    empty(url)
    return url


def empty(url: str) -> None:
    """Empty the database at ``url``."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
