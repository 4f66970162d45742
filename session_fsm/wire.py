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
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3 import exceptions as urllib3_exceptions
from urllib3.util.retry import Retry

from . import contract as c
from .environment import EnvironmentSettings
from .errors import (
    APIError,
    Call,
    ConfigurationError,
    KSError,
    MalformedAnswer,
    NetworkError,
    RequestTimeout,
    UnsafeRedirect,
    error_for,
)
from .models import (
    DEFAULT_MAX_ANSWER_BYTES,
    NOT_JSON,
    Fault,
    ResLogin,
    ResLogout,
    ResSession2FA,
    ResSessionInit,
    Undecodable,
    UserCredentials,
    UserDetails,
    decode_answer,
    unwrap,
    valid_token,
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
#: Request headers that carry our secrets; masked on any request an error can reach.
SECRET_HEADERS = (c.H_AUTHORIZATION, c.H_SESSION_TOKEN, c.H_ONE_TIME_TOKEN)
MASK = "[redacted]"


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
    ``allow_loopback`` is true, for the sandbox. ``max_answer_bytes`` caps the body of a session
    call's answer (and the fault body of a trading error): larger is a MalformedAnswer.
    """

    timeout: tuple[float, float] = (3.05, 10.0)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    verify: bool | str = True
    allowed_domains: tuple[str, ...] = (c.KS_DOMAIN,)
    allow_loopback: bool = True
    pool_maxsize: int = 32
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES


@dataclass(frozen=True)
class Identity:
    """Who is calling: the non-secret identifiers and the gateway (Bearer) token."""

    userid: str
    consumer_key: str
    ip: str
    app_id: str
    access_token: Secret

    def plain_headers(self) -> dict[str, str]:
        """The non-secret headers every call sends (the Bearer goes in via :class:`CallAuth`)."""
        return {
            "Accept": "application/json",
            c.H_CONSUMER_KEY: self.consumer_key,
            c.H_IP: self.ip,
            c.H_APP_ID: self.app_id,
        }

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


class CallAuth(AuthBase):
    """Writes a call's secrets into the prepared request: the one place they are revealed.

    Holds the Bearer token, any secret headers (one-time token, session token) and the JSON
    body's fields as Secrets, so no frame of the library that can raise holds one in the
    clear; requests calls it while preparing the request, just before the bytes are written.
    """

    def __init__(
        self,
        who: Identity,
        secret_headers: Mapping[str, Secret] | None = None,
        body: Mapping[str, str | Secret] | None = None,
    ) -> None:
        self.who = who
        self.secret_headers = dict(secret_headers or {})
        self.body = None if body is None else dict(body)

    def __repr__(self) -> str:
        return f"CallAuth(headers={sorted(self.secret_headers)})"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        tokens = {c.H_AUTHORIZATION: self.who.access_token, **self.secret_headers}
        for name, value in tokens.items():
            if not valid_token(value.reveal()):  # http.client would raise with the value in it
                raise ConfigurationError(
                    f"the {name} header's token is not 1 to 4096 visible ASCII characters",
                    hint="check the token for pasted spaces, line breaks or invisible characters",
                )
        r.headers[c.H_AUTHORIZATION] = "Bearer " + self.who.access_token.reveal()
        for name, value in self.secret_headers.items():
            r.headers[name] = value.reveal()
        if self.body is not None:
            r.headers["Content-Type"] = "application/json"
            r.body = json.dumps(  # requests sets Content-Length from it after the auth
                {k: v.reveal() if isinstance(v, Secret) else v for k, v in self.body.items()}
            ).encode()
        return r


def seal(request: requests.PreparedRequest | None, *, drop_body: bool = False) -> None:
    """Mask our secret headers on a request that was sent (in place: every frame and response
    holding it sees the masked copy); ``drop_body`` drops its body too (login/2FA bodies)."""
    if request is None:
        return
    for name in SECRET_HEADERS:
        if name in request.headers:
            request.headers[name] = MASK
    if drop_body:
        request.body = None


def seal_response(response: requests.Response, *, drop_body: bool = False) -> None:
    """:func:`seal` the request of ``response`` and of every response in its history."""
    for r in (*response.history, response):
        seal(r.request, drop_body=drop_body)


@dataclass(frozen=True)
class Answer:
    """A session call's answer as read off the wire: status, ``Retry-After`` and the decoded
    body (tokens already Secrets, or :class:`~session_fsm.models.Undecodable`)."""

    call: Call
    status: int
    retry_after: float | None
    body: Any

    def error(self) -> APIError:
        """The typed error of this non-2xx answer, by status and fault code. A body that is no
        JSON at all (a gateway's HTML page) is no fault; one nested too deeply, or a fault of
        the wrong shape, raises MalformedAnswer."""
        body = self.body
        if isinstance(body, Undecodable):
            if body.reason != NOT_JSON:
                unwrap(body, status=self.status, call=self.call.value)  # raises
            body = None
        fault = Fault.parse(body, status=self.status, call=self.call.value)
        return error_for(
            self.call,
            self.status,
            fault.code if fault else None,
            fault.description if fault else "",
            self.retry_after,
        )

    def payload(self, required: str | None) -> Any:
        """The unwrapped Success payload of a 2xx answer; the typed error of any other."""
        if not 200 <= self.status < 300:
            raise self.error()
        return unwrap(self.body, status=self.status, required=required, call=self.call.value)


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
        # Each failure is raised after its except block: requests' exception (whose .request
        # holds the sent headers and body) must not stay reachable as the error's __context__.
        try:
            return http.request(method, url, **{**options, **kwargs})
        except requests.RequestException as exc:
            error = _transport_error(method, url, exc)
        except ValueError:  # http.client refused a header value (CR/LF, not latin-1): the
            # exception's text holds the value, so only its kind is kept
            error = ConfigurationError(
                f"{method} {urlsplit(url).path}: a header or body value cannot be sent over HTTP",
                hint="check the credentials and headers for line breaks or invisible characters",
            )
        except OSError as exc:  # requests' own check of the CA bundle / client certificate paths
            error = ConfigurationError(
                f"{method} {urlsplit(url).path}: TLS files unusable: {exc}",
                hint="fix verify=/cert= or the REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE variable",
            )
        raise error

    def _exchange(
        self, call: Call, method: str, url: str, auth: CallAuth, headers: dict[str, str]
    ) -> Answer:
        """Send one session call and read its answer (at most ``max_answer_bytes``).

        The response is closed and its request sealed before anything can raise, and the body
        is only ever held decoded, with its tokens as Secrets.
        """
        response = self.send(method, url, headers=headers, auth=auth, stream=True)
        seal_response(response, drop_body=True)
        status = response.status_code
        retry_after = _retry_after(response.headers.get("Retry-After"))
        return Answer(call, status, retry_after, decode_answer(self._read(call, response)))

    def _read(self, call: Call, response: requests.Response) -> bytes:
        """The whole body of a streamed ``response``, refusing more than ``max_answer_bytes``."""
        cap = self.config.max_answer_bytes
        status = response.status_code
        error: KSError | None = None
        data = bytearray()
        try:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > cap:
                error = _too_large(call, status, cap)
            else:
                for chunk in response.iter_content(65536):
                    data += chunk
                    if len(data) > cap:
                        error = _too_large(call, status, cap)
                        break
        except requests.RequestException as exc:
            error = _transport_error(response.request.method or "", response.url, exc)
        finally:
            response.close()
        if error is not None:
            del data  # a part of the body may hold a token
            raise error
        return bytes(data)

    # --- answers -------------------------------------------------------------------------------

    @staticmethod
    def raise_for(
        call: Call, response: requests.Response, max_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    ) -> None:
        """Raise the typed error for a non-2xx ``response`` of ``call``; return on 2xx.

        A fault body that is not JSON is no fault (typed by status alone); one larger than
        ``max_bytes``, nested too deeply or with a fault of the wrong shape is MalformedAnswer.
        """
        if 200 <= response.status_code < 300:
            return
        answer(call, response, max_bytes).payload(None)

    @classmethod
    def payload(cls, call: Call, response: requests.Response, required: str | None) -> Any:
        """Check the status, then unwrap the Success envelope of ``response``."""
        return answer(call, response, DEFAULT_MAX_ANSWER_BYTES).payload(required)

    # --- the four session calls ----------------------------------------------------------------

    def session_init(self, host: str, who: Identity) -> ResSessionInit:
        """GET session/init: headers userid, consumerKey, ip, appId."""
        method, path = c.SESSION_INIT
        headers = {**who.plain_headers(), c.H_USERID: who.userid}
        url = self._session_url(host, path)
        a = self._exchange(Call.INIT, method, url, CallAuth(who), headers)
        return ResSessionInit.parse(a.payload(None), status=a.status)

    def login_with_user_id(self, host: str, who: Identity, body: UserCredentials) -> ResLogin:
        """POST session/login/userid with ``{"userid", "password"}``: returns the one-time token."""
        method, path = c.LOGIN_USERID
        url = self._session_url(host, path)
        auth = CallAuth(who, body=body.fields())
        a = self._exchange(Call.LOGIN, method, url, auth, who.plain_headers())
        return ResLogin.parse(a.payload("oneTimeToken"), status=a.status)

    def generate_session2_fa(
        self, host: str, who: Identity, one_time_token: Secret, body: UserDetails
    ) -> ResSession2FA:
        """POST session/2FA/accesscode with the OTT header: returns the session token."""
        method, path = c.TWO_FA_ACCESSCODE
        url = self._session_url(host, path)
        auth = CallAuth(who, {c.H_ONE_TIME_TOKEN: one_time_token}, body.fields())
        a = self._exchange(Call.TWO_FA, method, url, auth, who.plain_headers())
        return ResSession2FA.parse(a.payload("sessionToken"), status=a.status)

    def session_logout(self, host: str, who: Identity, session_token: Secret) -> ResLogout:
        """DELETE session/logout: invalidates ``session_token`` on the server."""
        method, path = c.SESSION_LOGOUT
        headers = {**who.plain_headers(), c.H_USERID: who.userid}
        url = self._session_url(host, path)
        auth = CallAuth(who, {c.H_SESSION_TOKEN: session_token})
        a = self._exchange(Call.LOGOUT, method, url, auth, headers)
        return ResLogout.parse(a.payload(None), status=a.status)

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
        merged = who.plain_headers()
        if headers:
            merged.update(headers)
        auth = CallAuth(who, {c.H_SESSION_TOKEN: session_token})
        return self.send(method, url, headers=merged, auth=auth, **kwargs)


def _timed_out(exc: requests.RequestException) -> bool:
    """True for a timeout, also when urllib3's retries wrapped it in a ConnectionError."""
    if isinstance(exc, requests.Timeout):
        return True
    first = exc.args[0] if exc.args else None
    if isinstance(first, urllib3_exceptions.ReadTimeoutError):  # met reading a streamed body
        return True
    reason = getattr(first, "reason", None)
    # urllib3's NewConnectionError (connection refused) subclasses ConnectTimeoutError.
    refused = isinstance(reason, urllib3_exceptions.NewConnectionError)
    return isinstance(reason, urllib3_exceptions.TimeoutError) and not refused


def _transport_error(method: str, url: str | None, exc: requests.RequestException) -> KSError:
    path = urlsplit(url or "").path
    if isinstance(exc, requests.exceptions.InvalidHeader):  # its text quotes the value
        return ConfigurationError(
            f"{method} {path}: a header value has line breaks or leading spaces",
            hint="check the credentials and headers for pasted line breaks",
        )
    if _timed_out(exc):
        return RequestTimeout(f"{method} {path} timed out")
    return NetworkError(f"{method} {path} failed: {type(exc).__name__}")


def _too_large(call: Call, status: int, cap: int) -> MalformedAnswer:
    return MalformedAnswer(
        f"{call.value} answer: field 'body' is larger than max_answer_bytes={cap}",
        status=status,
        field="body",
        call=call.value,
    )


def _retry_after(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return Retry.parse_retry_after(Retry(), header)
    except Exception:  # an unparsable header is not worth failing over
        return None


def answer(call: Call, response: requests.Response, max_bytes: int) -> Answer:
    """The :class:`Answer` of an already read ``response`` (a trading call's): a body over
    ``max_bytes`` is not decoded (MalformedAnswer); one that is not JSON decodes to
    :class:`~session_fsm.models.Undecodable`, which a non-2xx answer treats as no fault."""
    status = response.status_code
    retry_after = _retry_after(response.headers.get("Retry-After"))
    if len(response.content or b"") > max_bytes:
        raise _too_large(call, status, max_bytes)
    return Answer(call, status, retry_after, decode_answer(response.content or b""))
