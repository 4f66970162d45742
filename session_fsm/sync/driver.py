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

from ..answers import answer, seal_response
from ..core import effects as fx
from ..core.calls import Identity, SessionCall
from ..core.effects import Held, release
from ..core.snapshot import Snapshot
from ..errors import Call
from ..fast_send import RequestTemplate
from ..locks import ForkSafeLock
from ..stores import TokenStore
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
        held: list[Held] = []
        error: BaseException | None = None
        try:
            while True:
                done, effect = fx.advance(flow, value, error)
                if done:
                    return effect  # type: ignore[no-any-return]
                value, error = self.attempt(effect, held, send)
        finally:
            error = None  # no frame of ours keeps the error (and what it references) alive
            for _, release in reversed(held):  # a flow closed half-way: nothing stays held
                release()

    def attempt(
        self, effect: Any, held: list[Held], send: SendFn | None
    ) -> tuple[Any, BaseException | None]:
        """Perform ``effect``: (its result, None), or (None, the error to throw into the
        flow, cancellation and interrupts too, so the flow's ``finally`` clauses run)."""
        try:
            return self.perform(effect, held, send), None
        except BaseException as exc:
            return None, exc

    # --- effects ---------------------------------------------------------------------------------

    def perform(self, effect: Any, held: list[Held], send: SendFn | None) -> Any:
        """Perform one effect (see :mod:`session_fsm.core.effects`)."""
        if isinstance(effect, fx.StoreOp):
            method = getattr(self.store, effect.op, None)
            return None if method is None else method(*effect.args())
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
        if kind is fx.StoreLock:
            manager = self.store.lock(effect.key, effect.timeout)
            if not manager.__enter__():
                manager.__exit__(None, None, None)
                return False
            held.append((effect.key, functools.partial(manager.__exit__, None, None, None)))
            return True
        if kind in (fx.Unlock, fx.StoreUnlock):
            release(held, getattr(effect, "key", None))()
            return None
        raise TypeError(f"no driver for effect {kind.__name__}")

    def _lock(self, effect: fx.Lock, held: list[Held]) -> bool:
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
