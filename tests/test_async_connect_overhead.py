"""What the cheaper ``await connect()`` keeps: the machine's verdicts, a memory store subclass's
own methods, JSON lines as the plain encoder renders them, and a logger per structlog
configuration.

The connect path was cut down (benchmarks/async_session.py part 4): the machine's attempt checks
its transitions' conditions without ``Event.trigger``'s bookkeeping, the async driver performs
the memory store's operations in its loop, ``json_line`` renders with one C encoder and the
library's loggers share the logger structlog binds once per configuration. Against the sandbox
over loopback HTTP.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

pytest.importorskip("aiohttp")

from session_fsm import AsyncKSSession, State, configure_logging
from session_fsm.aio.stores import AsyncMemoryStore
from session_fsm.core.machine import Attempt, attempt, shared_machine
from session_fsm.logs import _ENCODER, get_logger, json_line
from session_fsm.sandbox import Sandbox
from session_fsm.secret import Secret
from session_fsm.stores import StoredSession
from session_fsm.table import TRANSITIONS
from tests.conftest import FAST_RETRY, make_credentials

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "asyncio", {"debug": True}


@pytest.fixture
def structlog_config() -> Iterator[None]:
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)


class CountingStore(AsyncMemoryStore):
    """A memory store whose subclass counts its record operations."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    async def load(self, key: str) -> StoredSession | None:
        self.ops.append("load")
        return await super().load(key)

    async def save(self, key: str, session: StoredSession) -> bool | None:
        self.ops.append("save")
        return await super().save(key, session)


async def test_a_memory_store_subclass_has_its_own_methods_called(sb: Sandbox) -> None:
    store = CountingStore()
    s = AsyncKSSession(make_credentials(), host=sb.url, store=store, retry=FAST_RETRY)
    try:
        await s.connect()
    finally:
        await s.close()
    assert s.state is State.AUTHENTICATED
    assert "load" in store.ops and "save" in store.ops  # the driver called its methods
    stored = await store.load(s.store_key())
    assert stored is not None and stored.generation == 1


async def test_the_plain_memory_store_keeps_what_connect_saved(sb: Sandbox) -> None:
    store = AsyncMemoryStore()
    s = AsyncKSSession(make_credentials(), host=sb.url, store=store, retry=FAST_RETRY)
    try:
        await s.connect()
        stored = await store.load(s.store_key())
        assert stored is not None and stored.generation == 1
        again = AsyncKSSession(make_credentials(), host=sb.url, store=store, retry=FAST_RETRY)
        assert await again.resume()  # the record the driver saved in its loop is the store's
        await again.close()
    finally:
        await s.close()


def test_the_machine_decides_as_event_trigger_does() -> None:
    """For every edge, from snapshots and credentials that make its guards hold or fail in
    every way: the same verdict, the same guards seen (in order, stopping at the first that
    fails) and the same state as ``transitions``' own ``Event.trigger`` on a fresh attempt."""
    now = time.time()
    variants = [
        make_credentials(),
        make_credentials(password=None),
        make_credentials(access_code=None),
        make_credentials(password=None, access_code=None),
    ]
    compared = set()
    for creds in variants:
        s = AsyncKSSession(
            creds, host="https://tradeapi.kotaksecurities.com/apim", clock=lambda: now
        )
        core = s._core
        for e in TRANSITIONS:
            for ott in (None, Secret("ott-0123456789")):
                for ott_time in (None, now, now - 10**6):
                    snap = core.snap.evolve(state=e.source, one_time_token=ott, ott_time=ott_time)
                    ours = attempt(core, snap, e.trigger)
                    theirs = Attempt(core, snap)
                    moved = shared_machine().events[e.trigger].trigger(theirs, theirs)
                    assert (ours.moved, ours.seen, ours.state) == (
                        bool(moved),
                        theirs.seen,
                        theirs.state,
                    ), (e, ott, ott_time)
                    compared.add((e.trigger, e.source, tuple(ours.seen)))
    # every guard was seen both holding and failing
    seen = {g for *_, guards in compared for g in guards}
    assert {(g, ok) for g, _ in seen for ok in (True, False)} <= seen


@pytest.mark.parametrize(
    "fields",
    [
        {"a": 1, "b": 2.5, "c": None, "d": True, "e": 'x\u00e9\n"', "f": [1, {"g": ()}]},
        {"inf": math.inf, "nan": math.nan, "big": 10**30, "neg": -0.0},
        {"obj": object, "nested": {"k": {"l": [1, 2, {"m": "n"}]}}, "tuple": (1, "2")},
        {"password": "hunter2", "note": "Bearer abc.def", "deep": {"token": "t"}},
    ],
)
def test_json_line_renders_as_the_plain_encoder(fields: dict[str, Any]) -> None:
    line = json_line(None, "info", {"event": "e", **fields})
    parsed = json.loads(line)
    # the plain encoder's text of the processed event (level, timestamp, redaction), key
    # order included
    assert line == _ENCODER.encode(parsed)
    assert parsed["level"] == "info" and parsed["event"] == "e"
    assert "hunter2" not in line and "abc.def" not in line


def test_json_line_text_is_byte_for_byte_the_plain_encoders() -> None:
    from session_fsm import logs

    event = {"event": "e", "x": [1.5, None, "\u2603"], "y": {"z": math.inf}, "o": object()}
    with_c = json_line(None, "info", dict(event))
    saved = logs._C_ENCODE
    try:
        logs._C_ENCODE = None  # type: ignore[misc]
        plain = json_line(None, "info", dict(event))
    finally:
        logs._C_ENCODE = saved  # type: ignore[misc]

    def strip(line: str) -> dict[str, Any]:
        return {k: v for k, v in json.loads(line).items() if k != "timestamp"}

    assert strip(with_c) == strip(plain)
    assert with_c.split('"timestamp"')[0] == plain.split('"timestamp"')[0]


def test_a_logger_made_after_structlog_is_configured_again_uses_the_new_configuration(
    structlog_config: None,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(json=True, stream=first)
    old = get_logger()
    old.info("one", n=1)
    configure_logging(json=True, stream=second)
    new = get_logger()
    new.info("two", n=2)
    old.info("three", n=3)  # structlog's cached logger: the one it was first bound with
    assert [json.loads(x)["event"] for x in first.getvalue().splitlines()] == ["one", "three"]
    assert [json.loads(x)["event"] for x in second.getvalue().splitlines()] == ["two"]


def test_without_caching_each_event_uses_the_configuration_of_its_time(
    structlog_config: None,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(json=True, stream=first)
    structlog.configure(cache_logger_on_first_use=False)
    log = get_logger()
    log.info("one")
    configure_logging(json=True, stream=second)
    structlog.configure(cache_logger_on_first_use=False)
    log.info("two")
    assert [json.loads(x)["event"] for x in first.getvalue().splitlines()] == ["one"]
    assert [json.loads(x)["event"] for x in second.getvalue().splitlines()] == ["two"]
