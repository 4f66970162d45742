"""The async wire's connection pool: one ``aiohttp.ClientSession`` made for a process and an
event loop, with the environment read once (proxies, CA bundle) and the TLS context built off
the loop. :class:`~session_fsm.aio.wire.AsyncWire` decides when a pool is made and whose it is
(:meth:`~session_fsm.aio.wire.AsyncWire._pool`); this module makes one."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping

import aiohttp
import aiohttp.abc

from ..environment import EnvironmentSettings
from ..wire import USER_AGENT, WireConfig

#: aiohttp rounds timeouts above this many seconds up to whole seconds; ours are kept exact.
NO_CEIL = 1e9


async def new_pool(config: WireConfig) -> tuple[aiohttp.ClientSession, EnvironmentSettings]:
    """A pooled session for ``config`` and the environment it read. Raises OSError for an
    unusable CA bundle (``verify=`` or the environment's)."""
    env = EnvironmentSettings()
    tls = await _tls(env.verify(config.verify))
    connector = aiohttp.TCPConnector(
        limit=config.pool_maxsize, ssl=tls, timeout_ceil_threshold=NO_CEIL
    )
    return _client(connector, {}, None, owner=True), env


def sibling(http: aiohttp.ClientSession, headers: Mapping[str, str]) -> aiohttp.ClientSession:
    """A session on ``http``'s connections and cookie jar (``http`` owns them; closing it
    closes this one) that sends ``headers`` by default: aiohttp merges a request's own
    headers into its session's one by one, so headers common to many requests cost less
    there."""
    assert http.connector is not None  # an open pool
    return _client(http.connector, headers, http.cookie_jar, owner=False)


def _client(
    connector: aiohttp.BaseConnector, headers: Mapping[str, str],
    cookie_jar: aiohttp.abc.AbstractCookieJar | None, *, owner: bool,
) -> aiohttp.ClientSession:  # fmt: skip
    http = aiohttp.ClientSession(
        connector=connector,
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
