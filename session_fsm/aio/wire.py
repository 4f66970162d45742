"""The asyncio transport: the four KS session calls and authorised trading requests over
``aiohttp``, with the configuration and every decision of the sync :class:`~session_fsm.Wire`.

Chosen by measurement (``benchmarks/async_clients.py``): on the benchmark machine a plain
authenticated GET with JSON parsing costs about a third of ``httpx.AsyncClient``'s through
``aiohttp.ClientSession``, and 1,000 concurrent GETs all succeed through aiohttp's queueing pool
where httpx's default limits fail them with ``PoolTimeout``.

What is shared with the sync wire, not restated here: the :class:`~session_fsm.wire.WireConfig`,
each call's request (:class:`~session_fsm.core.calls.SessionCall`,
:func:`~session_fsm.answers.trading_call`), the one place secrets are revealed
(:class:`~session_fsm.answers.CallAuth`), the reading of answers
(:func:`~session_fsm.answers.answer_of`), the retry decisions
(:class:`~session_fsm.retry.CappedRetry`, whose waits are awaited), the allow-list
(:func:`~session_fsm.wire.check_url`), the environment read once and the errors of failed
transport (:func:`~session_fsm.answers.transport_failure`).

What is the async wire's own: driving one call's attempts with ``await``, telling aiohttp's
exceptions apart, and the pool (made by :mod:`session_fsm.aio.pool`): one
``aiohttp.ClientSession`` per process and event loop, made at the first call (a forked child, or
another loop, makes its own and leaves the other's untouched); its ``pool_maxsize`` connections
are shared by all tasks, and a request that finds them all busy waits its turn (under the call's
deadline) instead of failing. Each pool keeps its calls' deadlines with one loop timer
(:mod:`session_fsm.aio.deadline`), and works out once what every attempt would otherwise redo
(the attempts' timeouts, each origin's proxy); the session's hot path sends with a per-
generation template (:mod:`session_fsm.aio.template`) through :meth:`AsyncWire.send_trading`.

It never follows a redirect: a 3xx answer is returned as it is, and every URL it sends to,
whoever computed it, is checked against the allow-list just before it is sent.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..answers import CallAuth, trading_call
from ..core.calls import Answer, Identity, SessionCall, result_of
from ..errors import Call
from ..secret import Secret
from ..wire import WireConfig, check_url
from .attempt import send as send_call
from .pool import OTHERS_POOLS, REMEMBERED_MAX, Pool, new_pool
from .response import AsyncResponse, session_answer
from .template import TradingTemplate

if TYPE_CHECKING:  # the typed session calls' annotations
    from .. import models

T = TypeVar("T")

#: RetryPolicy's default sleeper, which the async wire replaces by ``asyncio.sleep``.
_TIME_SLEEP = time.sleep


class AsyncWire:
    """The asyncio transport for one or many sessions. Cheap to create; connects on first call.

    Configured by the same :class:`~session_fsm.wire.WireConfig` as the sync wire: timeouts
    (connect, read), the total ``deadline`` of a call (connect, queueing for a connection, the
    whole answer, retries and their waits), the retry policy, ``verify``, the allow-list,
    ``pool_maxsize`` and ``max_answer_bytes``. Proxy settings and the CA bundle are read from
    the environment once per pool (see :mod:`session_fsm.environment`); ``~/.netrc`` never.

    The retry policy's ``sleeper`` is honoured when it is not ``time.sleep`` (tests inject a
    recorder; one that returns an awaitable is awaited); ``time.sleep`` itself becomes
    ``asyncio.sleep``, so no retry wait blocks the event loop.
    """

    def __init__(self, config: WireConfig | None = None) -> None:
        self.config = config or WireConfig()
        #: The pool of the process and event loop that last sent (see _pool), or None.
        self._current: Pool | None = None
        self._making: asyncio.Future[Pool] | None = None
        self._making_pid = 0
        self._trading_retry = self.config.retry.for_trading()
        self._session_retry = self.config.retry.for_session_calls()
        # The URLs the allow-list passed, each with the WireConfig it passed under (the verdict
        # is a function of the URL and the config's allow-list alone); see _check.
        self._passed: dict[str, WireConfig] = {}

    def __repr__(self) -> str:
        return f"AsyncWire(timeout={self.config.timeout})"

    async def __aenter__(self) -> AsyncWire:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the pool ------------------------------------------------------------------------------

    async def _pool(self) -> Pool:
        """The pool of this process and event loop (made on first use)."""
        loop = asyncio.get_running_loop()
        current = self._current
        if current is not None and current.here(loop):
            return current
        making = self._making
        if making is not None and making.get_loop() is loop and self._making_pid == os.getpid():
            try:
                return await asyncio.shield(making)  # another task is making it: one pool
            except asyncio.CancelledError:
                if not making.cancelled():
                    raise  # this task was cancelled
                return await self._pool()  # the maker was: make it here
        if current is not None:  # another process's or loop's: theirs to close
            OTHERS_POOLS.extend(current.parts())
            self._current = None
        self._making, self._making_pid = loop.create_future(), os.getpid()
        making = self._making
        try:
            http, env = await new_pool(self.config)
        except BaseException as exc:
            self._making = None
            if isinstance(exc, asyncio.CancelledError):
                making.cancel()  # a waiter makes the pool itself
            else:
                making.set_exception(exc)
                making.exception()  # retrieved: the waiters (if any) get it too
            raise
        pool = Pool(http, env, self.config, (self._trading_retry, self._session_retry))
        self._current, self._making = pool, None
        making.set_result(pool)
        return pool

    async def close(self) -> None:
        """Close this process's pooled connections (the wire may be used again afterwards;
        the next pool reads the environment again)."""
        pool, self._current = self._current, None
        if pool is None:
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and pool.here(loop):
            for http in pool.parts():  # (a sibling's close closes nothing of the pool's)
                await http.close()
        else:
            OTHERS_POOLS.extend(pool.parts())

    # --- sending -------------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: CallAuth | None = None,
        params: Any = None,
        json: Any = None,
        data: Any = None,
    ) -> AsyncResponse:
        """Send one request under the retry policy of trading paths (idempotent methods on
        429/5xx, dropped connections and read timeouts; a POST never on 5xx); return the
        whole answer whatever its status, or raise RequestTimeout/NetworkError/
        ConfigurationError/UnsafeRedirect. ``auth`` writes the call's secrets in."""
        options = {k: v for k, v in (("params", params), ("json", json), ("data", data))
                   if v is not None}  # fmt: skip
        retry = self._trading_retry
        return await self._send(method, url, headers, auth, retry, Call.TRADING, None, options)

    def send_trading(
        self, template: TradingTemplate, method: str, path: str, kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, AsyncResponse]:
        """:meth:`trading_request` to ``template.host + path`` with ``template``'s headers and
        auth (the session's hot path): ``kwargs`` are ``headers``, ``params``, ``json`` and
        ``data``. The coroutine of the one retry loop, without a frame of its own.

        Without headers of the caller's, the request goes through a session of the pool that
        sends the template's plain headers by default (see :func:`~session_fsm.aio.pool.
        sibling`): the same connections, cookie jar and headers sent, merged by aiohttp once
        per session instead of once per request."""
        url = template.urls.get(path) or template.url(path)
        options: dict[str, Any] = {}
        if kwargs:
            extra = kwargs.get("headers")
            options = {k: v for k, v in kwargs.items() if v is not None and k != "headers"}
            if extra:
                return self._send(method, url, {**template.headers, **extra}, template.auth,
                                  self._trading_retry, Call.TRADING, None, options)  # fmt: skip
        return self._send(method, url, None, template.auth, self._trading_retry, Call.TRADING,
                          None, options, template)  # fmt: skip

    #: The retry loop of one call and its tries (:func:`session_fsm.aio.attempt.send`).
    _send = send_call

    def _check(self, url: str, config: WireConfig) -> None:
        """The allow-list's check of ``url`` (UnsafeRedirect for a refused one); a URL that
        passes is remembered with ``config``, and asked again under any other config. A
        refusal is never remembered."""
        check_url(url, config)
        passed = self._passed
        if len(passed) >= REMEMBERED_MAX:  # a bot calls a handful of paths; order ids vary the rest
            passed.clear()
        passed[url] = config

    async def _wait(self, seconds: float) -> None:
        if seconds <= 0:  # as CappedRetry.sleep: no wait, and the sleeper is not called
            return
        sleeper = self.config.retry.sleeper
        if sleeper is _TIME_SLEEP:
            await asyncio.sleep(seconds)
            return
        result: Any = sleeper(seconds)
        if inspect.isawaitable(result):
            await result

    # --- the four session calls ----------------------------------------------------------------

    async def exchange(self, call: SessionCall) -> Answer:
        """Make one session call (the core's effect) and read its answer (at most
        ``max_answer_bytes``); the call's secrets are revealed only into the request sent."""
        method, path, headers, secrets, body = call.shape()
        cap = self.config.max_answer_bytes
        auth = CallAuth(call.who, secrets, body)
        response = await self._send(
            method, call.host + path, headers, auth, self._session_retry, call.call, cap, {}
        )
        return session_answer(call.call, response, cap)

    async def session_init(self, host: str, who: Identity) -> models.ResSessionInit:
        """GET session/init: headers userid, consumerKey, ip, appId."""
        result: models.ResSessionInit = result_of(
            await self.exchange(SessionCall(Call.INIT, host, who))
        )
        return result

    async def login_with_user_id(
        self, host: str, who: Identity, body: models.UserCredentials
    ) -> models.ResLogin:
        """POST session/login/userid with ``{"userid", "password"}``: the one-time token."""
        result: models.ResLogin = result_of(
            await self.exchange(SessionCall(Call.LOGIN, host, who, body))
        )
        return result

    async def generate_session2_fa(
        self, host: str, who: Identity, one_time_token: Secret, body: models.UserDetails
    ) -> models.ResSession2FA:
        """POST session/2FA/accesscode with the OTT header: the session token."""
        call = SessionCall(Call.TWO_FA, host, who, body, one_time_token)
        result: models.ResSession2FA = result_of(await self.exchange(call))
        return result

    async def session_logout(
        self, host: str, who: Identity, session_token: Secret
    ) -> models.ResLogout:
        """DELETE session/logout: invalidates ``session_token`` on the server."""
        call = SessionCall(Call.LOGOUT, host, who, token=session_token)
        result: models.ResLogout = result_of(await self.exchange(call))
        return result

    # --- trading -------------------------------------------------------------------------------

    async def trading_request(
        self,
        method: str,
        url: str,
        who: Identity,
        session_token: Secret,
        headers: Mapping[str, str] | None = None,
        *,
        params: Any = None,
        json: Any = None,
        data: Any = None,
    ) -> AsyncResponse:
        """Send one authorised trading request; the answer is returned whatever its status."""
        merged, auth = trading_call(who, session_token, headers)
        return await self.send(
            method, url, headers=merged, auth=auth, params=params, json=json, data=data
        )
