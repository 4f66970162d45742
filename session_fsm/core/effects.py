"""What a flow of the core asks its driver to do, and nothing else: the effects.

A flow is a generator (the shape of httpx's ``Auth.auth_flow``): it yields an effect, the
driver performs it and sends the result back in (or throws the driver's typed error in), and
the flow's return value is its result. The sync driver (:mod:`session_fsm.sync.driver`)
performs effects with ``requests`` and ``threading``; an async driver awaits them. Every effect
is a small frozen value; none holds a plain secret (tokens are Secrets).

- :class:`~session_fsm.core.calls.SessionCall` (one of the four session calls) ->
  :class:`~session_fsm.core.calls.Answer`;
- :class:`Send` (a trading request with this snapshot's host and tokens) -> :class:`Reply`;
  :class:`ReadAnswer` (its body, capped) -> Answer; :class:`Discard` (give its connection
  back) -> None;
- :class:`Lock` / :class:`Unlock`: the session's own lock (single flight of a re-login, a
  refresh or a logout) -> bool (taken within ``timeout``; ``wait=False``: only if free);
- :class:`StoreLock` / :class:`StoreUnlock`: the token store's lock on ``key`` -> bool;
- :class:`Load` / :class:`Save` / :class:`Delete` and the ``*Cooldown`` effects (each a
  :class:`StoreOp`: the store's method to call and its arguments): the token store's records
  -> what the store returns;
- :class:`Ask`: ask the application's password or access-code provider (its own code, which
  may wait for a person, or be ``async def``) -> the Secret.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..credentials import SecretProvider
from ..frozen import quick_init
from ..stores import StoredCooldown, StoredSession
from .calls import Answer, Identity, SessionCall
from .snapshot import Snapshot

T = TypeVar("T")
#: A flow: yields effects, receives their results, returns ``T``.
Flow = Generator[Any, Any, T]


@dataclass(frozen=True, slots=True)
class Send:
    """Send the trading request the driver is making (the driver keeps it; the core knows it
    by its :class:`~session_fsm.core.relogin.Outgoing`) with ``snap``'s host and session token
    and ``who``'s Bearer token. ``replay_of``: the :class:`Reply` this one repeats (sent on the
    same connection adapter)."""

    snap: Snapshot
    who: Identity
    replay_of: Reply | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A trading answer as the core sees it: its status; ``handle`` is the driver's response."""

    status: int
    handle: Any


@dataclass(frozen=True, slots=True)
class ReadAnswer:
    """Read ``reply``'s body (at most ``max_answer_bytes``) into an Answer of a trading call."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Discard:
    """Read and drop ``reply``'s body so its connection goes back to the pool."""

    reply: Reply


@quick_init
@dataclass(frozen=True, slots=True)
class Lock:
    """Take the session's lock within ``timeout`` s (``wait=False``: only if free now);
    ``waiter``: count the caller as waiting on a re-login while blocked."""

    timeout: float
    wait: bool = True
    waiter: bool = False


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask ``provider`` (the application's code) for ``what`` (``password``,
    ``access_code``) -> a Secret, or the ConfigurationError of
    :func:`~session_fsm.credentials.produce`. The sync driver calls it; the async driver awaits
    an ``async def`` one and runs any other in a worker thread."""

    provider: SecretProvider
    what: str


@dataclass(frozen=True, slots=True)
class Unlock:
    """Release the session's lock."""


@quick_init
@dataclass(frozen=True, slots=True)
class StoreLock:
    """Take the token store's lock on ``key`` within ``timeout`` s."""

    key: str
    timeout: float


@quick_init
@dataclass(frozen=True, slots=True)
class StoreUnlock:
    """Release the token store's lock on ``key``."""

    key: str


class StoreOp:
    """An operation on the token store's records: the store's method ``op`` called with
    :meth:`args`, its answer the result. A store without that method (cool-downs are optional
    for a sync :class:`~session_fsm.stores.TokenStore`) answers None."""

    __slots__ = ()
    op: ClassVar[str]
    #: The answer of a store without the method ``op``.
    absent: ClassVar[Any] = None

    def args(self) -> tuple[Any, ...]:
        """The arguments of the store's method."""
        raise NotImplementedError

    def apply(self, store: Any) -> Any:
        """Perform this operation on a synchronous ``store`` (:attr:`absent` for a method it
        lacks)."""
        method = getattr(store, self.op, None)
        return self.absent if method is None else method(*self.args())


