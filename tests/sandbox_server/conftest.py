"""Fixtures of the sandbox's own tests: one sandbox per module, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from session_fsm.sandbox import HttpSandboxControl, Sandbox, run_sandbox
from tests.sandbox_server.client import Client


@pytest.fixture(scope="module")
def shared() -> Iterator[Sandbox]:
    with run_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sb(shared: Sandbox) -> Sandbox:
    shared.control.reset()
    return shared


@pytest.fixture
def client(sb: Sandbox) -> Iterator[Client]:
    c = Client(sb.url)
    yield c
    c.http.close()


@pytest.fixture
def ctl(sb: Sandbox) -> Iterator[HttpSandboxControl]:
    control = HttpSandboxControl(sb.root)
    yield control
    control.close()
