"""The fast path of a trading request: straight into the Wire's guarded connection pool.

``requests.Session.request`` spends more per call than the whole exchange with the server
costs urllib3: merging settings, preparing and checking every header, cookie jars, hooks and
the redirect dry run. A :class:`RequestTemplate` does that work once per session generation
(the headers, their checks and the route to the pool, :mod:`session_fsm.fast_route`) and, per
call, sends through the very ``GuardedAdapter`` connection pool and ``Retry`` the
:class:`~session_fsm.wire.Wire` mounted, then builds the ``requests.Response`` the way
requests' ``HTTPAdapter.build_response`` does (:mod:`session_fsm.fast_response`).

Every guarantee of :meth:`Wire.send <session_fsm.wire.Wire.send>` holds on this path:

- the host is checked against the allow-list at send time, on the URL as prepared for sending;
- the call (connect, whole body, retries and their waits) is bounded by ``WireConfig.deadline``
  through the process's deadline watchdog (:mod:`session_fsm.transport`);
- the adapter's own ``Retry`` (:mod:`session_fsm.retry`): idempotent methods on 429/5xx with a
  capped ``Retry-After``, a POST never on a 5xx;
- the Wire's timeouts, and the proxies and CA bundle of the environment as the Wire read them
  (once); no redirect is followed;
- a transport failure raises the same typed error (``RequestTimeout``, ``NetworkError``, ...),
  raised outside the handler, with no revealed token among the raising frame's locals;
- fork safety: the route is remade in a forked child, from the child's own pool.

Anything unusual goes through ``Wire.send`` unchanged: ``files=``, ``stream=True``, hooks,
cookies, ``auth=``, ``allow_redirects=True``, any other keyword, a caller-given
``requests.Session``, a path that is not below the template's host, or a Wire whose session
holds cookies (set by an earlier answer), hooks, auth or params of its own.

The answer is a real ``requests.Response``: ``status_code``, ``headers`` (a
``CaseInsensitiveDict``), ``content``/``json()``, ``url``, ``reason``, ``encoding``,
``elapsed``, ``request`` (the ``PreparedRequest`` sent) and ``connection`` (the adapter, so a
replay after a re-login sends on it as requests' auth hooks do). ``history`` is empty and
``next`` is None (no redirect is prepared). ``cookies`` holds what the answer set, and, as in
``requests.Session``, the Wire's session keeps them (later calls then take ``Wire.send``, which
sends them).

How the sync driver holds it: one ``RequestTemplate`` per session generation, made when the
snapshot with a new session token (or a new Bearer token) is published, e.g.
``RequestTemplate.trading(wire, snap.host, who, snap.session_token)``, kept beside (or in) that
snapshot, and used by every request sent with it: ``template.send("GET", path, **kwargs)``. A
request reads the snapshot once and so gets host and tokens of one generation. Making one
costs a few microseconds and holds the tokens only as :class:`~session_fsm.secret.Secret`; the
first call through it (and the first after ``Wire.close()`` or a fork) merges and checks its
headers and finds its pool. A replay after a re-login is simply a ``send`` through the new
generation's template; ``response.connection`` is there for requests-style hooks, which replay
with ``response.connection.send(prepared, timeout=..., verify=..., proxies=...)``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

import requests
from requests.auth import HTTPBasicAuth
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict

from . import contract as c
from .answers import Identity, forget_below
from .errors import ConfigurationError, KSError
from .fast_response import build_response, failure, read_error_body
from .fast_route import (
    _has_cookies,
    _origin,
    _prepare_url,
    _prepared_url,
    _Route,
    _timeout,
    _Unusual,
)
from .hosts import check_url
from .secret import Secret
from .transport import _WATCHDOG, Call, _local
from .wire import Wire

__all__ = ["FAST_KEYWORDS", "RequestTemplate", "send_prepared"]

#: Keywords the fast path takes; any other goes through ``Wire.send``.
FAST_KEYWORDS = frozenset({"params", "data", "json", "headers", "timeout", "allow_redirects"})

#: A secret header value: visible ASCII words separated by single spaces (``Bearer <token>``).
_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,4096}(?: [\x21-\x7e]{1,4096})?")


def _header_safe(value: Secret) -> bool:
    # a frame of its own: the revealed value is gone when it returns
    return _HEADER_SAFE.fullmatch(value.reveal()) is not None


class _SecretHeaders(requests.auth.AuthBase):
    """For ``Wire.send``: writes the template's secret headers into the prepared request (the
    one place they are revealed on that path, as ``CallAuth`` does for the Wire's calls)."""

    def __init__(self, secrets: Mapping[str, Secret], then: Any = None) -> None:
        self.secrets = secrets
        # a caller's own ``auth=`` (an AuthBase or a (user, password) pair) runs after
        self.then = HTTPBasicAuth(*then) if isinstance(then, tuple) else then

    def __repr__(self) -> str:
        return f"_SecretHeaders({sorted(self.secrets)})"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        for name, value in self.secrets.items():
            r.headers[name] = value.reveal()
        return r if self.then is None else self.then(r)


