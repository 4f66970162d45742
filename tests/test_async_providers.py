"""A password or access-code provider of the application's own (a function, a provider class of
its own) may wait for a person: an async session never waits on it on its event loop. A plain
one runs in a worker thread; an ``async def`` one is awaited; KSSession refuses an async one
when it is made, not at a re-login hours later. Real sandbox over loopback HTTP.

The first five tests failed before the ``Ask`` effect (the core called every provider itself, on
the event loop's thread, and an ``async def`` provider's coroutine was refused as "not a
string" at the login).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from session_fsm import (
    AsyncKSSession,
    ConfigurationError,
    FromCallable,
    KSSession,
    State,
    contract,
)
from session_fsm.sandbox import Sandbox
from session_fsm.secret import Secret
from tests.conftest import make_credentials

pytestmark = pytest.mark.anyio
Factory = Callable[..., AsyncKSSession]
PASSWORD, ACCESS_CODE = "demo-password", "1234"


class Person:
    """A password a person gives in a chat: the provider blocks until the test answers for
    them (at most ``patience`` s), and notes on which thread it was asked."""

    def __init__(self, patience: float = 5.0) -> None:
        self.asked = threading.Event()
        self.answered = threading.Event()
        self.patience = patience
        self.threads: list[int] = []
        self.waited_out = False

    def __call__(self) -> str:
        self.threads.append(threading.get_ident())
        self.asked.set()
        if not self.answered.wait(self.patience):
            self.waited_out = True  # nobody could answer: the loop was blocked by this call
        return PASSWORD


async def wait_for(event: threading.Event, what: str, timeout: float = 5.0) -> None:
    """Wait on the event loop (a task of its own) until ``event`` is set."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not event.is_set():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_a_blocking_password_function_runs_off_the_event_loop(new_async: Factory) -> None:
    person = Person(patience=3.0)
    s = new_async(make_credentials(password=FromCallable(person)))
    connecting = asyncio.create_task(s.connect())
    ticks = 0
    await wait_for(person.asked, "the provider to be asked")
    for _ in range(5):  # the loop keeps running other tasks while the person is asked
        await asyncio.sleep(0)
        ticks += 1
    person.answered.set()
    await connecting
    assert s.state is State.AUTHENTICATED
    assert ticks == 5 and not person.waited_out
    assert person.threads and threading.get_ident() not in person.threads


async def test_a_provider_class_of_the_application_runs_off_the_event_loop(
    new_async: Factory,
) -> None:
    person = Person(patience=3.0)

    class Vault:  # the application's own SecretProvider
        repeatable = True

        def available(self) -> bool:
            return True

        def get(self) -> Secret:
            return Secret(person())

    s = new_async(make_credentials(password=Vault()))
    connecting = asyncio.create_task(s.connect())
    await wait_for(person.asked, "the vault to be asked")
    person.answered.set()
    await connecting
    assert s.state is State.AUTHENTICATED and not person.waited_out
    assert threading.get_ident() not in person.threads


async def test_async_password_and_access_code_functions_are_awaited(
    new_async: Factory,
) -> None:
    seen: list[tuple[str, int]] = []

    async def password() -> str:
        await asyncio.sleep(0)  # (a real one awaits a chat's answer)
        seen.append(("password", threading.get_ident()))
        return PASSWORD

    class Code:  # an object whose __call__ is async
        async def __call__(self) -> str:
            seen.append(("access_code", threading.get_ident()))
            return ACCESS_CODE

    s = new_async(make_credentials(password=password, access_code=Code()))
    await s.connect()
    assert s.state is State.AUTHENTICATED
    me = threading.get_ident()
    assert seen == [("password", me), ("access_code", me)]  # awaited on the session's loop


async def test_an_async_provider_that_raises_is_a_typed_error_holding_nothing_of_it(
    new_async: Factory,
) -> None:
    async def password() -> str:
        raise LookupError(f"vault said no to {PASSWORD}")

    s = new_async(make_credentials(password=password))
    with pytest.raises(ConfigurationError) as info:
        await s.connect()
    err = info.value
    assert "password" in str(err) and "LookupError" in str(err)
    assert PASSWORD not in str(err) and PASSWORD not in repr(err.args)
    assert err.__cause__ is None and err.__context__ is None
    assert s.state is State.INITIALISED  # the login was not sent


async def test_an_async_provider_giving_no_string_is_refused_before_sending(
    new_async: Factory, sb: Sandbox
) -> None:
    async def password() -> Any:
        return None

    s = new_async(make_credentials(password=password))
    with pytest.raises(ConfigurationError, match="password"):
        await s.connect()
    method, path = contract.LOGIN_USERID
    assert sb.control.stats()["calls"].get(f"{method} {path}", 0) == 0  # nothing sent
    assert s.state is State.INITIALISED


def test_ks_session_refuses_an_async_provider_when_made(sb: Sandbox) -> None:
    async def password() -> str:
        return PASSWORD

    with pytest.raises(ConfigurationError) as info:
        KSSession(make_credentials(password=password), host=sb.url)
    text = f"{info.value} {info.value.hint}"
    assert "Credentials.password" in text and "AsyncKSSession" in text
    assert PASSWORD not in text


def test_ks_session_still_asks_a_plain_function_on_the_calling_thread(sb: Sandbox) -> None:
    threads: list[int] = []

    def password() -> str:
        threads.append(threading.get_ident())
        return PASSWORD

    with KSSession(make_credentials(password=password), host=sb.url) as s:
        s.connect()
        assert s.state is State.AUTHENTICATED
    assert threads == [threading.get_ident()]
