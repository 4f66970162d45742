"""One call on the async wire: its retry loop and, inline, each try (send it through the pool,
read the answer, capped for a session call), aiohttp's failures turned into
:class:`~session_fsm.aio.response.Failure` values that the retry policy decides on.

:func:`send` is :meth:`AsyncWire._send <session_fsm.aio.wire.AsyncWire._send>` (a method
written here, so the wire's module keeps to its own job). The tries run in its own frame, not
in a coroutine of their own: one frame, one send and one return fewer per request on the hot
path (:mod:`session_fsm.aio.template`).

The call's secrets are revealed here and only here, into the request sent, and every local that
held them is cleared before the try ends, whatever ends it: no error raised through a frame of
this module carries a token in its locals (the try's own failures are returned as values, so
no frame that held the revealed headers, or aiohttp's request, which keeps a copy, is on a
traceback; a cancellation or an interrupt, which passes through, leaves the frames below the
try with their locals cleared)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping, MutableMapping
from threading import get_ident
from typing import TYPE_CHECKING, Any

import aiohttp
from multidict import CIMultiDict
from urllib3 import exceptions as u3

from ..answers import (
    CallAuth,
    _too_large,
    forget_below,
    passed_deadline,
    tls_files_unusable,
    unsendable,
)
from ..errors import Call, KSError
from ..retry import CappedRetry
from .deadline import FINISHED, STATE, TASK, Deadlines
from .pool import NO_CEIL, PROCESS
from .response import AsyncResponse, Failure, failure, read_body, read_error_body

if TYPE_CHECKING:
    from .template import TradingTemplate
    from .wire import AsyncWire

#: ``Pool.proxy_of``'s answer for a URL not looked up yet.
_UNSEEN: Any = object()

#: The coroutine function of an aiohttp request. ``ClientSession.request`` wraps that coroutine
#: in a context manager made through a ``typing`` alias (a Python call, and an AttributeError
#: raised and caught inside it, on every request); a try awaits the coroutine itself, as that
#: manager's ``__await__`` does, and releases the answer itself, as its exit would. aiohttp's
#: public ``request`` where the coroutine function is not there.
_REQUEST: Any = getattr(aiohttp.ClientSession, "_request", None)
if not inspect.iscoroutinefunction(_REQUEST):  # pragma: no cover - every aiohttp 3.x has it
    _REQUEST = aiohttp.ClientSession.request


async def send(
    wire: AsyncWire,
    method: str,
    url: str,
    headers: Mapping[str, str] | None,
    auth: CallAuth | None,
    retry: CappedRetry,
    call: Call,
    cap: int | None,
    options: dict[str, Any],
    template: TradingTemplate | None = None,
) -> AsyncResponse:
    """The retry loop of one call (``options``: aiohttp's ``params``/``json``/``data``, none
    of them None), bounded by the deadline (see :mod:`session_fsm.aio.deadline`);
    ``template``: sent with its plain headers (``headers`` is then None)."""
    config = wire.config
    error: KSError
    pool = wire._current
    if (
        pool is not None
        and pool.pid == PROCESS[0]
        and getattr(pool.loop, "_thread_id", None) == get_ident()
    ):
        # This thread runs the pool's loop (asyncio's loops keep the thread running them in
        # ``_thread_id``; a thread runs one loop at a time): it is the running loop, found
        # without ``get_running_loop``'s process id check, a system call per request.
        loop = pool.loop
        deadline = loop.time() + config.deadline
    else:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.deadline
        if pool is None or pool.loop is not loop or pool.pid != PROCESS[0]:  # (Pool.here)
            try:
                pool = await wire._pool()
            except OSError as exc:  # the CA bundle (verify= or the environment's) is unusable
                error = tls_files_unusable(method, url, exc)
                raise error from None
    http = pool.http
    if template is not None:
        sender = template.sender
        if sender is None or template.pool is not http:
            sender = pool.sibling(template)
        http = sender
    watch = pool.deadlines.watch(deadline)
    expired = False
    try:
        while True:
            if wire._passed.get(url) is not config:  # at send time, before every attempt
                wire._check(url, config)
            timeout: aiohttp.ClientTimeout | None = None  # the pool's (its sessions' default)
            remaining = deadline - loop.time()
            if remaining <= 0:
                error = passed_deadline(method, url, config)
                break
            if watch is None:  # not in a task: aiohttp's own total timeout bounds it
                connect, read = config.timeout
                timeout = aiohttp.ClientTimeout(
                    total=remaining, sock_connect=connect, sock_read=read,
                    ceil_threshold=NO_CEIL,
                )  # fmt: skip
            # --- one try: it raises nothing it can avoid (only cancellation, and
            # ConfigurationError for a token HTTP cannot carry); every failure is a value
            sent: MutableMapping[str, str] | None = CIMultiDict(headers) if headers else None
            kwargs = options.copy() if options else {}
            r: Any = None
            secret: dict[str, str] | None = None
            body: bytes | None = None
            proxy: Any = pool.proxy_of.get(url, _UNSEEN)
            outcome: AsyncResponse | Failure
            try:
                if auth is not None:
                    secret, body = auth.reveal()  # (a new dict: sent as it is, if it can be)
                    if sent is None:
                        sent = secret
                    else:
                        sent.update(secret)
                    if body is not None:
                        kwargs["data"] = body
                if proxy is _UNSEEN:
                    proxy = pool.proxy(url)
                if proxy is not None:
                    kwargs["proxy"] = proxy.reveal()
                if timeout is not None:
                    kwargs["timeout"] = timeout
                try:
                    # Awaited, not ``async with``: the answer is released in ``finally``
                    # below (as the context manager's exit releases it), without its frames.
                    r = await _REQUEST(
                        http, method, url, headers=sent, allow_redirects=False, **kwargs
                    )
                    if cap is not None:
                        content = await read_body(r, cap)
                    elif 200 <= r.status < 300:
                        content = await r.read()
                    else:  # an error's answer: its fault code is all the core reads of it
                        content = await read_error_body(r, config.max_answer_bytes)
                    if content is None:
                        outcome = Failure(_too_large(call, r.status, cap or 0), None)
                    else:
                        outcome = AsyncResponse(
                            method, url, r.status, r.reason or "", r.headers, content
                        )
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    outcome = failure(method, url, exc, config, deadline)
                except ValueError:  # a header value HTTP cannot carry; its text may hold it
                    outcome = Failure(unsendable(method, url), None)
                except BaseException as exc:  # a cancellation (a timeout, a task group), an
                    forget_below(exc)  # interrupt: passed on, without aiohttp's locals
                    raise
            finally:  # whatever ends the try (cancellation too): no local keeps a secret
                if r is not None:
                    r.release()
                if sent is not None:
                    sent.clear()
                kwargs.clear()
                r = sent = secret = body = proxy = None
            # --- what follows it
            if isinstance(outcome, AsyncResponse):
                status = outcome.status
                if status not in pool.may_retry:  # (it holds every retry's forcelist)
                    return outcome  # Retry.is_retry says no to it, whatever the method
                has_retry_after = "Retry-After" in outcome.headers
                if not retry.is_retry(method, status, has_retry_after):
                    return outcome
                try:
                    retry = retry.increment(method, url, response=outcome)
                except u3.MaxRetryError:  # retries used up: the answer as it is
                    return outcome
                if retry.ends_past(deadline, loop.time(), outcome):
                    return outcome
                await wire._wait(retry._delay(outcome))
                continue
            if outcome.retryable is None:
                error = outcome.error
                break
            try:
                retry = retry.increment(method, url, error=outcome.retryable)
            except (u3.MaxRetryError, u3.HTTPError):  # not retried (used up, or this kind)
                error = outcome.error
                break
            if retry.ends_past(deadline, loop.time()):
                error = passed_deadline(method, url, config)
                break
            await wire._wait(retry._delay(None))
    except asyncio.CancelledError:
        if watch is None or not Deadlines.expired(watch):
            raise  # the task was cancelled (not by the deadline alone): passed on
        expired = True  # raised below, outside this handler: nothing chains to it
    finally:
        if watch is not None:
            watch[STATE], watch[TASK] = FINISHED, None
    if expired:
        error = passed_deadline(method, url, config)
    raise error

