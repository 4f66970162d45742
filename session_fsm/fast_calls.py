"""The fast path of the four session calls: straight into the Wire's guarded connection pool.

``connect()`` makes three session calls; through ``requests.Session.request`` each spent more
of the client's time in requests' merging, preparing, hooks and ``Response`` building than the
exchange with the server costs urllib3. :func:`exchange` sends a session call through the very
pool, ``Retry`` and deadline the :class:`~session_fsm.wire.Wire` mounted for the host's
``/session/`` calls (see :mod:`session_fsm.fast_send` for trading calls, and
:mod:`session_fsm.fast_route` for the helpers both share) and reads the answer into the core's
:class:`~session_fsm.core.calls.Answer`, which is all a session call needs (no
``requests.Response`` is built).

Every guarantee of the general path (``Wire.send`` + ``Wire._read``) holds here:

- the host is checked against the allow-list at send time, on the URL as prepared for sending;
- the call (connect, whole body, retries and their waits) is bounded by ``WireConfig.deadline``
  through the process's deadline watchdog (:mod:`session_fsm.transport`);
- the session adapter's own ``Retry`` (login and 2FA POSTs too, on 429/503) and the Wire's
  timeouts and CA bundle (read from the environment once); no redirect is followed;
- the answer's body is read up to ``max_answer_bytes`` (a larger one is a MalformedAnswer,
  never decoded), and only ever held decoded, its tokens as Secrets;
- a transport failure raises the same typed error, outside any handler, with no revealed
  token or body in the raising frame's locals;
- fork safety: the route is remade in a forked child, from the child's own pool.

Anything unusual goes through ``Wire.send`` unchanged (:func:`exchange` returns None): a
caller-given ``requests.Session``, a proxy for the host, a session holding cookies, hooks, auth
or params, a URL requests would prepare differently, a header requests would refuse.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import requests
from requests.cookies import extract_cookies_to_jar
from requests.models import PreparedRequest
from requests.utils import check_header_validity, select_proxy

from .answers import (
    CHUNK,
    CallAuth,
    CappedBody,
    _too_large,
    answer_of,
    forget_below,
    passed_deadline,
)
from .core.calls import Answer, SessionCall
from .errors import KSError
from .fast_response import failure
from .fast_route import _has_cookies, _origin, _prepared_url, _timeout, _Unusual
from .hosts import check_url
from .transport import _WATCHDOG, Call, GuardedAdapter, _local
from .wire import Wire

__all__ = ["exchange"]


class _CallRoute:
    """Where one host's session calls go in one process: the Wire's pooled session, the
    adapter mounted on ``<host>/session/``, the urllib3 pool it picks, and the session's own
    headers (merged as requests merges them, checked once)."""

    __slots__ = ("adapter", "base", "http", "origin", "pid", "pool", "prefix", "timeout")

    def __init__(self, wire: Wire, host: str) -> None:
        http = wire.http  # made here if need be (a forked child makes its own)
        env = wire._env
        prefix = host + "/session/"
        adapter = http.get_adapter(prefix)
        if env is None or not isinstance(adapter, GuardedAdapter):
            raise _Unusual  # a caller's session: Wire.send uses it as it is
        proxies = env.proxies(prefix)
        if proxies and select_proxy(prefix, proxies):
            raise _Unusual  # through a proxy: requests' own proxy handling
        config = wire.config
        verify = env.verify(config.verify)
        probe = PreparedRequest()
        probe.url = prefix
        self.pool: Any = adapter.get_connection_with_tls_context(probe, verify, proxies)
        adapter.cert_verify(self.pool, prefix, verify, None)  # type: ignore[no-untyped-call]  # OSError for a missing bundle
        self.http = http
        self.pid = os.getpid()
        self.adapter = adapter
        self.prefix = prefix
        self.origin = _origin(prefix)  # the request target is the URL's path below it
        if not self.origin:
            raise _Unusual
        self.timeout = _timeout(config.timeout, config.deadline)
        base: dict[str, tuple[str, str]] = {}
        for name, value in http.headers.items():
            if value is None:
                continue
            if not isinstance(value, str):
                raise _Unusual  # bytes: requests' own handling
            check_header_validity((name, value))  # InvalidHeader: Wire.send reports it
            base[name.lower()] = (name, value)
        self.base = base

    def stale(self, wire: Wire) -> bool:
        """True when this route no longer sends through the Wire's current pool."""
        return wire._http is not self.http or self.pool.pool is None or self.pid != os.getpid()


