"""Connect: walk the table's shortest path to Authenticated, under the token store's lock.

A guard with a remedy (a stale one-time token) is mended on the way; a rejected one-time
token or a redirect to another host is recovered from once. With a shared token store the walk
happens under the store's lock and a session another process saved meanwhile is adopted
instead, so N processes starting together log in once.
"""

from __future__ import annotations

from .. import table
from ..errors import (
    InvalidTransition,
    KSError,
    OneTimeTokenRejected,
    SessionExpired,
    WrongDomain,
)
from ..table import State
from .effects import Flow, Lock, StoreLock, StoreUnlock, Unlock
from .engine import (
    NOT_LOGGED_IN,
    SessionCore,
    adopt,
    ensure_loaded,
    fire,
    lock_wait_expired,
    stored_newer,
)
from .machine import GUARDS
from .snapshot import REFUSED, Snapshot

#: The most edges one walk takes, whatever the server does.
MAX_STEPS = 12


def locked(core: SessionCore, flow: Flow[object], *, load: bool = True) -> Flow[object]:
    """Run ``flow`` with the session's lock held (the store loaded first, unless ``load`` is
    off: adopting a given session)."""
    timeout = core.config.relogin_timeout
    if not (yield Lock(timeout)):
        raise lock_wait_expired(timeout)
    try:
        if load and not core.loaded:
            yield from ensure_loaded(core)
        return (yield from flow)
    finally:
        yield Unlock()


# (trigger, logout and connect return their flow under the lock rather than delegate to it:
# one generator level fewer for every effect of the flow to pass through)


def trigger(core: SessionCore, name: str) -> Flow[object]:
    """A public trigger (``init``, ``login``, ``authenticate``) under the session's lock."""
    return locked(core, fire(core, name))


def logout(core: SessionCore) -> Flow[object]:
    """Authenticated -> LoggedOut; a session that is not logged in is left as it is, with
    the attempt recorded as refused (no call, no error)."""

    def flow() -> Flow[None]:
        src = core.snap.state
        if src is not State.AUTHENTICATED:
            core.record("logout", src, REFUSED, reason=NOT_LOGGED_IN)
            return
        yield from fire(core, "logout")

    return locked(core, flow())


def connect(core: SessionCore) -> Flow[object]:
    """``session.connect()``: Authenticated by the shortest path; returns the snapshot."""

    def flow() -> Flow[Snapshot]:
        if core.snap.state is State.AUTHENTICATED:
            return core.snap
        return (yield from with_store(core, adopt_or_walk(core)))

    return locked(core, flow())


def with_store(core: SessionCore, flow: Flow[Snapshot]) -> Flow[Snapshot]:
    """Run ``flow`` under the token store's lock (single flight across processes)."""
    timeout = core.config.relogin_timeout
    if not (yield StoreLock(core.key, timeout)):
        raise SessionExpired(
            f"gave up after {timeout:g}s waiting for another process's login",
            hint="raise relogin_timeout, or check the token store",
        )
    try:
        return (yield from flow)
    finally:
        yield StoreUnlock(core.key)


def adopt_or_walk(core: SessionCore) -> Flow[Snapshot]:
    """Adopt a newer stored session, or walk to Authenticated (store lock held)."""
    newer = yield from stored_newer(core, core.snap.generation)
    if newer is not None:
        yield from adopt(core, newer, reason="store")
        return core.snap
    return (yield from walk(core))


def walk(core: SessionCore) -> Flow[Snapshot]:
    """Take the table's next edge towards Authenticated until there (the locks held)."""
    recovered: set[type[KSError]] = set()
    attempts: dict[str, int] = {}  # per trigger within this walk: the events' ``attempt``
    for _ in range(MAX_STEPS):
        snap = core.snap
        state = snap.state
        if state is table.TARGET:
            return snap
        path = table.path_to_target(state)
        if not path:
            raise InvalidTransition(
                f"no path from {state.value} to Authenticated", state=state.value,
                trigger="connect",
            )  # fmt: skip
        step = path[0]
        failing = next((g for g in step.guards if not GUARDS[g](core, snap)), None)
        remedy = table.GUARDS[failing].remedy if failing else None
        if remedy and table.edge(state, remedy):
            attempts[remedy] = attempts.get(remedy, 0) + 1
            yield from fire(core, remedy, attempt_no=attempts[remedy])
            continue
        try:
            attempts[step.trigger] = attempts.get(step.trigger, 0) + 1
            yield from fire(core, step.trigger, attempt_no=attempts[step.trigger])
        except (OneTimeTokenRejected, WrongDomain) as exc:
            if type(exc) in recovered:
                raise
            recovered.add(type(exc))
    raise InvalidTransition(
        "connect() did not reach Authenticated", state=core.snap.state.value, trigger="connect"
    )
