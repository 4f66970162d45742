"""The wire layer: the four KS session calls and authorised trading requests over ``requests``.

One :class:`Wire` owns (lazily) one pooled ``requests.Session``; it may be shared by many
:class:`~session_fsm.KSSession` objects. Nothing here does network I/O in a constructor.

Retries are urllib3's :class:`~urllib3.util.retry.Retry` mounted on requests' ``HTTPAdapter``:
idempotent methods are retried on 429/5xx, dropped connections and read timeouts, with jittered
backoff and a capped ``Retry-After``. The session calls, login and 2FA POSTs included, go through
an adapter mounted on the ``/session/`` path of each host that retries them on 429/503 and on
dropped connections and read timeouts: repeating them is harmless (a repeated login just issues
a fresh one-time token; a repeated 2FA whose first answer was lost meets 50001, which
``connect()`` recovers from by logging in once more). POSTs on trading paths are never retried.
There is exactly one retry layer per request.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_exceptions
from urllib3.util.retry import Retry

from . import contract as c
from .environment import EnvironmentSettings
from .errors import (
    APIError,
    Call,
    ConfigurationError,
    MalformedAnswer,
    NetworkError,
    RequestTimeout,
    TransportError,
    UnsafeRedirect,
    error_for,
)
from .models import (
    Fault,
    ResLogin,
    ResLogout,
    ResSession2FA,
    ResSessionInit,
    UserCredentials,
    UserDetails,
    unwrap,
)
from .secret import Secret

#: Methods safe to retry on 429/5xx/timeouts (and to replay after a re-login).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
#: Statuses retried for idempotent requests.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Statuses retried for the session calls (login and 2FA included).
SESSION_RETRY_STATUSES = frozenset({429, 503})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
USER_AGENT = "session_fsm/0.1"


class CappedRetry(Retry):
    """urllib3 ``Retry`` that caps ``Retry-After`` and sleeps through an injectable function."""

    def __init__(
        self,
        *args: Any,
        retry_after_cap: float = 30.0,
        sleeper: Callable[[float], None] = time.sleep,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_cap = retry_after_cap
        self.sleeper = sleeper

    def new(self, **kw: Any) -> CappedRetry:
        new = super().new(**kw)
        assert isinstance(new, CappedRetry)
        new.retry_after_cap = self.retry_after_cap
        new.sleeper = self.sleeper
        return new

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.retry_after_cap)

    def sleep(self, response: Any = None) -> None:
        delay = None
        if response is not None and self.respect_retry_after_header:
            delay = self.get_retry_after(response)
        if delay is None:
            delay = self.get_backoff_time()
        if delay > 0:
            self.sleeper(delay)


@dataclass(frozen=True)
class RetryPolicy:
    """How requests are retried below the session layer. One immutable value.

    ``total`` bounds all retries of one request; ``backoff_factor``/``backoff_jitter``/
    ``backoff_max`` shape the exponential backoff; a server's ``Retry-After`` is honoured up to
    ``retry_after_cap`` seconds. ``sleeper`` is injectable for tests.
    """

    total: int = 3
    backoff_factor: float = 0.2
    backoff_jitter: float = 0.1
    backoff_max: float = 5.0
    retry_after_cap: float = 30.0
    sleeper: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def _retry(self, methods: frozenset[str], statuses: frozenset[int]) -> CappedRetry:
        return CappedRetry(
            total=self.total,
            allowed_methods=methods,
            status_forcelist=statuses,
            backoff_factor=self.backoff_factor,
            backoff_jitter=self.backoff_jitter,
            backoff_max=self.backoff_max,
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
            retry_after_cap=self.retry_after_cap,
            sleeper=self.sleeper,
        )

    def for_trading(self) -> CappedRetry:
        """Retry for trading paths: idempotent methods only."""
        return self._retry(IDEMPOTENT_METHODS, RETRY_STATUSES)

    def for_session_calls(self) -> CappedRetry:
        """Retry for the four session calls: login/2FA POSTs too, on 429/503 only."""
        return self._retry(IDEMPOTENT_METHODS | {"POST"}, SESSION_RETRY_STATUSES)


NO_RETRY = RetryPolicy(total=0)


@dataclass(frozen=True)
class WireConfig:
    """Transport settings: timeouts in seconds (connect, read), retries, TLS, allowed hosts.

    ``allowed_domains``: a redirect host must be ``https`` and equal to or under one of these;
    loopback hosts (``127.0.0.1``, ``localhost``, ``::1``) are allowed on any scheme when
    ``allow_loopback`` is true, for the sandbox.
    """

    timeout: tuple[float, float] = (3.05, 10.0)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    verify: bool | str = True
    allowed_domains: tuple[str, ...] = (c.KS_DOMAIN,)
    allow_loopback: bool = True
    pool_maxsize: int = 32


@dataclass(frozen=True)
class Identity:
    """Who is calling: the non-secret identifiers and the gateway (Bearer) token."""

    userid: str
    consumer_key: str
    ip: str
    app_id: str
    access_token: Secret

    def base_headers(self) -> dict[str, str]:
        """Headers every call sends (reveals the Bearer token: wire use only)."""
        return {
            c.H_AUTHORIZATION: f"Bearer {self.access_token.reveal()}",
            "Accept": "application/json",
            c.H_CONSUMER_KEY: self.consumer_key,
            c.H_IP: self.ip,
            c.H_APP_ID: self.app_id,
        }


def host_allowed(url: str, config: WireConfig) -> bool:
    """True when ``url`` may receive our credentials under ``config``'s allow-list."""
    return _host_allowed(url, tuple(config.allowed_domains), bool(config.allow_loopback))


