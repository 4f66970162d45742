"""A proactive (soft) refresh asks the credentials' providers as a login does: what a provider
gives is checked the same way (a plain string is wrapped, a blank or non-string answer is a
typed ConfigurationError naming the field, never its value), on both drivers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from session_fsm import AsyncKSSession, ConfigurationError, KSSession, Secret, contract
from session_fsm.sandbox import Sandbox
from tests.conftest import Clock, make_credentials

ORDERS = contract.ORDERS_REPORT[1]


class Answers:
    """A provider (the SecretProvider protocol, not one of the library's) that gives, in turn,
    what it was made with: plain strings, as a user's own provider may."""

    repeatable = True

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)

    def available(self) -> bool:
        return True

    def get(self) -> Secret:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]  # type: ignore[no-any-return]


def test_a_soft_refresh_takes_a_plain_string_from_a_provider(
    new_session: Callable[..., KSSession], sb: Sandbox, clock: Clock
) -> None:
    creds = make_credentials(password=Answers("demo-password"), access_code=Answers("1234"))
    s = new_session(creds, max_session_age=1000, soft_window=100)
    s.connect()
    clock.advance(950)  # inside the soft window: this request renews the session first
    assert s.get(ORDERS).status_code == 200
    assert s.generation == 2 and sb.control.stats()["logins"] == 2


@pytest.mark.parametrize("bad", ["  ", None, 1234], ids=["blank", "none", "number"])
def test_a_bad_answer_in_a_soft_refresh_is_a_typed_failure_naming_the_field(
    new_session: Callable[..., KSSession], sb: Sandbox, clock: Clock, bad: object
) -> None:
    """It was sent as it came (a blank password reached the server, which refused the login)."""
    creds = make_credentials(password=Answers("demo-password", bad))
    s = new_session(creds, max_session_age=1000, soft_window=100)
    s.connect()
    clock.advance(950)
    assert s.get(ORDERS).status_code == 200  # the old token serves; the refresh failed
    assert s.generation == 1 and sb.control.stats()["logins"] == 1  # nothing was sent
    failed = s.history[-1]
    assert (failed.trigger, failed.outcome, failed.error) == (
        "refresh",
        "failed",
        "ConfigurationError",
    )
    clock.advance(50)  # the hard deadline: the blank answer is raised, typed, to the caller
    with pytest.raises(ConfigurationError, match=r"the password \(Credentials\(password=") as e:
        s.get(ORDERS)
    assert "1234" not in str(e.value) and e.value.__cause__ is None


@pytest.mark.anyio
async def test_async_soft_refresh_takes_a_plain_string_from_a_provider(
    new_async: Callable[..., AsyncKSSession], sb: Sandbox, clock: Clock
) -> None:
    creds = make_credentials(password=Answers("demo-password"), access_code=Answers("1234"))
    s = new_async(creds, max_session_age=1000, soft_window=100)
    await s.connect()
    clock.advance(950)
    assert (await s.get(ORDERS)).status == 200
    assert s.generation == 2 and sb.control.stats()["logins"] == 2
