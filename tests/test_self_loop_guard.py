"""A guarded self-loop edge (``login`` from OTT-issued back to OTT-issued) is refused when its
guard fails, on both drivers: found by the async run of the stateful property test (the same
oracle), shrunk to this journey. The machine stays in OTT-issued either way, so the refusal
cannot be told from the state the machine ends in."""

from __future__ import annotations

import pytest

pytest.importorskip("aiohttp")

from session_fsm import GuardFailed, State, contract
from session_fsm.sandbox import Sandbox
from tests.conftest import Clock, make_credentials
from tests.drivers import DRIVERS, Driver, sessions_of
from tests.model_coverage import Switch


@pytest.mark.parametrize("driver", DRIVERS, ids=str)
def test_login_from_ott_issued_without_a_password_is_refused(
    driver: Driver, sb: Sandbox, clock: Clock
) -> None:
    password = Switch("demo-password")
    with sessions_of(driver, sb.url, clock) as make:
        s = make(make_credentials(password=password), cooldown=0.0)
        sb.control.fault(contract.TWO_FA_ACCESSCODE[1], status=400)
        with pytest.raises(Exception):  # noqa: B017 - the 2FA's BadRequest
            s.connect()
        assert s.state is State.OTT_ISSUED
        clock.advance(350)  # the one-time token is past its life: connect logs in again
        password.on = False
        calls = sb.control.stats()["calls"]
        with pytest.raises(GuardFailed):
            s.connect()
        last = s.history[-1]
        assert (last.trigger, last.outcome, last.reason) == ("login", "refused",
                                                             "guard has_password")  # fmt: skip
        assert sb.control.stats()["calls"] == calls and s.state is State.OTT_ISSUED
