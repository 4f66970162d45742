"""The adapter under the Wire: the last host check before bytes leave, and a total deadline.

:class:`GuardedAdapter` is a requests ``HTTPAdapter`` that

- checks the prepared request's URL against the allow-list as its first act, so no later
  rewrite (a replay after re-login, a hook, a caller's own ``requests`` code) can send the
  session's headers or body to a host that was not checked;
- bounds each call, connect plus the whole body, retries and their waits included, by a
  total deadline: a server that drips its answer a byte at a time cannot hold a call past it.
  Per-read timeouts cannot do that, as every byte resets them. A streamed body
  (``stream=True``, as the session calls read theirs) stays under the deadline until its
  connection is released (read to the end, or the response closed).

The deadline is kept by one watchdog thread per process: when a call passes its deadline, the
watchdog shuts down that call's socket, which ends any read or write blocked on it; the
adapter then raises :class:`DeadlineExceeded` (a ``requests.Timeout``). A retry or a
``Retry-After`` wait that would end past the deadline is not started (see
:meth:`~session_fsm.retry.CappedRetry.increment`). Not bounded: the name lookup, which only the
connect timeout's per-address attempts limit.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Timeout


class DeadlineExceeded(requests.Timeout):
    """A call passed its total deadline (the Wire raises RequestTimeout for it)."""


class Call:
    """One call's deadline (monotonic seconds) and the connection it is using now."""

    __slots__ = ("conn", "deadline", "done", "expired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: Any = None
        self.expired = False  # past the deadline, or given up so as not to pass it
        self.done = False

    def expire(self) -> None:
        """Mark the call expired and shut down its socket (ends blocked reads and writes)."""
        self.expired = True
        sock = getattr(self.conn, "sock", None)
        raw = sock if isinstance(sock, socket.socket) else getattr(sock, "socket", None)
        if isinstance(raw, socket.socket):
            with contextlib.suppress(OSError):  # already closed
                # the socket layer's own shutdown: no TLS close_notify from this thread
                socket.socket.shutdown(raw, socket.SHUT_RDWR)


_local = threading.local()


def current_call() -> Call | None:
    """The call this thread is sending, if it goes through a GuardedAdapter."""
    call: Call | None = getattr(_local, "call", None)
    return call


class _Watchdog:
    """One thread per process that expires calls at their deadlines."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Taken directly on the hot path (a C-level context manager, not the Condition's)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, Call]] = []
        self._order = itertools.count()
        self._pid = 0  # the process whose thread serves the heap (none yet)
        self._until = math.inf  # when the thread wakes next (inf: when told)

    def watch(self, call: Call) -> None:
        with self._lock:
            if self._pid != os.getpid():  # first call in this process (or in a forked child)
                self._heap.clear()
                threading.Thread(target=self._run, name="session_fsm-deadline", daemon=True).start()
                self._pid = os.getpid()
            heap = self._heap
            while heap and heap[0][2].done:  # calls that ended before their deadline leave
                heapq.heappop(heap)  # (oldest first: the heap holds the calls in flight)
            heapq.heappush(heap, (call.deadline, next(self._order), call))
            if call.deadline < self._until:  # the thread would wake too late for this one
                self._cond.notify()

    def finish(self, call: Call) -> None:
        with self._lock:  # after this, the watchdog never touches the call's socket
            call.done = True
            call.conn = None  # (the next watch() takes it off the heap: not the connection)

    def _run(self) -> None:
        cond, heap = self._cond, self._heap
        with cond:
            while True:
                while heap and heap[0][2].done:
                    heapq.heappop(heap)
                if not heap:
                    self._until = math.inf
                    cond.wait()
                    continue
                self._until = heap[0][0]
                wait = self._until - time.monotonic()
                if wait > 0:
                    cond.wait(wait)
                    continue
                heapq.heappop(heap)[2].expire()


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):  # the parent's thread and its lock do not exist in a child
    os.register_at_fork(after_in_child=_WATCHDOG._reset)


class _Watched:
    """Connection mix-in: the current call learns which connection it uses."""

    def connect(self) -> None:
        _attach(self)
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)  # type: ignore[misc]


def _attach(conn: Any) -> None:
    call: Call | None = getattr(_local, "call", None)  # (current_call(), on every request)
    if call is not None:
        if call.expired:  # a retry after the deadline: urllib3 counts it and gives up
            raise TimeoutError("the call's deadline has passed")
        call.conn = conn


@functools.cache
def _watched_pool(pool_cls: type[Any]) -> type[Any]:
    conn_cls = pool_cls.ConnectionCls
    watched = type(f"Watched{conn_cls.__name__}", (_Watched, conn_cls), {})
    return type(f"Watched{pool_cls.__name__}", (pool_cls,), {"ConnectionCls": watched})


def _watch_pools(manager: Any) -> None:
    classes = manager.pool_classes_by_scheme
    manager.pool_classes_by_scheme = {k: _watched_pool(v) for k, v in classes.items()}


def _bounded(timeout: Any, limit: float) -> Any:
    """``timeout`` (requests' forms) with each part at most ``limit`` seconds."""
    if isinstance(timeout, Timeout):
        return timeout  # given as urllib3's own object: taken as it is
    if isinstance(timeout, tuple):
        connect, read = timeout
        return (limit if connect is None else min(connect, limit),
                limit if read is None else min(read, limit))  # fmt: skip
    return limit if timeout is None else min(timeout, limit)


def _watch_body(response: requests.Response, call: Call) -> bool:
    """Keep ``call``'s deadline on the body of a streamed ``response`` until its connection is
    released (read to the end, or closed); True when it is kept."""
    raw = response.raw
    release = getattr(raw, "release_conn", None)
    if release is None:
        return False

    def released() -> None:
        _WATCHDOG.finish(call)  # first: the connection may go back to the pool
        release()

    raw.release_conn = released  # type: ignore[method-assign]
    setattr(response, DEADLINE_ATTRIBUTE, call)
    return True


#: The attribute of a streamed response holding its :class:`Call` (see :func:`body_expired`).
DEADLINE_ATTRIBUTE = "_session_fsm_call"


def body_expired(response: requests.Response) -> bool:
    """Whether reading the body of a streamed ``response`` passed the call's deadline."""
    call = getattr(response, DEADLINE_ATTRIBUTE, None)
    return isinstance(call, Call) and call.expired


class GuardedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that checks each request's host last and bounds it by a deadline.

    ``check(url)`` raises for a URL that must not be sent to; ``deadline`` is in seconds.
    """

    def __init__(self, check: Callable[[str], None], deadline: float, **kwargs: Any) -> None:
        self._check = check
        self._deadline = deadline
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        made = proxy not in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **kwargs)
        if made:
            _watch_pools(manager)
        return manager

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        self._check(request.url or "")
        deadline = self._deadline
        call = Call(time.monotonic() + deadline)
        outer, _local.call = current_call(), call
        _WATCHDOG.watch(call)
        watched = False
        try:
            response = super().send(
                request, stream, _bounded(timeout, deadline), verify, cert, proxies
            )
            if not stream:
                _ = response.content  # the whole body, within the deadline
            else:  # the body is read later: the deadline holds until it is released
                watched = _watch_body(response, call)
            return response
        except Exception:
            if not call.expired:
                raise
        finally:
            if not watched:
                _WATCHDOG.finish(call)
            _local.call = outer
        # Raised outside the handler: the error chains to nothing (the request, its headers and
        # body stay out of it).
        raise DeadlineExceeded(f"the call passed its deadline of {deadline:g}s")
