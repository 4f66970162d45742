"""A session cannot be copied: a shallow copy of a used session shares its core (one state,
two objects), and one of a session never used made a second core under the same session id
(two sessions that logs and metrics could not tell apart)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from session_fsm import AsyncKSSession, KSSession
from tests.conftest import make_credentials

HOST = "http://127.0.0.1:9/apim"


@pytest.mark.parametrize("kind", [KSSession, AsyncKSSession])
@pytest.mark.parametrize("how", [copy.copy, copy.deepcopy])
@pytest.mark.parametrize("used", [False, True])
def test_a_session_cannot_be_copied(kind: Any, how: Any, used: bool) -> None:
    s = kind(make_credentials(password="hunter2-secret"), host=HOST)
    if used:
        assert s.state.value == "Uninitialised"  # reading the state makes its core
    with pytest.raises(TypeError, match="cannot be copied") as caught:
        how(s)
    assert "hunter2" not in str(caught.value)
