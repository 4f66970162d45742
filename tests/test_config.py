"""Session options are checked when the session is made: a bad one is named, with what to do."""

from __future__ import annotations

from typing import Any

import pytest

from session_fsm import ConfigurationError, KSSession, SessionConfig
from tests.conftest import make_credentials


def make(**options: Any) -> KSSession:
    return KSSession(make_credentials(), host="http://127.0.0.1:9/apim", **options)


def test_unknown_options_are_named_with_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="unknown option") as info:
        make(ott_tl=10, max_age=5)
    assert "max_age, ott_tl" in str(info.value) and "ott_ttl" in info.value.hint


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"ott_ttl": 0}, "ott_ttl must be > 0"),
        ({"ott_ttl": -1}, "ott_ttl must be > 0"),
        ({"relogin_timeout": -0.1}, "relogin_timeout must be >= 0"),
        ({"cooldown": -1}, "cooldown must be >= 0"),
        ({"soft_window": -5}, "soft_window must be >= 0"),
        ({"history_size": 0}, "history_size must be >= 1"),
        ({"daily_cutoff": "25:99"}, "daily_cutoff must be"),
        ({"daily_cutoff": "15:30", "cutoff_tz": "Mars/Olympus"}, "cutoff_tz must be"),
    ],
)
def test_bad_values_are_refused_by_name(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        make(**options)


def test_edge_values_are_accepted() -> None:
    config = make(ott_ttl=0.001, relogin_timeout=0, cooldown=0, soft_window=0).config
    assert isinstance(config, SessionConfig) and config.ott_ttl == 0.001 and config.cooldown == 0


def test_a_new_session_starts_at_its_origin_and_logs_to_the_given_logger() -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []

    class Recorder:  # any object with the level methods will do (structlog's or not)
        def __getattr__(self, level: str) -> Any:
            return lambda event, **fields: events.append((level, event, fields))

    s = KSSession(make_credentials(), host="http://127.0.0.1:9/apim/", logger=Recorder())
    snap = s.snapshot()
    assert (snap.state.value, snap.host, snap.generation) == ("Uninitialised", s.origin, 0)
    assert s.origin == "http://127.0.0.1:9/apim"  # the trailing slash is dropped
    s.logout()  # not logged in: no HTTP call, no error, one event, to the given logger
    assert [(lvl, ev, f["trigger"], f["outcome"]) for lvl, ev, f in events] == [
        ("warning", "transition", "logout", "refused")
    ]


def test_on_transition_takes_one_callback_or_a_list() -> None:
    seen: list[str] = []
    one = KSSession(make_credentials(), host="http://127.0.0.1:9/apim",
                    on_transition=lambda _s, r: seen.append("one:" + r.trigger))  # fmt: skip
    both = KSSession(make_credentials(), host="http://127.0.0.1:9/apim", on_transition=[
        lambda _s, r: seen.append("a:" + r.trigger), lambda _s, r: seen.append("b:" + r.trigger)
    ])  # fmt: skip
    for s in (one, both):
        s.logout()
    assert seen == ["one:logout", "a:logout", "b:logout"]


def test_a_new_session_has_no_history_and_takes_callbacks_later() -> None:
    # The history and the callback list are made when first needed (see sessions_create).
    s = make(history_size=2)
    assert s.history == () and "(last:" not in s.diagram()  # no transition marked
    seen: list[str] = []
    assert s.on_transition(lambda _s, r: seen.append(r.trigger)) is not None
    for _ in range(3):
        s.logout()
    assert seen == ["logout"] * 3 and len(s.history) == 2  # bounded by history_size


def test_sessions_without_options_share_the_default_config() -> None:
    a, b = make(), make()
    assert a.config is b.config == SessionConfig()  # one immutable default, not one per session
    assert make(cooldown=5).config.cooldown == 5 and a.config.cooldown == 300.0
