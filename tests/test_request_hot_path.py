"""``session.request``'s hot path (issue 15): a usable session and a 2xx answer send through
the fast path's request template without making the core's request flow; every other answer
continues in that flow (renewal and replay, typed errors) as before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from session_fsm import APIError, KSSession, contract
from session_fsm.core import relogin
from session_fsm.sandbox import Sandbox

ORDERS = contract.ORDERS_REPORT[1]
Factory = Callable[..., KSSession]


def _no_flow(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the request flow was made for a 2xx answer of a usable session")


def test_a_2xx_get_of_a_usable_session_makes_no_flow(
    new_session: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = new_session()
    s.connect()
    monkeypatch.setattr(relogin, "request", _no_flow)
    monkeypatch.setattr(relogin, "answered", _no_flow)
    for _ in range(3):
        r = s.get(ORDERS)
        assert r.status_code == 200 and r.history == []


def test_an_expired_session_met_on_the_hot_path_is_renewed_and_replayed(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    assert s.get(ORDERS).status_code == 200  # the template exists: the hot path is taken
    logins = sb.control.stats()["logins"]
    sb.control.expire()
    r = s.get(ORDERS)
    assert r.status_code == 200 and [h.status_code for h in r.history] == [401]
    assert sb.control.stats()["logins"] == logins + 1 and s.generation == 2


def test_a_non_2xx_answer_on_the_hot_path_raises_its_typed_error(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    sb.control.fault(ORDERS, status=404)
    with pytest.raises(APIError) as caught:
        s.get(ORDERS)
    assert caught.value.response is not None and caught.value.response.status_code == 404
    assert s.get(ORDERS).status_code == 200