class RequestTemplate:
    """Requests to one host with one set of headers, sent the fast way (see the module doc).

    ``headers`` are plain (``Accept``, ``consumerKey``, ...); ``secret_headers`` hold whole
    header values as Secrets (``{"Authorization": Secret("Bearer ...")}``) and are revealed only
    into each call's own prepared request. The Wire's session headers (``User-Agent``,
    ``Accept-Encoding``, ...) are merged in as requests would, once. A secret header that
    cannot go into an HTTP header raises ConfigurationError here, naming the header.
    """

    __slots__ = ("_order", "_plain", "_route", "_secrets", "host", "origin", "wire")

    def __init__(
        self,
        wire: Wire,
        host: str,
        headers: Mapping[str, str] | None = None,
        secret_headers: Mapping[str, Secret] | None = None,
    ) -> None:
        self.wire = wire
        self.host = host.rstrip("/")
        self.origin = _origin(self.host)
        self._secrets: dict[str, Secret] = {}
        secrets = dict(secret_headers or {})
        for name, value in secrets.items():
            if not isinstance(value, Secret) or not _header_safe(value):
                raise ConfigurationError(
                    f"the {name} header's value is not visible ASCII words of 1 to 4096 "
                    "characters",
                    hint="check the token for pasted spaces, line breaks or invisible characters",
                )
        self._secrets = secrets
        self._plain = dict(headers or {})
        self._order = (*self._plain, *secrets)  # where each header goes (secrets: placeholders)
        self._route: _Route | None = None

    @classmethod
    def trading(
        cls, wire: Wire, host: str, who: Identity, session_token: Secret
    ) -> RequestTemplate:
        """The template of an authorised trading call: the headers of
        :meth:`Wire.trading_request <session_fsm.wire.Wire.trading_request>`."""
        plain = who.plain_headers()
        template = cls(
            wire,
            host,
            plain,
            {
                c.H_AUTHORIZATION: Secret("Bearer " + who.access_token.reveal()),
                c.H_SESSION_TOKEN: session_token,
            },
        )
        template._order = (c.H_AUTHORIZATION, *plain, c.H_SESSION_TOKEN)  # as trading_headers
        return template

    def __repr__(self) -> str:
        return f"RequestTemplate(host={self.host!r}, secret_headers={sorted(self._secrets)})"

    def send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send ``method`` to ``host + path``; the answer whatever its status.

        ``kwargs``: ``params``, ``data``, ``json``, ``headers`` (added to the template's) and
        ``timeout`` take the fast path; anything else, or a body that is a stream or a file,
        is sent by ``Wire.send`` with the same headers.
        """
        url = self.host + path
        if (
            not (self.origin and path.startswith("/"))
            or (kwargs and not _fast_kwargs(kwargs))
            or self.wire._given  # a caller's requests.Session is used as it is
        ):
            return self._slow(method, url, kwargs)
        route = None
        try:
            route = self._route
            wire = self.wire
            if (  # route.stale(wire), inline: this runs on every request
                route is None
                or wire._http is not route.http
                or route.pool.pool is None
                or route.pid != os.getpid()
            ):
                route = self._route = _Route(wire, self.origin)
        except _Unusual:
            route = None
        except OSError:  # an unusable CA bundle path: Wire.send raises its ConfigurationError
            route = None  # (after this block: the OSError is not its context)
        if route is None:
            return self._slow(method, url, kwargs)
        http = route.http
        jar = http.cookies
        inner = getattr(jar, "_cookies", None)  # (_has_cookies, inline)
        cookies = bool(inner) if type(inner) is dict else _has_cookies(jar)
        if cookies or http.hooks["response"] or http.auth or http.params:
            return self._slow(method, url, kwargs)  # the session's own state must be applied
        return self._fast(route, method.upper(), url, kwargs)

    # --- the fast path -------------------------------------------------------------------------

    def _headers(self, route: _Route) -> tuple[CaseInsensitiveDict[str], dict[str, str]]:
        """Copies of the template's headers merged with the session's (merged and checked once
        per route): requests' ``CaseInsensitiveDict`` for the ``PreparedRequest``, and a plain
        dict in the same order for urllib3 (which iterates it for every call)."""
        base = route.headers
        if base is None:
            merged = CaseInsensitiveDict(route.http.headers)
            plain = self._plain
            for name in self._order:  # a secret's place is held by "" until each call
                merged[name] = plain.get(name, "")
            prep = PreparedRequest()
            prep.prepare_headers(merged)  # requests' own checks of every header, once
            base = route.headers = prep.headers
            route.wire_headers = dict(base.items())
        copy: CaseInsensitiveDict[str] = CaseInsensitiveDict.__new__(CaseInsensitiveDict)
        copy._store = base._store.copy()  # type: ignore[attr-defined]  # keys already folded
        return copy, route.wire_headers.copy()

    def _fast(
        self, route: _Route, method: str, url: str, kwargs: dict[str, Any]
    ) -> requests.Response:
        config = self.wire.config
        params = kwargs.get("params")
        sent = ""
        # Wire.send raises the typed error of a URL requests refuses, after this block:
        # requests' error (which quotes the value) is not its context.
        try:
            sent = _prepared_url(url) if not params else _prepare_url(url, params)
        except requests.RequestException:  # (not contextlib.suppress: an object per call)
            sent = ""
        if not sent:
            return self._slow(method, url, kwargs)
        if route.mounts != len(route.http.adapters):
            route.remount()
        if (
            "#" in sent
            or not sent.startswith(route.prefix)
            or (route.others and sent.lower().startswith(route.others))
        ):
            return self._slow(method, url, kwargs)
        # The allow-list decides by origin, and ``sent`` is below the route's: this is the
        # check of what is sent, made at send time (as Wire.send and the GuardedAdapter do).
        # Its verdict is a function of the origin and the allow-list alone, so the route keeps
        # the configuration its origin passed under and asks again for any other.
        if route.allowed is not config:
            check_url(sent, config.allowed_domains, config.allow_loopback)
            route.allowed = config
        refused = False
        try:
            headers, wire_headers = self._headers(route)
        except requests.RequestException:  # a template header requests refuses (CR/LF, ...):
            refused = True  # Wire.send raises the Wire's error for it, outside this block
        if refused:
            return self._slow(method, url, kwargs)
        prep: PreparedRequest = PreparedRequest.__new__(PreparedRequest)
        prep.__dict__.update(method=method, url=sent, headers=headers, _cookies=None, body=None,
                             hooks={"response": []}, _body_position=None)  # fmt: skip
        timeout = None
        if kwargs:
            extra = kwargs.get("headers")
            data, body_json = kwargs.get("data"), kwargs.get("json")
            try:
                if extra:
                    for name, value in extra.items():
                        if value is None:
                            headers.pop(name, None)
                        else:
                            headers[name] = value
                    prep.prepare_headers(headers)  # the caller's headers checked as requests
                    headers = prep.headers
                if data is not None or body_json is not None:
                    prep.prepare_body(data, None, body_json)  # requests' bodies, Content-Length
            except (requests.RequestException, ValueError):  # no secret is in them yet
                refused = True  # Wire.send raises the Wire's error, outside this block
            if refused:
                return self._slow(method, url, kwargs)
            if extra or prep.body is not None:
                wire_headers = dict(headers.items())
            timeout = kwargs.get("timeout")
        if prep.body is None and method not in ("GET", "HEAD") and "content-length" not in headers:
            headers["Content-Length"] = wire_headers["Content-Length"] = "0"  # as requests
        for name, value in self._secrets.items():
            headers[name] = wire_headers[name] = value.reveal()
        limit = route.timeout if timeout is None else _timeout(timeout, config.deadline)
        target = sent if route.absolute else sent[len(route.prefix) - 1 :]
        adapter = route.adapter
        error: KSError | None = None
        start = time.perf_counter()
        call = Call(time.monotonic() + config.deadline)
        outer = getattr(_local, "call", None)
        _local.call = call
        _WATCHDOG.watch(call)
        try:
            raw = route.pool.urlopen(
                method,
                target,
                body=prep.body,
                headers=wire_headers,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=adapter.max_retries,
                timeout=limit,
                chunked=False,
            )
            if 200 <= raw.status < 300:
                content = raw.read(decode_content=True)
            else:  # an error's answer: its fault code is all the core reads of it
                content = read_error_body(raw, config.max_answer_bytes)
        except BaseException as exc:  # each kind mapped to the Wire's error, or passed on
            # (an interrupt too) with no token left on its traceback
            error = failure(exc, call, method, url, config) if isinstance(exc, Exception) else None
            if error is None:
                headers.clear()
                wire_headers.clear()
                forget_below(exc)
                raise
        finally:
            _WATCHDOG.finish(call)
            _local.call = outer
        if error is not None:
            # Raised outside the handler, with this frame's revealed headers gone: nothing the
            # error reaches (its chain, this frame's locals) holds a token.
            headers.clear()
            wire_headers.clear()
            del headers, wire_headers, prep
            raise error
        return build_response(
            prep, raw, content, adapter, time.perf_counter() - start, route.http.cookies
        )

    # --- the general path ----------------------------------------------------------------------

    def _slow(self, method: str, url: str, kwargs: dict[str, Any]) -> requests.Response:
        """``Wire.send`` with the template's headers (secrets written by an auth, as the Wire's
        own calls write theirs)."""
        options = dict(kwargs)
        headers = dict(self._plain)
        headers.update(options.pop("headers", None) or {})
        auth = _SecretHeaders(self._secrets, options.pop("auth", None))
        return self.wire.send(method, url, headers=headers, auth=auth, **options)


def _fast_kwargs(kwargs: Mapping[str, Any]) -> bool:
    """Whether ``kwargs`` are all the fast path's own, with no stream or file for a body."""
    if not FAST_KEYWORDS.issuperset(kwargs) or kwargs.get("allow_redirects"):
        return False
    data = kwargs.get("data")
    return data is None or isinstance(data, (bytes, str, Mapping, list, tuple))


def send_prepared(
    wire: Wire,
    method: str,
    url: str,
    headers: Mapping[str, str],
    secret_headers: Mapping[str, Secret] | None = None,
    **kwargs: Any,
) -> requests.Response:
    """One request the fast way, without keeping a template (``host`` is ``url``'s origin).

    A caller sending many requests with the same headers keeps a :class:`RequestTemplate`
    instead: it merges and checks the headers once.
    """
    origin = _origin(url)
    template = RequestTemplate(wire, origin, headers, secret_headers)
    return template.send(method, url[len(origin) :], **kwargs)
