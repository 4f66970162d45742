"""The cool-down after a rejected login: remembered, checked before a login trigger, reset.

A login the server rejects (wrong password or access code, a rejected Bearer token) is not
tried again until ``cooldown`` seconds have passed: the session remembers it in its snapshot,
and in the token store, so other processes and the next run honour it too. The flows here
yield store effects and never take the session's lock (their callers hold it).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from ..errors import GatewayAuthError, KSError, LoginRejected, NotAuthorized
from ..logs import emit
from ..stores import StoredCooldown, StoreError
from ..table import State
from .effects import ClearCooldown, Flow, LoadCooldown, SaveCooldown
from .snapshot import REFUSED, Cooldown

if TYPE_CHECKING:
    from .engine import SessionCore

#: Errors after which the login endpoints are not called again until the cool-down ends.
COOLDOWN_ERRORS: tuple[type[KSError], ...] = (LoginRejected, NotAuthorized, GatewayAuthError)
_COOLDOWN_BY_NAME: dict[str, type[KSError]] = {c.__name__: c for c in COOLDOWN_ERRORS}
#: The triggers that call the login endpoints (refused during a cool-down).
LOGIN_TRIGGERS = frozenset({"init", "login", "authenticate", "refresh"})


def remember(core: SessionCore, exc: KSError) -> Flow[None]:
    """Start a cool-down after the rejected login ``exc``: in the snapshot, and in the store
    (a store that fails to keep it is logged; the login error is the one raised)."""
    until = core.clock() + core.config.cooldown
    mine = Cooldown(until, type(exc).__name__, exc.status, exc.fault_code, fresh(exc))
    core.snap = core.snap.evolve(cooldown=mine)
    kept = StoredCooldown(until, type(exc).__name__, exc.status, exc.fault_code)
    try:
        saved = yield SaveCooldown(core.key, kept)
    except StoreError as store_exc:  # the login error is the one to raise
        emit(core.log, "warning", "cooldown_not_stored", session_id=core.session_id,
             error=type(store_exc).__name__)  # fmt: skip
    else:
        # (Marked stored, a cool-down the store no longer has is one reset there; a
        # store without cool-downs keeps none, so this session keeps its own.)
        if saved is not False and core.snap.cooldown is mine:
            core.snap = core.snap.evolve(cooldown=dataclasses.replace(mine, stored=True))


def check_cooldown(core: SessionCore, trigger: str, src: State) -> Flow[bool]:
    """Refuse a login trigger while a cool-down (this session's or one kept in the store by
    another process or an earlier run) lasts. Returns whether this session's own cool-down is
    over (ended, or reset in the store): :func:`fire` forgets it once the trigger moves, so a
    trigger refused for another reason (a guard) changes nothing."""
    kept = core.snap.cooldown
    if kept is None or kept.stored:
        try:
            stored = yield LoadCooldown(core.key)
        except StoreError:  # the login itself will meet (and report) the store's failure
            stored = False
        if kept is not None and stored is None:  # reset in the store (another process,
            return True  # the CLI): over here too
        longer = stored and (kept is None or stored.until > kept.until)
        if longer and stored and stored.error in _COOLDOWN_BY_NAME:
            # Another session's (or an earlier run's), lasting longer than ours: it applies.
            kept = Cooldown(stored.until, stored.error, stored.status, stored.fault_code)
    if kept is None:
        return False
    if core.clock() >= kept.until:
        return core.snap.cooldown is not None
    # (A cool-down read from the store is not copied into the snapshot: a refused trigger
    # changes nothing; the next one reads the store again.)
    err = cooldown_error(kept) if kept.exc is None else fresh(kept.exc)
    core.record(trigger, src, REFUSED, err, reason="cooldown")
    raise err


def fresh(exc: KSError) -> KSError:
    """A copy of ``exc`` with no traceback, cause or context: the cool-down's error is raised
    again as a new object each time, so one raise (another thread's, or one inside a caller's
    ``except`` block) never changes what an earlier or later caller holds, and the kept error
    holds no frames of the flow that met it."""
    new = type(exc).__new__(type(exc))
    new.__dict__.update(exc.__dict__)
    new.args = exc.args
    return new


def reset_cooldown(core: SessionCore) -> Flow[None]:
    """Forget a remembered login failure, here and in the store."""
    core.snap = core.snap.evolve(cooldown=None)
    yield ClearCooldown(core.key)


def cooldown_error(kept: Cooldown) -> KSError:
    """The error a login trigger meets during ``kept``."""
    cls = _COOLDOWN_BY_NAME.get(kept.error, LoginRejected)
    when = time.strftime("%H:%M:%S UTC", time.gmtime(kept.until))
    return cls(
        f"not sent: an earlier login was rejected ({kept.error}) and the cool-down "
        f"lasts until {when}",
        status=kept.status,
        fault_code=kept.fault_code,
        hint="fix the password or access code (KS_PASSWORD, KS_ACCESS_CODE), then run "
        "`session-fsm login --reset-cooldown` or call reset_cooldown()",
    )
