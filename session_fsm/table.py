"""The transition table: the one place the session's states, edges and guards are written down.

The machine (``machine``), the diagrams (``diagrams``), the error hints (:func:`hint`), the
``connect()`` path (:func:`shortest_path`) and the tests' oracle all read :data:`TRANSITIONS`;
nothing else restates an edge.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Final


class State(Enum):
    """The five states of a KS session; values are the display names."""

    UNINITIALISED = "Uninitialised"
    INITIALISED = "Initialised"
    OTT_ISSUED = "OTT-issued"
    AUTHENTICATED = "Authenticated"
    LOGGED_OUT = "LoggedOut"

    def __str__(self) -> str:
        return self.value

    # Members are singletons compared by identity, so the identity hash is right, and it is
    # computed in C: Enum's own ``__hash__`` is a Python call on every table look-up.
    __hash__ = object.__hash__


U, I, O, A, L = (  # noqa: E741 -- one-letter names keep the table readable
    State.UNINITIALISED,
    State.INITIALISED,
    State.OTT_ISSUED,
    State.AUTHENTICATED,
    State.LOGGED_OUT,
)
ALL_STATES: Final = tuple(State)


@dataclass(frozen=True)
class GuardSpec:
    """A guard: what must hold, and what the caller can do when it does not."""

    name: str
    needs: str
    #: The trigger that makes the guard true again, or None when only a setting can.
    remedy: str | None
    advice: str


GUARDS: Final = {
    g.name: g
    for g in (
        GuardSpec("has_password", "a password", None, "configure Credentials(password=...)"),
        GuardSpec("has_ott", "a one-time token", "login", "call login() first"),
        GuardSpec(
            "ott_fresh",
            "a one-time token younger than its TTL",
            "login",
            "call login() again for a fresh one",
        ),
        GuardSpec(
            "has_access_code",
            "an access code",
            None,
            "configure Credentials(access_code=...) or a TOTP secret",
        ),
    )
}


@dataclass(frozen=True)
class Edge:
    """One transition: ``trigger`` moves ``source`` to ``dest`` when every guard holds.

    ``call`` names the wire call made on the edge (after the guards, before the state changes);
    ``internal`` edges are taken by the library when the server says so, never by the user.
    """

    trigger: str
    source: State
    dest: State
    guards: tuple[str, ...] = ()
    call: str | None = None
    internal: bool = False
    why: str = ""


def _edges(trigger: str, sources: Iterable[State], dest: State, **kw: object) -> tuple[Edge, ...]:
    return tuple(Edge(trigger, s, dest, **kw) for s in sources)  # type: ignore[arg-type]


#: Every edge of the machine. Triggers with ``internal=False`` are public methods of KSSession.
TRANSITIONS: Final[tuple[Edge, ...]] = (
    *_edges("init", (U, L), I, call="session_init", why="start a session; follow the redirect"),
    *_edges(
        "login", (I, O), O, guards=("has_password",), call="login_with_user_id",
        why="user id + password -> one-time token",
    ),
    *_edges(
        "authenticate", (O,), A, guards=("has_ott", "ott_fresh", "has_access_code"),
        call="generate_session2_fa", why="one-time token + access code -> session token",
    ),
    *_edges("logout", (A,), L, call="session_logout", why="invalidate the session token"),
    *_edges(
        "session_expired", (A,), I, internal=True,
        why="the server answered 99999 (or a bare 401); session token dropped",
    ),
    *_edges(
        "ott_rejected", (O,), I, internal=True,
        why="the server answered 50001; one-time token dropped",
    ),
    *_edges(
        "gateway_rejected", ALL_STATES, U, internal=True,
        why="the Bearer token was rejected (900901); all tokens dropped",
    ),
    *_edges(
        "redirect_changed", ALL_STATES, U, internal=True,
        why="the user belongs to another host (999024); all tokens dropped",
    ),
    *_edges(
        "restore", (U, I, A), A, internal=True,
        why="a live session token was taken from the token store (restart, other process)",
    ),
    *_edges(
        "refresh", (A,), A, guards=("has_password", "has_access_code"), call="refresh_session",
        internal=True,
        why="renewed ahead of max_session_age (login + 2FA); the old token serves until then",
    ),
)  # fmt: skip

INITIAL: Final = U
TARGET: Final = A
#: Public triggers, in lifecycle order.
USER_TRIGGERS: Final = tuple(dict.fromkeys(e.trigger for e in TRANSITIONS if not e.internal))
INTERNAL_TRIGGERS: Final = tuple(dict.fromkeys(e.trigger for e in TRANSITIONS if e.internal))

_BY_KEY: Final = {(e.source, e.trigger): e for e in TRANSITIONS}


def edge(state: State, trigger: str) -> Edge | None:
    """The edge ``trigger`` takes from ``state``, or None when the table has none."""
    return _BY_KEY.get((state, trigger))


def sources(trigger: str) -> tuple[State, ...]:
    """The states from which ``trigger`` is allowed."""
    return tuple(e.source for e in TRANSITIONS if e.trigger == trigger)


def refused_pairs() -> tuple[tuple[State, str], ...]:
    """Every (state, public trigger) pair the table does not allow."""
    return tuple((s, t) for s in ALL_STATES for t in USER_TRIGGERS if edge(s, t) is None)


def shortest_path(
    start: State, goals: Iterable[State], triggers: Iterable[str] = USER_TRIGGERS
) -> list[Edge] | None:
    """Breadth-first: the fewest edges (over ``triggers``) from ``start`` into ``goals``.

    Returns ``[]`` when ``start`` is a goal, None when no goal is reachable.
    """
    path = _shortest_path(start, frozenset(goals), frozenset(triggers))
    return None if path is None else list(path)


@functools.cache  # the table is constant, so every answer is too
def _shortest_path(
    start: State, wanted: frozenset[State], allowed: frozenset[str]
) -> tuple[Edge, ...] | None:
    if start in wanted:
        return ()
    seen = {start}
    queue: deque[tuple[State, tuple[Edge, ...]]] = deque([(start, ())])
    while queue:
        state, path = queue.popleft()
        for e in TRANSITIONS:
            if e.source is state and e.trigger in allowed and e.dest not in seen:
                if e.dest in wanted:
                    return (*path, e)
                seen.add(e.dest)
                queue.append((e.dest, (*path, e)))
    return None


def path_to_target(state: State) -> tuple[Edge, ...] | None:
    """``shortest_path(state, [TARGET])`` over the public triggers, looked up (connect()'s
    next step, asked once per edge)."""
    return _TO_TARGET[state]


_TO_TARGET: Final = {
    s: _shortest_path(s, frozenset({TARGET}), frozenset(USER_TRIGGERS)) for s in State
}


def _names(states: Iterable[State]) -> str:
    return " or ".join(s.value for s in states)


def hint(state: State, trigger: str) -> str:
    """Why ``trigger`` is refused in ``state`` and what to call first, derived from the table.

    Example: ``login() needs Initialised or OTT-issued, session is Uninitialised: call init()
    first``.
    """
    allowed = sources(trigger)
    head = f"{trigger}() needs {_names(allowed)}, session is {state.value}"
    dests = {e.dest for e in TRANSITIONS if e.trigger == trigger}
    if state in dests:
        return f"{head}: it is already {state.value}"
    path = shortest_path(state, allowed)
    if not path:
        return f"{head}: call connect()"
    calls = ", ".join(f"{e.trigger}()" for e in path)
    also = " (or connect())" if len(path) > 1 and trigger == "authenticate" else ""
    return f"{head}: call {calls} first{also}"


def guard_hint(trigger: str, guard: str) -> str:
    """The message of a failed guard: what the edge needs and how to get it."""
    spec = GUARDS[guard]
    return f"{trigger}() needs {spec.needs}: {spec.advice}"
