"""Runs the core's flows: performs each effect with ``requests``, the token store and
``threading``, and sends the result back in (or throws the error in).

A flow that ends, however it ends, leaves no lock held: the flows release what they take in
``finally`` clauses (as effects), and the driver releases anything still held as a last
resort (a flow closed half-way).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import requests

from ..answers import answer, seal_response
from ..core import effects as fx
from ..core.calls import Identity, SessionCall
from ..core.snapshot import Snapshot
from ..errors import Call
from ..fast_send import RequestTemplate
from ..locks import ForkSafeLock
from ..stores import TokenStore, clear_cooldown, load_cooldown, save_cooldown
from ..wire import Wire

T = TypeVar("T")
SendFn = Callable[[fx.Send], fx.Reply]


class Driver:
    """The effects of one session, performed synchronously (shareable between threads)."""

    def __init__(self, wire: Wire, store: TokenStore, lock: ForkSafeLock) -> None:
        self.wire = wire
        self.store = store
        self.lock = lock
        #: Threads blocked now waiting for a re-login (``Lock(waiter=True)``).
        self.waiting: list[object] = []
        #: The request template of the newest (host, session token, identity), swapped whole.
        self._template: tuple[tuple[object, ...], RequestTemplate] | None = None

    def template(self, snap: Snapshot, who: Identity) -> RequestTemplate:
        """The fast-path request template of ``snap``'s host and tokens as ``who`` (made once
        per session generation and Bearer token, see :mod:`session_fsm.fast_send`)."""
        key = (snap.host, snap.session_token, who)
        held = self._template
        if held is not None and all(a is b for a, b in zip(held[0], key, strict=True)):
            return held[1]
        token = snap.session_token
        assert token is not None  # requests are sent with Authenticated snapshots
        template = RequestTemplate.trading(self.wire, snap.host, who, token)
        self._template = (key, template)
        return template

    def run(self, flow: fx.Flow[T], send: SendFn | None = None, value: Any = None) -> T:
        """Run ``flow`` to its end (``value``: the result of the effect it last yielded);
        ``send`` performs its trading :class:`~session_fsm.core.effects.Send` effects."""
        held: list[Any] = []
        error: BaseException | None = None
        try:
            while True:
                done, effect = fx.advance(flow, value, error)
                if done:
                    return effect  # type: ignore[no-any-return]
                error = None
                try:
                    value = self.perform(effect, held, send)
                except BaseException as exc:  # thrown into the flow, so its finally clauses run
                    value, error = None, exc
        finally:
            error = None  # no frame of ours keeps the error (and what it references) alive
            for release in reversed(held):  # a flow closed half-way: nothing stays held
                release()

    # --- effects ---------------------------------------------------------------------------------

    def perform(self, effect: Any, held: list[Any], send: SendFn | None) -> Any:
        kind = type(effect)
        if kind is SessionCall:
            return self.wire.exchange(effect)
        if kind is fx.Send:
            assert send is not None, "a trading request needs a send function"
            return send(effect)
        if kind is fx.ReadAnswer:
            response: requests.Response = effect.reply.handle
            seal_response(response)  # an error may follow: never our tokens with it
            return answer(Call.TRADING, response, self.wire.config.max_answer_bytes)
        if kind is fx.Discard:
            response = effect.reply.handle
            _ = response.content  # read the body so the connection returns to the pool
            response.close()
            return None
        if kind is fx.Lock:
            return self._lock(effect, held)
        if kind is fx.Unlock:
            held.remove(self.lock.release)
            self.lock.release()
            return None
        if kind is fx.StoreLock:
            return self._store_lock(effect, held)
        if kind is fx.StoreUnlock:
            for release in reversed(held):
                if getattr(release, "key", None) == effect.key:
                    held.remove(release)
                    release()
                    break
            return None
        store = self.store
        if kind is fx.Load:
            return store.load(effect.key)
        if kind is fx.Save:
            return store.save(effect.key, effect.record)
        if kind is fx.Delete:
            return store.delete(effect.key)
        if kind is fx.LoadCooldown:
            return load_cooldown(store, effect.key)
        if kind is fx.SaveCooldown:
            return save_cooldown(store, effect.key, effect.cooldown)
        if kind is fx.ClearCooldown:
            return clear_cooldown(store, effect.key)
        raise TypeError(f"no driver for effect {kind.__name__}")

    def _lock(self, effect: fx.Lock, held: list[Any]) -> bool:
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
            held.append(lock.release)
        return got

    def _store_lock(self, effect: fx.StoreLock, held: list[Any]) -> bool:
        manager = self.store.lock(effect.key, effect.timeout)
        got = bool(manager.__enter__())
        if not got:
            manager.__exit__(None, None, None)
            return False
        held.append(_Release(effect.key, manager))
        return True


class _Release:
    """Leaves a store lock's context manager (the driver's record of a held store lock)."""

    __slots__ = ("key", "manager")

    def __init__(self, key: str, manager: AbstractContextManager[bool]) -> None:
        self.key = key
        self.manager = manager

    def __call__(self) -> None:
        self.manager.__exit__(None, None, None)