def _route(wire: Wire, host: str) -> _CallRoute | None:
    routes: dict[str, _CallRoute] = wire.__dict__.setdefault("_call_routes", {})
    route = routes.get(host)
    if route is None or route.stale(wire):
        try:
            route = _CallRoute(wire, host)
        except (_Unusual, OSError, requests.RequestException):
            return None  # Wire.send sends it (and raises its typed error for what failed here)
        routes[host] = route
    return route


def exchange(wire: Wire, call: SessionCall) -> Answer | None:
    """Make one session call the fast way and read its answer, or None: send it with
    ``Wire.send`` (see the module docstring for when)."""
    if wire._given:
        return None
    method, path, plain, secrets, fields = call.shape()
    url = wire._session_url(call.host, path)  # mounts the session calls' adapter once
    route = _route(wire, call.host)
    if route is None:
        return None
    http = route.http
    if _has_cookies(http.cookies) or http.hooks["response"] or http.auth or http.params:
        return None  # the session's own state must be applied
    sent = ""
    with contextlib.suppress(requests.RequestException):
        sent = _prepared_url(url)
    if not sent.startswith(route.prefix) or "#" in sent:
        return None
    config = wire.config
    # The allow-list decides by origin: the check of what is sent, at send time.
    check_url(sent, config.allowed_domains, config.allow_loopback)
    merged = dict(route.base)
    try:
        for name, value in plain.items():
            check_header_validity((name, value))
            merged[name.lower()] = (name, value)
    except requests.RequestException:  # Wire.send raises the Wire's error for it
        return None
    auth = CallAuth(call.who, secrets, fields)
    return _send(route, method, url, sent, merged, auth, call, config)


def _send(
    route: _CallRoute,
    method: str,
    url: str,
    sent: str,
    merged: dict[str, tuple[str, str]],
    auth: CallAuth,
    call: SessionCall,
    config: Any,
) -> Answer:
    secret, body = auth.reveal()  # ConfigurationError for a token HTTP cannot carry
    merged.update({name.lower(): (name, value) for name, value in secret.items()})  # (its own
    secret.clear()  # scope: no local of this frame holds a revealed value after it)
    headers = dict(merged.values())
    merged.clear()  # (it held the revealed tokens too)
    if body is not None:
        headers["Content-Length"] = str(len(body))
    elif method not in ("GET", "HEAD"):
        headers["Content-Length"] = "0"  # as requests
    target = sent[len(route.origin) :]
    error: KSError | None = None
    watch = Call(time.monotonic() + config.deadline)
    outer = getattr(_local, "call", None)
    _local.call = watch
    _WATCHDOG.watch(watch)
    status, retry_after, content = 0, None, b""
    try:
        raw = route.pool.urlopen(
            method,
            target,
            body=body,
            headers=headers,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=False,
            retries=route.adapter.max_retries,
            timeout=route.timeout,
            chunked=False,
        )
        headers.clear()
        body = None
        status, retry_after = raw.status, raw.headers.get("Retry-After")
        if "set-cookie" in raw.headers:  # as requests: the Wire's session keeps them
            probe = PreparedRequest()
            probe.prepare_url(sent, None)
            probe.prepare_headers({})
            extract_cookies_to_jar(route.http.cookies, probe, raw)  # type: ignore[no-untyped-call]
        capped = CappedBody(config.max_answer_bytes, raw.headers.get("Content-Length"))
        if not capped.read(raw.stream(CHUNK, decode_content=True)):
            raw.close()
            raw.release_conn()
            error = _too_large(call.call, status, config.max_answer_bytes)
        content = capped.take()
    except BaseException as exc:  # each kind mapped to the Wire's error, or passed on (an
        # interrupt, a cancellation too) with nothing revealed left on its traceback (the body
        # urllib3's frames keep: the password, the access code)
        error = failure(exc, watch, method, url, config) if isinstance(exc, Exception) else None
        if error is None:
            headers.clear()
            body = None
            forget_below(exc)
            raise
    finally:
        _WATCHDOG.finish(watch)
        _local.call = outer
    if error is None and watch.expired:  # the read ended short, at the deadline
        error = passed_deadline(method, url, config)
    if error is not None:
        # Raised outside the handler, with this frame's revealed headers and body gone.
        headers.clear()
        del headers, body, content
        raise error
    try:
        return answer_of(call.call, status, retry_after, content, config.max_answer_bytes)
    finally:
        del content

