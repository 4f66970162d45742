"""The async wire's connection pool: one ``aiohttp.ClientSession`` made for a process and an
event loop, with the environment read once (proxies, CA bundle) and the TLS context built off
the loop, and what is worked out once per pool (:class:`Pool`: the attempts' timeouts, the
deadlines' timer, each origin's proxy, the sessions that send an identity's headers by
default). :class:`~session_fsm.aio.wire.AsyncWire` decides when a pool is made and whose it is
(:meth:`~session_fsm.aio.wire.AsyncWire._pool`); this module makes one."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING

import aiohttp
import aiohttp.abc
from requests.utils import select_proxy
from urllib3.util.retry import Retry

from ..environment import EnvironmentSettings, _origin
from ..secret import Secret
from ..wire import USER_AGENT, WireConfig
from .deadline import Deadlines

if TYPE_CHECKING:
    from .template import TradingTemplate

#: aiohttp rounds timeouts above this many seconds up to whole seconds; ours are kept exact.
NO_CEIL = 1e9
#: How many URLs a wire or a pool remembers a verdict for (allow-list, proxy) before starting
#: afresh: a bot calls a handful of paths, and order ids vary the rest.
REMEMBERED_MAX = 1024

#: Pools of another process (a forked parent's) or another event loop: kept, never touched.
OTHERS_POOLS: list[aiohttp.ClientSession] = []

#: This process's id, kept current in a forked child: the hot path reads it instead of calling
#: ``os.getpid()`` (a system call) on every request.
PROCESS = [os.getpid()]


def _forked() -> None:
    PROCESS[0] = os.getpid()


if hasattr(os, "register_at_fork"):  # POSIX (elsewhere there is no fork)
    os.register_at_fork(after_in_child=_forked)


class Pool:
    """One pool (``http``, made by :func:`new_pool` for ``loop`` in process ``pid``) and what
    is worked out once for it: the attempts' ``timeout``, the calls' ``deadlines`` (one loop
    timer), the statuses a retry can say yes to (``may_retry``), each origin's proxy and the
    sessions that send an identity's plain headers by default (:meth:`sibling`)."""

    __slots__ = (
        "deadlines",
        "env",
        "http",
        "loop",
        "may_retry",
        "pid",
        "proxy_of",
        "siblings",
        "timeout",
    )  # fmt: skip

    def __init__(
        self,
        http: aiohttp.ClientSession,
        env: EnvironmentSettings,
        config: WireConfig,
        retries: tuple[Retry, ...],
    ) -> None:
        self.http, self.env = http, env
        self.loop = asyncio.get_running_loop()
        self.pid = os.getpid()
        self.timeout = timeout_of(config)
        self.deadlines = Deadlines(self.loop)
        # The statuses urllib3's ``Retry.is_retry`` can say yes to under the wire's retries
        # (their ``status_forcelist``s and the ``Retry-After`` statuses): any other is final.
        self.may_retry = frozenset(
            {*(s for r in retries for s in r.status_forcelist or ()),
             *Retry.RETRY_AFTER_STATUS_CODES}
        )  # fmt: skip
        self.proxy_of: dict[str, Secret | None] = {}
        self.siblings: dict[tuple[tuple[str, str], ...], aiohttp.ClientSession] = {}

    def here(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether this is the pool of ``loop`` in this process."""
        return self.loop is loop and self.pid == os.getpid()

    def parts(self) -> list[aiohttp.ClientSession]:
        """The pool's sessions, its siblings first (closing ``http`` closes the connections)."""
        return [*self.siblings.values(), self.http]

    def sibling(self, template: TradingTemplate) -> aiohttp.ClientSession:
        """The session of this pool that sends ``template``'s plain headers by default (made at
        first use, one per identity), kept on the template for next time."""
        key = tuple(template.headers.items())
        sender = self.siblings.get(key)
        if sender is None:
            sender = self.siblings[key] = sibling(self.http, template.headers)
        template.pool, template.sender = self.http, sender
        return sender

    def proxy(self, url: str) -> Secret | None:
        """The environment's proxy for ``url`` (``NO_PROXY`` applied), looked up once per
        origin (and kept by URL too: the hot path's URLs are the same strings)."""
        proxy_of = self.proxy_of
        try:
            return proxy_of[url]
        except KeyError:
            pass
        origin = _origin(url)
        try:
            found = proxy_of[origin]
        except KeyError:
            found = self._find_proxy(url)
        if len(proxy_of) >= REMEMBERED_MAX:
            proxy_of.clear()
        proxy_of[url] = proxy_of[origin] = found
        return found

    def _find_proxy(self, url: str) -> Secret | None:
        proxies: dict[str, str] | None = self.env.proxies(url)
        proxy = select_proxy(url, proxies) if proxies else None
        found = None if proxy is None else Secret(proxy)
        proxies = proxy = None  # (a proxy's URL may carry a password)
        return found


def timeout_of(config: WireConfig) -> aiohttp.ClientTimeout:
    """The timeouts of each attempt under ``config`` (the pool's sessions send with them by
    default): connect and read; the call's total is the wire's deadline."""
    connect, read = config.timeout
    return aiohttp.ClientTimeout(
        total=None, sock_connect=connect, sock_read=read, ceil_threshold=NO_CEIL
    )


async def new_pool(config: WireConfig) -> tuple[aiohttp.ClientSession, EnvironmentSettings]:
    """A pooled session for ``config`` and the environment it read. Raises OSError for an
    unusable CA bundle (``verify=`` or the environment's)."""
    env = EnvironmentSettings()
    tls = await _tls(env.verify(config.verify))
    connector = aiohttp.TCPConnector(
        limit=config.pool_maxsize, ssl=tls, timeout_ceil_threshold=NO_CEIL
    )
    return _client(connector, {}, None, timeout_of(config), owner=True), env


def sibling(http: aiohttp.ClientSession, headers: Mapping[str, str]) -> aiohttp.ClientSession:
    """A session on ``http``'s connections and cookie jar (``http`` owns them; closing it
    closes this one) that sends ``headers`` by default: aiohttp merges a request's own
    headers into its session's one by one, so headers common to many requests cost less
    there."""
    assert http.connector is not None  # an open pool
    return _client(http.connector, headers, http.cookie_jar, http.timeout, owner=False)


def _client(
    connector: aiohttp.BaseConnector, headers: Mapping[str, str],
    cookie_jar: aiohttp.abc.AbstractCookieJar | None, timeout: aiohttp.ClientTimeout, *,
    owner: bool,
) -> aiohttp.ClientSession:  # fmt: skip
    http = aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,  # each attempt's (the wire's deadline bounds the whole call)
        connector_owner=owner,
        cookie_jar=cookie_jar,
        headers={"User-Agent": USER_AGENT, **headers},
        trust_env=False,  # the environment is read once, into env
        raise_for_status=False,
    )
    # aiohttp resends an idempotent request once, on its own, when a kept-alive connection
    # turns out closed; the retry policy is the one retry layer (it retries that case too,
    # within its budget and the deadline), as on the sync wire.
    if hasattr(http, "_retry_connection"):
        http._retry_connection = False
    return http


async def _tls(verify: bool | str) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl=`` for ``verify``: its own verified context for True, no checks for
    False, or a context trusting the CA bundle file or directory (read in a worker thread:
    file I/O never runs on the event loop). Raises OSError for an unusable bundle."""
    if verify is True or verify is False:
        return verify
    return await asyncio.get_running_loop().run_in_executor(None, _context, verify)


def _context(bundle: str) -> ssl.SSLContext:
    if os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)
