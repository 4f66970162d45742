"""The guarded machine: one ``transitions.Machine`` built from the table, guards as functions.

The machine decides; it performs nothing. An attempt at a trigger is a small throw-away
:class:`Attempt` (the machine's model: the source state, the snapshot the guards read, and the
guards it evaluated, in order). ``transitions`` checks the edge and its guards; the flow that
asked (:mod:`session_fsm.core.engine`) then makes the edge's call and publishes the new
snapshot. No callback of the machine does I/O or touches the session.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from transitions import EventData, Machine

from .. import table
from .snapshot import Snapshot

if TYPE_CHECKING:
    from .engine import SessionCore


class Attempt:
    """One attempted trigger: the machine's model (``state`` is the source state's name, and
    the destination's once the machine moved it) and what the guards read and found."""

    __slots__ = ("core", "moved", "seen", "snap", "state")

    def __init__(self, core: SessionCore, snap: Snapshot) -> None:
        self.core = core
        self.snap = snap
        self.state = snap.state._name_  # (not .name: Enum's property is a Python call)
        self.seen: list[tuple[str, bool]] = []
        #: Whether the machine took the edge (a self-loop's state does not say so).
        self.moved = False


def has_password(core: SessionCore, snap: Snapshot) -> bool:
    """A password (provider) is configured and can give one."""
    p = core.credentials.password_provider
    return p is not None and p.available()


def has_ott(core: SessionCore, snap: Snapshot) -> bool:
    """The snapshot holds a one-time token."""
    return snap.one_time_token is not None


def ott_fresh(core: SessionCore, snap: Snapshot) -> bool:
    """The one-time token is younger than ``ott_ttl``."""
    t = snap.ott_time
    return t is not None and core.clock() - t < core.config.ott_ttl


def has_access_code(core: SessionCore, snap: Snapshot) -> bool:
    """An access code (or TOTP secret) is configured and can give one."""
    p = core.credentials.access_code_provider
    return p is not None and p.available()


#: Each guard named in the table -> the function that evaluates it.
GUARDS: dict[str, Callable[[SessionCore, Snapshot], bool]] = {
    "has_password": has_password,
    "has_ott": has_ott,
    "ott_fresh": ott_fresh,
    "has_access_code": has_access_code,
}
assert set(GUARDS) == set(table.GUARDS), "every guard of the table has a function"


def _condition(name: str) -> Callable[[Attempt], bool]:
    check = GUARDS[name]

    def condition(attempt: Attempt) -> bool:
        ok = check(attempt.core, attempt.snap)
        attempt.seen.append((name, ok))
        return ok

    condition.__name__ = name
    return condition


@functools.cache
def shared_machine() -> Machine:
    """The one ``transitions.Machine`` built from the table (models are passed per call)."""
    conditions = {name: _condition(name) for name in table.GUARDS}
    return Machine(
        model=None,
        states=[s.name for s in table.State],
        initial=table.INITIAL.name,
        auto_transitions=False,
        transitions=[
            {
                "trigger": e.trigger,
                "source": e.source.name,
                "dest": e.dest.name,
                "conditions": [conditions[g] for g in e.guards],
            }
            for e in table.TRANSITIONS
        ],
    )


def attempt(core: SessionCore, snap: Snapshot, trigger: str) -> Attempt:
    """Let the machine try ``trigger`` from ``snap``: the attempt moved (its guards held) or
    not (``seen`` names the guard that failed). The table must have the edge.

    The machine's own transitions for the trigger and source decide, their conditions checked
    by ``transitions``' ``Condition.check`` in order, the first transition whose conditions all
    hold taken (what ``Event.trigger`` does). The rest of ``Event.trigger``'s work (prepare,
    before and after callbacks, state enter and exit callbacks, and its log lines about them)
    is not run: the machine has no callbacks (``test_layout`` holds it to that), and that
    bookkeeping was about a fifth of the core's own time in a ``connect()``."""
    att = Attempt(core, snap)
    machine = shared_machine()
    event = machine.events[trigger]
    data = EventData(None, event, machine, att, (att,), {})
    for transition in event.transitions[att.state]:
        for condition in transition.conditions:
            if not condition.check(data):
                break
        else:
            att.state, att.moved = transition.dest or att.state, True
            break
    return att


def may(core: SessionCore, snap: Snapshot, trigger: str) -> bool:
    """Whether ``trigger`` would be attempted from ``snap``: a public edge whose guards hold."""
    e = table.edge(snap.state, trigger)
    return e is not None and not e.internal and all(GUARDS[g](core, snap) for g in e.guards)