@functools.lru_cache(maxsize=256)  # a session meets the same one or two hosts on every login
def _host_allowed(url: str, allowed_domains: tuple[str, ...], allow_loopback: bool) -> bool:
    parts = urlsplit(url)
    name = (parts.hostname or "").lower().rstrip(".")
    if not name:
        return False
    if name in LOOPBACK_HOSTS:
        return allow_loopback and parts.scheme in ("http", "https")
    if parts.scheme != "https":
        return False
    return any(name == d or name.endswith("." + d) for d in allowed_domains)


def check_host(url: str, config: WireConfig) -> str:
    """Return ``url`` without a trailing slash, or raise UnsafeRedirect."""
    if not host_allowed(url, config):
        raise UnsafeRedirect(urlsplit(url).netloc or url)
    return url.rstrip("/")


class Wire:
    """The transport for one or many sessions. Cheap to create; connects on first call.

    The ``requests.Session`` it makes has ``trust_env`` off: proxy settings (``HTTPS_PROXY``,
    ``NO_PROXY``, ...) and ``REQUESTS_CA_BUNDLE`` are read from the environment once (see
    :mod:`session_fsm.environment`) instead of on every request, and ``~/.netrc`` never
    replaces the Bearer header. A session passed as ``http`` is used as it is.
    """

    def __init__(self, config: WireConfig | None = None, http: requests.Session | None = None):
        self.config = config or WireConfig()
        self._http = http
        self._env: EnvironmentSettings | None = None  # set when the Wire makes its own session
        self._mounted: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Wire(timeout={self.config.timeout})"

    # --- plumbing ------------------------------------------------------------------------------

    @property
    def http(self) -> requests.Session:
        """The pooled ``requests.Session`` (created on first use)."""
        http = self._http
        if http is None:
            with self._lock:
                if self._http is None:
                    s = requests.Session()
                    s.trust_env = False  # the environment is read once, by self._env
                    s.headers["User-Agent"] = USER_AGENT
                    self._env = EnvironmentSettings()
                    self._mount(s, "http://", self.config.retry.for_trading())
                    self._mount(s, "https://", self.config.retry.for_trading())
                    self._http = s
                http = self._http
        return http

    def _mount(self, s: requests.Session, prefix: str, retry: Retry) -> None:
        size = self.config.pool_maxsize
        s.mount(prefix, HTTPAdapter(max_retries=retry, pool_connections=size, pool_maxsize=size))

    def _session_url(self, host: str, path: str) -> str:
        prefix = f"{host}/session/"
        if prefix not in self._mounted:
            http = self.http
            with self._lock:
                if prefix not in self._mounted:
                    self._mount(http, prefix, self.config.retry.for_session_calls())
                    self._mounted.add(prefix)
        return host + path

    def close(self) -> None:
        """Close pooled connections (the Wire may be used again afterwards)."""
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None
                self._env = None  # the next session reads the environment again
                self._mounted.clear()

    def send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send one request with the configured timeout; map transport failures to our errors.

        ``kwargs`` are requests' own and win over the Wire's defaults (``proxies`` key by key).
        """
        config = self.config
        http = self._http or self.http
        options: dict[str, Any] = {"timeout": config.timeout, "allow_redirects": False}
        env = self._env
        if env is None:
            options["verify"] = config.verify
        else:
            options["verify"] = env.verify(config.verify)
            proxies, given = env.proxies(url), kwargs.pop("proxies", None)
            options["proxies"] = {**proxies, **given} if given else proxies
        try:
            return http.request(method, url, **{**options, **kwargs})
        except requests.RequestException as exc:
            raise transport_error(method, url, exc) from None
        except OSError as exc:  # requests' own check of the CA bundle / client certificate paths
            raise ConfigurationError(
                f"{method} {urlsplit(url).path}: TLS files unusable: {exc}",
                hint="fix verify=/cert= or the REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE variable",
            ) from None

    # --- answers -------------------------------------------------------------------------------

    @staticmethod
    def raise_for(call: Call, response: requests.Response) -> None:
        """Raise the typed error for a non-2xx ``response`` of ``call``; return on 2xx."""
        err = Wire.error_of(call, response)
        if err is not None:
            raise err

    @staticmethod
    def error_of(call: Call, response: requests.Response) -> APIError | None:
        """The typed error for a non-2xx ``response`` of ``call`` (None on 2xx); the one place
        an answer is read for its mapping (:func:`~session_fsm.errors.error_for`)."""
        if 200 <= response.status_code < 300:
            return None
        body = _json_or_none(response)
        fault = Fault.parse(body)
        retry_after = None
        header = response.headers.get("Retry-After")
        if header:
            try:
                retry_after = Retry.parse_retry_after(Retry(), header)
            except Exception:  # an unparsable header is not worth failing over
                retry_after = None
        message = fault.message if fault else ""
        if fault is None and isinstance(body, dict) and isinstance(body.get("message"), str):
            message = body["message"]  # a gateway's bare {"message": ...}
        return error_for(
            call,
            response.status_code,
            fault.code if fault else None,
            fault.description if fault else "",
            retry_after,
            message,
        )

    @classmethod
    def payload(cls, call: Call, response: requests.Response, required: str | None) -> Any:
        """Check the status, then unwrap the Success envelope of ``response``."""
        cls.raise_for(call, response)
        body = _json_or_none(response)
        if body is None:
            raise MalformedAnswer(f"{call.value} answer is not JSON", status=response.status_code)
        return unwrap(body, status=response.status_code, required=required)

    # --- the four session calls ----------------------------------------------------------------

    def session_init(self, host: str, who: Identity) -> ResSessionInit:
        """GET session/init: headers userid, consumerKey, ip, appId."""
        method, path = c.SESSION_INIT
        headers = who.base_headers()
        headers[c.H_USERID] = who.userid
        r = self.send(method, self._session_url(host, path), headers=headers)
        return ResSessionInit.parse(self.payload(Call.INIT, r, None))

    def login_with_user_id(self, host: str, who: Identity, body: UserCredentials) -> ResLogin:
        """POST session/login/userid with ``{"userid", "password"}``: returns the one-time token."""
        method, path = c.LOGIN_USERID
        r = self.send(
            method, self._session_url(host, path), headers=who.base_headers(), json=body.to_json()
        )
        return ResLogin.parse(self.payload(Call.LOGIN, r, "oneTimeToken"))

    def generate_session2_fa(
        self, host: str, who: Identity, one_time_token: Secret, body: UserDetails
    ) -> ResSession2FA:
        """POST session/2FA/accesscode with the OTT header: returns the session token."""
        method, path = c.TWO_FA_ACCESSCODE
        headers = who.base_headers()
        headers[c.H_ONE_TIME_TOKEN] = one_time_token.reveal()
        r = self.send(method, self._session_url(host, path), headers=headers, json=body.to_json())
        return ResSession2FA.parse(self.payload(Call.TWO_FA, r, "sessionToken"))

    def session_logout(self, host: str, who: Identity, session_token: Secret) -> ResLogout:
        """DELETE session/logout: invalidates ``session_token`` on the server."""
        method, path = c.SESSION_LOGOUT
        headers = self.trading_headers(who, session_token)
        headers[c.H_USERID] = who.userid
        r = self.send(method, self._session_url(host, path), headers=headers)
        return ResLogout.parse(self.payload(Call.LOGOUT, r, None))

    # --- trading -------------------------------------------------------------------------------

    @staticmethod
    def trading_headers(who: Identity, session_token: Secret) -> dict[str, str]:
        """Headers of an authorised trading call: Bearer, consumerKey, sessionToken, ..."""
        headers = who.base_headers()
        headers[c.H_SESSION_TOKEN] = session_token.reveal()
        return headers

    def trading_request(
        self,
        method: str,
        url: str,
        who: Identity,
        session_token: Secret,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one authorised trading request; the answer is returned whatever its status."""
        merged = self.trading_headers(who, session_token)
        if headers:
            merged.update(headers)
        return self.send(method, url, headers=merged, **kwargs)


def transport_error(method: str, url: str, exc: requests.RequestException) -> TransportError:
    """The typed error of a request that got no usable answer (names the path, not the URL)."""
    if _timed_out(exc):
        return RequestTimeout(f"{method} {urlsplit(url).path} timed out")
    return NetworkError(f"{method} {urlsplit(url).path} failed: {type(exc).__name__}")


def _timed_out(exc: requests.RequestException) -> bool:
    """True for a timeout, also when urllib3's retries wrapped it in a ConnectionError."""
    if isinstance(exc, requests.Timeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # urllib3's NewConnectionError (connection refused) subclasses ConnectTimeoutError.
    refused = isinstance(reason, urllib3_exceptions.NewConnectionError)
    return isinstance(reason, urllib3_exceptions.TimeoutError) and not refused


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