@quick_init
@dataclass(frozen=True, slots=True)
class Load(StoreOp):
    """The stored session under ``key`` (or None)."""

    key: str
    op: ClassVar[str] = "load"

    def args(self) -> tuple[Any, ...]:
        return (self.key,)


@quick_init
@dataclass(frozen=True, slots=True)
class Save(StoreOp):
    """Save ``record`` under ``key``; the store's answer (False: fenced, refused)."""

    key: str
    record: StoredSession
    op: ClassVar[str] = "save"

    def args(self) -> tuple[Any, ...]:
        return (self.key, self.record)


@quick_init
@dataclass(frozen=True, slots=True)
class Delete(StoreOp):
    """Delete the stored session under ``key``."""

    key: str
    op: ClassVar[str] = "delete"

    def args(self) -> tuple[Any, ...]:
        return (self.key,)


@dataclass(frozen=True, slots=True)
class LoadCooldown(StoreOp):
    """The cool-down kept under ``key`` (or None)."""

    key: str
    op: ClassVar[str] = "load_cooldown"

    def args(self) -> tuple[Any, ...]:
        return (self.key,)


@dataclass(frozen=True, slots=True)
class SaveCooldown(StoreOp):
    """Keep ``cooldown`` under ``key``; False: the store keeps no cool-downs."""

    key: str
    cooldown: StoredCooldown
    op: ClassVar[str] = "save_cooldown"
    absent: ClassVar[Any] = False

    def args(self) -> tuple[Any, ...]:
        return (self.key, self.cooldown)


@dataclass(frozen=True, slots=True)
class ClearCooldown(StoreOp):
    """Forget the cool-down under ``key``."""

    key: str
    op: ClassVar[str] = "clear_cooldown"

    def args(self) -> tuple[Any, ...]:
        return (self.key,)


#: The core's store effects (a driver finds a subclass of StoreOp elsewhere by isinstance).
STORE_OPS: frozenset[type[StoreOp]] = frozenset(
    {Load, Save, Delete, LoadCooldown, SaveCooldown, ClearCooldown}
)

#: What a running flow holds, as its driver keeps it: (the store key, or None for the
#: session's lock; the call that releases it).
Held = tuple["str | None", Callable[[], Any]]


def release(held: list[Held], key: str | None) -> Callable[[], Any]:
    """Take the newest hold of ``key`` (None: the session's lock) off ``held``: its release."""
    for i in range(len(held) - 1, -1, -1):
        if held[i][0] == key:
            return held.pop(i)[1]
    raise RuntimeError(f"released what the flow does not hold ({key or 'the session lock'})")


class Steps:
    """A flow as its driver runs it (the driver's whole loop is ``for effect in steps``):
    iterating gives the effects the flow asks for, in turn. Before asking for the next one the
    driver sets :attr:`value` (the result of performing the last one) or :attr:`error` (what
    performing it raised, thrown into the flow, cancellation and interrupts too, so the flow's
    ``finally`` clauses give back what it holds). When the flow returns, the iteration stops
    and :attr:`result` is what it returned; an error it raises comes out of the iteration.
    :attr:`held` is what the flow holds, which the driver releases, newest first, if the flow
    is left half-way."""

    __slots__ = ("error", "flow", "held", "result", "value")

    def __init__(self, flow: Flow[Any], value: Any = None) -> None:
        self.flow = flow
        self.value = value
        self.error: BaseException | None = None
        self.result: Any = None
        self.held: list[Held] = []

    def __iter__(self) -> Steps:
        return self

    def __next__(self) -> Any:
        error = self.error
        try:
            if error is None:
                return self.flow.send(self.value)
            self.error = None  # (thrown once; no reference to it stays here)
            return self.flow.throw(error)
        except StopIteration as stop:
            self.result = stop.value
            raise StopIteration from None
        finally:
            error = None


__all__ = [
    "STORE_OPS",
    "Answer",
    "ClearCooldown",
    "Delete",
    "Discard",
    "Flow",
    "Held",
    "Load",
    "LoadCooldown",
    "Lock",
    "ReadAnswer",
    "Reply",
    "Save",
    "SaveCooldown",
    "Send",
    "SessionCall",
    "Steps",
    "StoreLock",
    "StoreOp",
    "StoreUnlock",
    "Unlock",
    "release",
]
