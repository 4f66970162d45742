"""The stateful property test of :mod:`tests.test_properties` (the same rules, invariants and
independent oracle) run against the async driver: :class:`~session_fsm.AsyncKSSession` and its
peer on an :class:`~session_fsm.aio.stores.AsyncMemoryStore`, each call awaited on one event
loop (see :mod:`tests.drivers`)."""

from __future__ import annotations

import pytest

pytest.importorskip("aiohttp")

from tests.drivers import ASYNC
from tests.test_properties import SessionVersusModel


class AsyncSessionVersusModel(SessionVersusModel):
    """The same machine, driving AsyncKSSession."""

    driver = ASYNC


AsyncSessionVersusModel.TestCase.settings = SessionVersusModel.TestCase.settings
TestAsyncSessionVersusModel = AsyncSessionVersusModel.TestCase
