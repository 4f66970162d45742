"""Where a fast request goes: the Wire's own connection pool for one origin, in this process.

The fast paths (:mod:`session_fsm.fast_send` for trading requests, :mod:`session_fsm.fast_calls`
for the session calls) skip ``requests.Session.request`` but not the Wire's choices. A
:class:`_Route` (one per request template, made at its first call) finds what requests would
pick for an origin: the ``GuardedAdapter`` mounted for it, the urllib3 pool that adapter
chooses (the environment's proxy and CA bundle, as the Wire read them, in its key), the Wire's
timeouts bounded by the deadline, and whether a URL sent through a plain HTTP proxy names its
whole URL; it keeps the template's headers once merged. It notes the adapters mounted below the
origin (whose URLs are ``Wire.send``'s) and says when it is stale: the Wire's session was
remade (``Wire.close()``) or the process forked, and the template makes a new one.

Beside it, the small helpers both fast paths share: a URL as requests prepares it, an origin
as the allow-list reads it, requests' ``timeout`` forms as urllib3's ``Timeout``, and whether a
session's cookie jar holds a cookie.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import select_proxy
from urllib3.util import Timeout

from .hosts import _ORIGIN
from .transport import GuardedAdapter, _bounded
from .wire import Wire


class _Route:
    """Where a template's requests go in one process: the Wire's pooled session, its adapter
    for the host, the urllib3 pool that adapter picks (proxy and TLS settings applied) and the
    per-call settings requests would merge."""

    __slots__ = ("absolute", "adapter", "allowed", "headers", "http", "mounts", "others", "pid",
                 "pool", "prefix", "proxies", "timeout", "verify", "wire_headers")  # fmt: skip

    def __init__(self, wire: Wire, origin: str) -> None:
        http = wire.http  # made here if need be (a forked child makes its own)
        env = wire._env
        self.http = http
        self.pid = os.getpid()
        url = origin + "/"
        adapter = http.get_adapter(url)
        if env is None or not isinstance(adapter, GuardedAdapter):
            raise _Unusual  # a caller's session: Wire.send uses it as it is
        config = wire.config
        self.prefix = url  # every URL sent on this route starts with it
        #: The WireConfig whose allow-list this route's origin passed (None: not yet asked).
        self.allowed: Any = None
        self.headers: CaseInsensitiveDict[str] | None = None  # the template's, merged once
        self.wire_headers: dict[str, str] = {}  # the same, as a plain dict
        self.adapter = adapter
        self.verify = env.verify(config.verify)
        self.proxies = env.proxies(url)
        self.timeout = _timeout(config.timeout, config.deadline)
        probe = PreparedRequest()
        probe.url = url
        # requests' own choice of pool: the proxy (if any) and the TLS settings in its key
        self.pool: Any = adapter.get_connection_with_tls_context(probe, self.verify, self.proxies)
        adapter.cert_verify(self.pool, url, self.verify, None)  # type: ignore[no-untyped-call]  # OSError for a missing bundle
        self.mounts = 0
        self.others: tuple[str, ...] = ()
        self.remount()
        proxy = select_proxy(url, self.proxies)
        # an http:// request through a plain HTTP proxy names the whole URL (requests' rule)
        self.absolute = bool(proxy) and url.startswith("http:") and not _socks(proxy or "")

    def remount(self) -> None:
        """Note the adapters mounted below this route's origin (the Wire mounts the session
        calls' own on ``<host>/session/`` when it first makes one): URLs under them are
        ``Wire.send``'s, which picks their adapter and retries."""
        adapters = self.http.adapters
        origin = self.prefix.lower()
        self.others = tuple(p.lower() for p in adapters if p.lower().startswith(origin))
        self.mounts = len(adapters)

    def stale(self, wire: Wire) -> bool:
        """True when this route no longer sends through the Wire's current pool."""
        return wire._http is not self.http or self.pool.pool is None or self.pid != os.getpid()


class _Unusual(Exception):
    """Raised while routing: the call is sent by ``Wire.send`` instead."""


def _socks(proxy: str) -> bool:
    return proxy.lower().startswith("socks")


def _timeout(timeout: Any, deadline: float) -> Timeout:
    """urllib3's Timeout for requests' ``timeout`` forms, each part bounded by the deadline
    (as the GuardedAdapter bounds them)."""
    bounded = _bounded(timeout, deadline)
    if isinstance(bounded, Timeout):
        return bounded
    if isinstance(bounded, tuple):
        return Timeout(connect=bounded[0], read=bounded[1])
    return Timeout(connect=bounded, read=bounded)


@functools.lru_cache(maxsize=1024)  # a bot calls a handful of paths; order ids vary the rest
def _prepared_url(url: str) -> str:
    """``url`` as requests prepares it (IDNA host, requoted path)."""
    prep = PreparedRequest()
    prep.prepare_url(url, None)
    return prep.url or ""


def _origin(url: str) -> str:
    """``scheme://authority`` of ``url`` as the allow-list reads it ("" when not absolute)."""
    found = _ORIGIN.match(url)
    return found.group(0) if found else ""


def _prepare_url(url: str, params: Any) -> str:
    prep = PreparedRequest()
    prep.prepare_url(url, params)
    return prep.url or ""


def _has_cookies(jar: Any) -> bool:
    """Whether a session's cookie jar holds any cookie (the stdlib jar's own dict, read without
    the generator ``len()`` runs)."""
    inner = getattr(jar, "_cookies", None)
    return bool(inner) if isinstance(inner, dict) else bool(len(jar))
