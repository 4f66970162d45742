"""The words the table gives a refused or guarded call: users read them to know what to do next.

Each message is derived from the table (never written per pair), so these pin the derivation:
the allowed states joined with "or", the calls of the shortest path joined with ", ", the
"already" case, the connect() alternative for authenticate, and the guard's need and advice.
"""

from __future__ import annotations

import pytest

from session_fsm import table
from session_fsm.table import State

HINTS = [
    (
        State.UNINITIALISED,
        "login",
        "login() needs Initialised or OTT-issued, session is Uninitialised: call init() first",
    ),
    (
        State.UNINITIALISED,
        "authenticate",
        "authenticate() needs OTT-issued, session is Uninitialised: "
        "call init(), login() first (or connect())",
    ),
    (
        State.UNINITIALISED,
        "logout",
        "logout() needs Authenticated, session is Uninitialised: "
        "call init(), login(), authenticate() first",
    ),
    (
        State.INITIALISED,
        "init",
        "init() needs Uninitialised or LoggedOut, session is Initialised: "
        "it is already Initialised",
    ),
    (
        State.INITIALISED,
        "authenticate",
        "authenticate() needs OTT-issued, session is Initialised: call login() first",
    ),
    (
        State.AUTHENTICATED,
        "login",
        "login() needs Initialised or OTT-issued, session is Authenticated: "
        "call logout(), init() first",
    ),
    (
        State.LOGGED_OUT,
        "logout",
        "logout() needs Authenticated, session is LoggedOut: it is already LoggedOut",
    ),
]


@pytest.mark.parametrize(("state", "trigger", "text"), HINTS)
def test_hint_text(state: State, trigger: str, text: str) -> None:
    assert table.hint(state, trigger) == text


def test_every_refused_pair_has_a_hint_naming_a_way_out() -> None:
    for state, trigger in table.refused_pairs():
        text = table.hint(state, trigger)
        assert text.startswith(f"{trigger}() needs ") and f"session is {state.value}" in text
        assert text.endswith((" first", " first (or connect())", f"already {state.value}"))


def test_hint_without_a_path_says_connect() -> None:
    # Every refused pair of the table has a path out; a trigger the table does not know has
    # none, and gets the fallback advice rather than an error while an error is being built.
    assert all(table.shortest_path(s, table.sources(t)) for s, t in table.refused_pairs())
    text = table.hint(State.AUTHENTICATED, "bogus")
    assert text == "bogus() needs , session is Authenticated: call connect()"


@pytest.mark.parametrize(
    ("trigger", "guard", "text"),
    [
        ("login", "has_password", "login() needs a password: configure Credentials(password=...)"),
        (
            "authenticate",
            "ott_fresh",
            "authenticate() needs a one-time token younger than its TTL: "
            "call login() again for a fresh one",
        ),
        (
            "authenticate",
            "has_access_code",
            "authenticate() needs an access code: "
            "configure Credentials(access_code=...) or a TOTP secret",
        ),
    ],
)
def test_guard_hint_text(trigger: str, guard: str, text: str) -> None:
    assert table.guard_hint(trigger, guard) == text


def test_path_to_target_is_the_shortest_path() -> None:
    for state in State:
        expected = table.shortest_path(state, [table.TARGET])
        got = table.path_to_target(state)
        assert (None if got is None else list(got)) == expected
    assert [e.trigger for e in table.path_to_target(State.LOGGED_OUT) or ()] == [
        "init",
        "login",
        "authenticate",
    ]


def test_states_hash_and_compare_by_identity() -> None:
    assert len({*State, *State}) == len(State)
    assert {s: s.value for s in State}[State.OTT_ISSUED] == "OTT-issued"
    assert State("OTT-issued") is State.OTT_ISSUED and State["OTT_ISSUED"] is State.OTT_ISSUED
