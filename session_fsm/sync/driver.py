"""Runs the core's flows: performs each effect with ``requests``, the token store and
``threading``, and sends the result back in (or throws the error in).

A flow that ends, however it ends, leaves no lock held: the flows release what they take in
``finally`` clauses (as effects), and the driver releases anything still held as a last
resort (a flow closed half-way).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import requests

from ..answers import answer, read_capped, seal_response
from ..core import effects as fx
from ..core.calls import Identity, SessionCall
from ..core.effects import Held, release
from ..core.snapshot import Snapshot
from ..credentials import produce
from ..errors import Call
from ..fast_send import RequestTemplate
from ..locks import ForkSafeLock
from ..stores import MemoryStore, TokenStore
from ..wire import Wire

T = TypeVar("T")
SendFn = Callable[[fx.Send], fx.Reply]


#: The store effects of the core (a subclass of StoreOp elsewhere is found by isinstance).
_STORE_OPS = fx.STORE_OPS


class Driver:
    """The effects of one session, performed synchronously (shareable between threads).

    What a session may never use is made at its first use (a session made and dropped
    unused, or one of 100,000 made at start-up, carries no lock, list of waiters or store):
    its token store (a new :class:`~session_fsm.stores.MemoryStore` when none was given), its
    lock and its list of waiting threads. Each is made once, whichever thread comes first
    (``dict.setdefault`` keeps the first one made).
    """

    _store: TokenStore | None = None
    _lock: ForkSafeLock | None = None
    _waiting: list[object] | None = None
    #: The request template of the newest (host, session token, identity), swapped whole.
    _template: tuple[tuple[object, ...], RequestTemplate] | None = None

    def __init__(self, wire: Wire, store: TokenStore | None, lock_timeout: float) -> None:
        self.wire = wire
        if store is not None:
            self._store = store
        #: The session lock's bound (``relogin_timeout``), for when it is made.
        self.lock_timeout = lock_timeout

    @property
    def store(self) -> TokenStore:
        """The token store (a MemoryStore of this session's own when none was given)."""
        store = self._store
        if store is None:
            store = self.__dict__.setdefault("_store", MemoryStore())
        return store

    @property
    def lock(self) -> ForkSafeLock:
        """The session's lock: re-entrant, bounded, made afresh in a forked child."""
        lock = self._lock
        if lock is None:
            made = ForkSafeLock(self.lock_timeout, reentrant=True)
            lock = self.__dict__.setdefault("_lock", made)
        return lock

    @property
    def waiting(self) -> list[object]:
        """Threads blocked now waiting for a re-login (``Lock(waiter=True)``)."""
        waiting = self._waiting
        if waiting is None:
            waiting = self.__dict__.setdefault("_waiting", [])
        return waiting

    @property
    def waiters(self) -> int:
        """How many threads are blocked now waiting for a re-login."""
        waiting = self._waiting
        return 0 if waiting is None else len(waiting)

    def template(self, snap: Snapshot, who: Identity) -> RequestTemplate:
        """The fast-path request template of ``snap``'s host and tokens as ``who`` (made once
        per session generation and Bearer token, see :mod:`session_fsm.fast_send`)."""
        held = self._template
        if held is not None:
            host, token, sent_as = held[0]
            if token is snap.session_token and sent_as is who and host is snap.host:
                return held[1]
        key = (snap.host, snap.session_token, who)
        token = snap.session_token
        assert token is not None  # requests are sent with Authenticated snapshots
        template = RequestTemplate.trading(self.wire, snap.host, who, token)
        self._template = (key, template)
        return template

    def run(self, flow: fx.Flow[T], send: SendFn | None = None, value: Any = None) -> T:
        """Run ``flow`` to its end (``value``: the result of the effect it last yielded);
        ``send`` performs its trading :class:`~session_fsm.core.effects.Send` effects."""
        steps = fx.Steps(flow, value)
        held = steps.held
        try:
            for effect in steps:
                try:
                    steps.value = self.perform(effect, held, send)
                except BaseException as exc:  # thrown into the flow (interrupts too)
                    steps.error = exc
            return steps.result  # type: ignore[no-any-return]
        finally:
            for _, release in reversed(held):  # a flow closed half-way: nothing stays held
                release()

    # --- effects ---------------------------------------------------------------------------------

    def perform(self, effect: Any, held: list[Held], send: SendFn | None) -> Any:
        """Perform one effect (see :mod:`session_fsm.core.effects`)."""
        kind = type(effect)
        if kind is SessionCall:
            return self.wire.exchange(effect)
        if kind is fx.Send:
            assert send is not None, "a trading request needs a send function"
            return send(effect)
        if kind in _STORE_OPS or isinstance(effect, fx.StoreOp):
            return effect.apply(self.store)
        if kind is fx.Lock:
            return self._take(effect, held)
        if kind is fx.Unlock:
            release(held, None)()
            return None
        if kind is fx.StoreLock:
            manager = self.store.lock(effect.key, effect.timeout)
            if not manager.__enter__():
                manager.__exit__(None, None, None)
                return False
            held.append((effect.key, functools.partial(manager.__exit__, None, None, None)))
            return True
        if kind is fx.StoreUnlock:
            release(held, effect.key)()
            return None
        if kind is fx.ReadAnswer:
            response: requests.Response = effect.reply.handle
            seal_response(response)  # an error may follow: never our tokens with it
            return answer(Call.TRADING, response, self.wire.config.max_answer_bytes)
        if kind is fx.Ask:
            return produce(effect.provider, effect.what)
        if kind is fx.Discard:
            response = effect.reply.handle
            # read (at most the cap) so the connection returns to the pool
            read_capped(response, self.wire.config.max_answer_bytes)
            response.close()
            return None
        raise TypeError(f"no driver for effect {kind.__name__}")

    def _take(self, effect: fx.Lock, held: list[Held]) -> bool:
        lock = self.lock
        if not effect.wait:
            got = lock.acquire(blocking=False)
        elif lock.acquire(blocking=False):
            got = True
        elif effect.waiter:
            me = object()
            self.waiting.append(me)
            try:
                got = lock.acquire(timeout=effect.timeout)
            finally:
                self.waiting.remove(me)
        else:
            got = lock.acquire(timeout=effect.timeout)
        if got:
            held.append((None, lock.release))
        return got
