"""What every session shows without I/O, whichever driver runs it: :class:`SessionView`.

``KSSession`` (threads) and ``AsyncKSSession`` (asyncio) are a SessionView plus a driver: the
readers (``state``, ``snapshot()``, ``history``, ``diagram()``...), the observers
(``on_transition``, ``on_request``) and the construction of the core are written once, here.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Callable
from typing import Any, NoReturn, overload

from .. import validation
from ..config import SessionConfig, check_wire_options
from ..credentials import Credentials
from ..hosts import configured_host, is_loopback
from ..masking import mask_url
from ..table import State
from .calls import Identity
from .engine import Callback, SessionCore
from .machine import may
from .snapshot import Snapshot, TransitionRecord

#: ``hook(session, outcome)`` after each ``session.request``: ``"ok"`` or the error class name.
RequestHook = Callable[[Any, str], None]


def _new_id_prefix() -> None:
    """A random prefix per process (made again in a forked child): with the counter, session
    ids are unique across processes and restarts, so one log of several runs stays apart."""
    global _id_prefix, _ids
    _id_prefix, _ids = os.urandom(4).hex(), itertools.count(1)


_id_prefix, _ids = "", itertools.count(1)
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


class _CoreAtFirstUse:
    """``session._core``: made at the session's first use, not with the session.

    A session made and never used is then one object for the garbage collector, not three (it,
    its core and its snapshot): a process that makes 100,000 sessions does not pay CPython's
    full collections for objects nobody has used yet. A non-data descriptor: once made, the
    core is an ordinary attribute of the session, so the hot path reads it as any other. Two
    threads meeting here both get the first core stored (``dict.setdefault``)."""

    @overload
    def __get__(self, view: None, owner: type[Any]) -> _CoreAtFirstUse: ...
    @overload
    def __get__(self, view: SessionView, owner: type[Any]) -> SessionCore: ...
    def __get__(self, view: SessionView | None, owner: type[Any]) -> SessionCore | _CoreAtFirstUse:
        if view is None:
            return self
        made = SessionCore(
            view._credentials, view._origin, view._config, session_id=view._session_id,
            owner=view, allowed=view._allowed, clock=view._clock, logger=view._logger,
            on_transition=view._callbacks,
        )  # fmt: skip
        core: SessionCore = view.__dict__.setdefault("_core", made)
        return core


@functools.lru_cache(maxsize=64)
def _allowed(domains: tuple[str, ...], loopback: bool) -> tuple[tuple[str, ...], bool]:
    """The allow-list as the core holds it: one tuple for every session of one setting (an
    immutable value shared, not one more object per session)."""
    return domains, loopback


class SessionView:
    """The readers and observers of a session (see the module docstring). Reading never
    blocks and never does I/O: it is the core's current snapshot."""

    _core = _CoreAtFirstUse()
    _request_hooks: list[RequestHook] | None = None
    # What the core is made of, checked by _configure. Kept on the session one by one, not
    # in an object of their own (that object would be one more for the garbage collector).
    _credentials: Credentials
    _origin: str
    _config: SessionConfig
    _allowed: tuple[tuple[str, ...], bool]
    _clock: Callable[[], float]
    _logger: Any
    _callbacks: list[Callback] | None
    _session_id: str

    def _configure(
        self,
        credentials: Credentials,
        host: str,
        wire_config: Any,
        options: dict[str, Any],
        *,
        clock: Callable[[], float] = time.time,
        logger: Any = None,
        on_transition: Callback | list[Callback] | None = None,
    ) -> SessionConfig:
        """Check the new session's settings and keep what its core is made of; returns its
        config. Everything is checked here, at construction (with a given wire's
        ``wire_config``, options the wire would drop raise ConfigurationError; the host is
        checked against the allow-list); the core itself is made at first use."""
        validation.instance("credentials", credentials, Credentials)
        validation.instance("host", host, str)
        validation.callable_("clock", clock)
        config = SessionConfig.from_options(options)
        if wire_config is None:
            wire_config = config.wire_config()
        elif options:
            check_wire_options(options, wire_config)
        allowed = _allowed(tuple(wire_config.allowed_domains), bool(wire_config.allow_loopback))
        self._origin = configured_host(host, *allowed)
        if allowed[1] and not is_loopback(self._origin):
            # A session on a real host never goes to loopback: an init redirect or a stored
            # host there (a hostile answer, a foreign writer) would hand its password, access
            # code and tokens, in plain http, to whatever listens on this machine.
            allowed = _allowed(allowed[0], False)
        self._credentials, self._config, self._allowed = credentials, config, allowed
        self._clock, self._logger = clock, logger
        self._callbacks = None
        if on_transition is not None:
            self._callbacks = validation.each_callable("on_transition", on_transition)
        self._session_id = f"{_id_prefix}-{next(_ids)}"
        return config

    def __copy__(self) -> NoReturn:
        raise TypeError(
            f"a {type(self).__name__} cannot be copied: a copy would share this session's state "
            "or split it under one session id; make another session with the same arguments, "
            "or share this one"
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        self.__copy__()

    @property
    def session_id(self) -> str:
        """Unique across processes and restarts: ``<8 random hex digits>-<n>``."""
        return self._session_id

    @property
    def credentials(self) -> Credentials:
        """The credentials the session logs in with."""
        return self._credentials

    @property
    def config(self) -> SessionConfig:
        """The session's settings."""
        return self._config

    @property
    def origin(self) -> str:
        """The configured API host (before any redirect)."""
        return self._origin

    @property
    def state(self) -> State:
        """The current state (never blocks)."""
        return self._core.snap.state

    def snapshot(self) -> Snapshot:
        """The whole state (state, host, tokens, generations, cool-down, refresh) as one
        immutable value."""
        return self._core.snap

    @property
    def generation(self) -> int:
        """How many session tokens this session has had (0: never authenticated)."""
        return self._core.snap.generation

    @property
    def history(self) -> tuple[TransitionRecord, ...]:
        """Recent attempted transitions, oldest first (bounded by ``history_size``)."""
        h = self._core.history
        return tuple(h) if h is not None else ()

    @property
    def _log(self) -> Any:
        return self._core.log

    def identity(self) -> Identity:
        """Who the session calls as (carries the current Bearer token as a Secret)."""
        who = self._core.snap.who
        assert who is not None
        return who

    def store_key(self) -> str:
        """The key this session is stored under (per origin host and userid)."""
        return self._core.key

    def deadlines(self, snap: Snapshot) -> tuple[float, float] | None:
        """(soft, hard) proactive re-login times of ``snap`` (None when off)."""
        return self._core.deadlines(snap)

    def may(self, trigger: str) -> bool:
        """Whether ``trigger`` would be attempted now: an edge exists and its guards hold. Pure."""
        return may(self._core, self._core.snap, trigger)

    def on_transition(self, callback: Callback) -> Callback:
        """Register ``callback(session, record)``, called after every attempted transition.

        Callbacks run where the transition was made (thread or task); an exception in one is
        logged and swallowed. Returns the callback, so it can be used as a decorator.
        """
        core = self._core
        core.callbacks = [*(core.callbacks or ()), callback]
        return callback

    def on_request(self, hook: RequestHook) -> RequestHook:
        """Register ``hook(session, outcome)``, called after every ``request`` (and the verbs)
        where it was made: ``outcome`` is ``"ok"`` or the raised error's class name
        (``"other"`` for a non-library exception). Requests sent with ``auth=session.auth`` are
        not seen. An exception in a hook is logged and swallowed. Returns the hook."""
        self._request_hooks = [*(self._request_hooks or ()), hook]
        return hook

    def _told(self, outcome: BaseException | None) -> None:
        """Tell the request hooks how a request ended (``None``: it succeeded)."""
        hooks = self._request_hooks
        if not hooks:
            return
        if outcome is None:
            name = "ok"
        else:
            name = type(outcome).__name__ if _is_ks_error(outcome) else "other"
        for hook in hooks:  # (the core's ``observe``, inline: this runs on every request)
            try:
                hook(self, name)
            except Exception as exc:
                self._core.observer_failed(hook, exc, "request_hook")

    def diagram(self) -> str:
        """Mermaid of the machine, current state highlighted, last transition marked."""
        from ..diagrams import mermaid

        h = self._core.history
        return mermaid(highlight=self._core.snap.state, last=h[-1] if h else None)

    def __repr__(self) -> str:
        s = self._core.snap
        return (
            f"{type(self).__name__}(id={self.session_id}, userid={self.credentials.userid!r}, "
            f"state={s.state.value}, host={mask_url(s.host)!r}, generation={s.generation})"
        )


def _is_ks_error(exc: BaseException) -> bool:
    from ..errors import KSError

    return isinstance(exc, KSError)


__all__ = ["RequestHook", "SessionView"]
