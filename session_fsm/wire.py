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

Below the retries, every request the Wire's own ``requests.Session`` sends goes through a
:class:`~session_fsm.transport.GuardedAdapter`: the host is checked against the allow-list
(:mod:`session_fsm.hosts`) at the last moment, and the call (connect, whole body, retries and
their waits) is bounded by ``WireConfig.deadline``. The pooled connections belong to the
process that made them: a forked child makes its own on its first request.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
from urllib3.util.retry import Retry

from . import contract as c
from . import validation
from .answers import (
    CHUNK,
    CallAuth,
    CappedBody,
    _too_large,
    _where,
    answer,
    answer_of,
    passed_deadline,
    seal,
    seal_response,
    tls_files_unusable,
    trading_call,
    transport_error,
    unsendable,
)
from .answers import Identity as Identity  # re-exported: where it was first defined
from .core.calls import Answer, SessionCall, result_of
from .environment import EnvironmentSettings
from .errors import (
    APIError,
    Call,
    ConfigurationError,
    KSError,
    RequestTimeout,
)
from .hosts import LOOPBACK_HOSTS as LOOPBACK_HOSTS  # where it was first defined
from .hosts import check_url as check
from .hosts import refusal
from .locks import ForkSafeLock
from .models import (
    DEFAULT_MAX_ANSWER_BYTES,
    ResLogin,
    ResLogout,
    ResSession2FA,
    ResSessionInit,
    UserCredentials,
    UserDetails,
)
from .retry import IDEMPOTENT_METHODS as IDEMPOTENT_METHODS  # re-exported, as Identity
from .retry import NO_RETRY as NO_RETRY
from .retry import RetryPolicy as RetryPolicy
from .secret import Secret
from .transport import DeadlineExceeded, GuardedAdapter, body_expired

USER_AGENT = "session_fsm/0.1"

T = TypeVar("T")


#: Pooled sessions a forked child inherited: kept, untouched, for the child's lifetime.
_PARENTS_POOLS: list[requests.Session | None] = []


#: Upper bound of WireConfig.pool_maxsize (larger is a typo).
MAX_POOL_SIZE = 10_000


@dataclass(frozen=True)
class WireConfig:
    """Transport settings: timeouts in seconds (connect, read), retries, TLS, allowed hosts.

    ``allowed_domains``: a redirect host must be ``https`` and equal to or under one of these;
    loopback hosts (``127.0.0.1``, ``localhost``, ``::1``) are allowed on http or https when
    ``allow_loopback`` is true, for the sandbox (see :mod:`session_fsm.hosts`; a session on a
    real host refuses loopback for its own redirects, stored hosts and ``s.auth`` requests).

    ``deadline``: the most one call may take in all (connect, the whole answer, retries and
    their waits), in seconds; past it the call raises ``RequestTimeout``.

    ``max_answer_bytes`` caps the body of a session call's answer (and the fault body of a
    trading error): larger is a MalformedAnswer.
    """

    timeout: tuple[float, float] = (3.05, 10.0)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    verify: bool | str = True
    allowed_domains: tuple[str, ...] = (c.KS_DOMAIN,)
    allow_loopback: bool = True
    pool_maxsize: int = 32
    deadline: float = 60.0
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES

    def __post_init__(self) -> None:
        put = functools.partial(object.__setattr__, self)  # canonical forms (frozen dataclass)
        put("timeout", validation.timeout("timeout", self.timeout))
        validation.instance("retry", self.retry, RetryPolicy, hint="use RetryPolicy(total=...)")
        put("verify", validation.verify("verify", self.verify))
        put("allowed_domains", validation.domains("allowed_domains", self.allowed_domains))
        validation.flag("allow_loopback", self.allow_loopback)
        validation.count("pool_maxsize", self.pool_maxsize, minimum=1, maximum=MAX_POOL_SIZE)
        check_deadline(self.deadline)


def check_deadline(value: object) -> None:
    """Raise ConfigurationError unless ``value`` is a finite number of seconds > 0."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value > 0):  # type: ignore[arg-type,operator]
        raise ConfigurationError(
            "deadline must be a finite number of seconds > 0", hint="e.g. deadline=60"
        )


def host_allowed(url: str, config: WireConfig) -> bool:
    """True when ``url`` may receive our credentials under ``config``'s allow-list (the host
    decided as urllib3 connects; see :mod:`session_fsm.hosts`)."""
    return refusal(url, tuple(config.allowed_domains), bool(config.allow_loopback)) is None


def check_url(url: str, config: WireConfig) -> None:
    """Raise UnsafeRedirect (naming the host, never user info) unless ``url`` may receive
    our credentials under ``config``'s allow-list."""
    check(url, tuple(config.allowed_domains), bool(config.allow_loopback))


def check_host(url: str, config: WireConfig) -> str:
    """Return ``url`` without a trailing slash, or raise UnsafeRedirect."""
    check_url(url, config)
    return url.rstrip("/")


#: A session that only computes where a redirect goes (never sends, reads no environment).
_REDIRECTS = requests.Session()
_REDIRECTS.trust_env = False


def redirect_guard(
    check: Callable[[str], None], *, refuse: bool = True
) -> Callable[..., requests.Response]:
    """A ``response`` hook that keeps our secrets off a redirect to a URL that ``check``
    refuses: requests copies the request's headers (the session token among them) and, for
    307/308, its body into the next hop, and drops only ``Authorization`` when the host
    changes. The next hop is computed by requests' own redirect code (a dry run, as for
    ``Response.next``); for a refused one the request is sealed (the hop copies it), then
    ``check``'s error (UnsafeRedirect) is raised before anything is sent, or, with
    ``refuse=False`` (an auth's hook, which must not raise), the answer is returned."""

    def hook(response: requests.Response, **kwargs: Any) -> requests.Response:
        if not response.is_redirect or response.request is None:
            return response
        try:
            hops = _REDIRECTS.resolve_redirects(response, response.request, yield_requests=True)
            url = next(iter(hops)).url or ""
        except Exception:  # an unparsable Location: requests would fail on it as well
            url = ""
        try:
            check(url)
        except KSError:
            seal(response.request, drop_body=True)  # the hop copies this request
            if not refuse:
                return response
            response.close()
            raise
        return response

    return hook


class Wire:
    """The transport for one or many sessions. Cheap to create; connects on first call.

    The ``requests.Session`` it makes has ``trust_env`` off: proxy settings (``HTTPS_PROXY``,
    ``NO_PROXY``, ...) and ``REQUESTS_CA_BUNDLE`` are read from the environment once (see
    :mod:`session_fsm.environment`) instead of on every request, and ``~/.netrc`` never
    replaces the Bearer header. A session passed as ``http`` is used as it is (no deadline;
    the host is still checked before each request), also after a fork: give a child its own.

    Fork-safe: the pooled session the Wire makes belongs to the process that made it, and a
    forked child makes its own at its first request (the parent's keep-alive sockets are left
    to the parent).
    """

    def __init__(self, config: WireConfig | None = None, http: requests.Session | None = None):
        self.config = config or WireConfig()
        self._http = http
        self._pid = os.getpid() if http is not None else 0  # whose pool self._http is
        self._given = http is not None  # a caller's session is used as it is, even after fork
        self._env: EnvironmentSettings | None = None  # set when the Wire makes its own session
        self._mounted: set[str] = set()
        self._lock = ForkSafeLock(self.config.deadline, _lock_wait_expired)

    def __repr__(self) -> str:
        return f"Wire(timeout={self.config.timeout})"

    # --- plumbing ------------------------------------------------------------------------------

    @property
    def http(self) -> requests.Session:
        """The pooled ``requests.Session`` of this process (created on first use)."""
        http = self._http
        if http is None or not self._mine():
            with self._lock:
                if not self._mine():
                    self._forget_parents_pool()
                if self._http is None:
                    s = requests.Session()
                    s.trust_env = False  # the environment is read once, by self._env
                    s.headers["User-Agent"] = USER_AGENT
                    self._env = EnvironmentSettings()
                    self._mount(s, "http://", self.config.retry.for_trading())
                    self._mount(s, "https://", self.config.retry.for_trading())
                    self._http, self._pid = s, os.getpid()
                http = self._http
        return http

    def _forget_parents_pool(self) -> None:
        """In a forked child: leave the parent's pooled session alone, never closed and never
        collected (its sockets and locks are the parent's; a lock a parent thread held at the
        fork would hang the child's clean-up), and start afresh."""
        _PARENTS_POOLS.append(self._http)
        self._http = None
        self._env = None
        self._mounted = set()

    def _mine(self) -> bool:
        """True when the pooled session was made in this process (or given by the caller)."""
        return self._given or self._pid == os.getpid()

    def _check(self, url: str) -> None:
        check_url(url, self.config)

    def _mount(self, s: requests.Session, prefix: str, retry: Retry) -> None:
        size = self.config.pool_maxsize
        adapter = GuardedAdapter(
            self._check,
            self.config.deadline,
            max_retries=retry,
            pool_connections=size,
            pool_maxsize=size,
        )
        s.mount(prefix, adapter)

    def _session_url(self, host: str, path: str) -> str:
        prefix = f"{host}/session/"
        http = self.http  # first: a forked child's Wire forgets the parent's mounts here
        if prefix not in self._mounted:
            with self._lock:
                if prefix not in self._mounted:
                    self._mount(http, prefix, self.config.retry.for_session_calls())
                    self._mounted.add(prefix)
        return host + path

    def close(self) -> None:
        """Close pooled connections (the Wire may be used again afterwards)."""
        with self._lock:
            if self._http is not None:
                if self._mine():
                    self._http.close()
                else:  # a parent's pool is the parent's to close
                    self._forget_parents_pool()
                self._http = None
                self._given = False
                self._env = None  # the next session reads the environment again
                self._mounted.clear()

    def send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send one request with the configured timeout; map transport failures to our errors.

        ``kwargs`` are requests' own and win over the Wire's defaults (``proxies`` key by key).
        """
        config = self.config
        check_url(url, config)  # the adapter checks again, last, on the prepared request
        http = self._http
        if http is None or not self._mine():
            http = self.http
        options: dict[str, Any] = {"timeout": config.timeout, "allow_redirects": False}
        if kwargs.get("allow_redirects"):  # each hop is checked before requests sends it
            hooks = dict(kwargs.pop("hooks", None) or {})
            theirs = hooks.get("response") or []
            theirs = [theirs] if callable(theirs) else list(theirs)
            hooks["response"] = [redirect_guard(self._check), *theirs]
            options["hooks"] = hooks
        env = self._env
        if env is None:
            options["verify"] = config.verify
        else:
            options["verify"] = env.verify(config.verify)
            given = kwargs.pop("proxies", None)  # no local holds the environment's proxies
            options["proxies"] = {**env.proxies(url), **given} if given else env.proxies(url)
        # Each failure is raised after its except block: requests' exception (whose .request
        # holds the sent headers and body) must not stay reachable as the error's __context__.
        try:
            return http.request(method, url, **{**options, **kwargs})
        except DeadlineExceeded:
            error: KSError = passed_deadline(method, url, config)
        except requests.RequestException as exc:
            error = transport_error(method, url, exc, config)
        except ValueError:  # http.client refused a header value (CR/LF, not latin-1): the
            # exception's text holds the value, so only its kind is kept
            error = unsendable(method, url)
        except OSError as exc:  # requests' own check of the CA bundle / client certificate paths
            error = tls_files_unusable(method, url, exc)
        # This frame is on the error's traceback: the environment's proxy URLs (which may carry
        # a password) must not be among its locals.
        options.clear()
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
        status, retry_after = response.status_code, response.headers.get("Retry-After")
        body = self._read(call, response)
        return answer_of(call, status, retry_after, body, self.config.max_answer_bytes)

    def _read(self, call: Call, response: requests.Response) -> bytes:
        """The whole body of a streamed ``response``, refusing more than ``max_answer_bytes``."""
        cap = self.config.max_answer_bytes
        status = response.status_code
        error: KSError | None = None
        body = CappedBody(cap, response.headers.get("Content-Length"))
        try:
            if not body.read(response.iter_content(CHUNK)):
                error = _too_large(call, status, cap)
        except requests.RequestException as exc:
            method, url = response.request.method or "", response.url
            if body_expired(response):  # the deadline's watchdog ended the read
                error = passed_deadline(method, url, self.config)
            else:
                error = transport_error(method, url, exc, self.config)
        finally:
            response.close()
        if error is None and body_expired(response):  # the read ended short, at the deadline
            error = passed_deadline(response.request.method or "", response.url, self.config)
        data = body.take()  # a part of the body may hold a token: only this frame holds it
        if error is not None:
            del data
            raise error
        return data

    # --- answers -------------------------------------------------------------------------------

    @staticmethod
    def raise_for(
        call: Call,
        response: requests.Response,
        max_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        where: str = "",
    ) -> None:
        """Raise the typed error for a non-2xx ``response`` of ``call``; return on 2xx.

        A fault body that is not JSON is no fault (typed by status alone); one larger than
        ``max_bytes``, nested too deeply or with a fault of the wrong shape is MalformedAnswer.
        ``where`` names the call in the API's words (``"GET /reports/1.0/orders"``); by default
        the session call's own method and path, or the request's method and path.
        """
        err = Wire.error_of(call, response, max_bytes, where=where)
        if err is not None:
            raise err

    @staticmethod
    def error_of(
        call: Call,
        response: requests.Response,
        max_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        where: str = "",
    ) -> APIError | None:
        """The typed error for a non-2xx ``response`` of ``call`` (None on 2xx); the one place
        a trading answer is read for its mapping (:func:`~session_fsm.errors.error_for`).
        Raises MalformedAnswer for a fault body of the wrong shape."""
        if 200 <= response.status_code < 300:
            return None
        return answer(call, response, max_bytes).error(where or _where(call, response))

    @classmethod
    def payload(cls, call: Call, response: requests.Response, required: str | None) -> Any:
        """Check the status, then unwrap the Success envelope of ``response``."""
        return answer(call, response, DEFAULT_MAX_ANSWER_BYTES).payload(required)

    # --- the four session calls ----------------------------------------------------------------

    def exchange(self, call: SessionCall) -> Answer:
        """Make one session call (the core's effect) and read its answer; the call's secrets
        are written into the request by :class:`~session_fsm.answers.CallAuth` only."""
        if type(self).send is Wire.send and type(self)._exchange is Wire._exchange:
            from .fast_calls import exchange  # (it imports this module)

            answered = exchange(self, call)  # straight into the pool, unless unusual
            if answered is not None:
                return answered
        method, path, headers, secrets, body = call.shape()
        url = self._session_url(call.host, path)
        return self._exchange(call.call, method, url, CallAuth(call.who, secrets, body), headers)

    def session_init(self, host: str, who: Identity) -> ResSessionInit:
        """GET session/init: headers userid, consumerKey, ip, appId."""
        result: ResSessionInit = result_of(self.exchange(SessionCall(Call.INIT, host, who)))
        return result

    def login_with_user_id(self, host: str, who: Identity, body: UserCredentials) -> ResLogin:
        """POST session/login/userid with ``{"userid", "password"}``: returns the one-time token."""
        result: ResLogin = result_of(self.exchange(SessionCall(Call.LOGIN, host, who, body)))
        return result

    def generate_session2_fa(
        self, host: str, who: Identity, one_time_token: Secret, body: UserDetails
    ) -> ResSession2FA:
        """POST session/2FA/accesscode with the OTT header: returns the session token."""
        call = SessionCall(Call.TWO_FA, host, who, body, one_time_token)
        result: ResSession2FA = result_of(self.exchange(call))
        return result

    def session_logout(self, host: str, who: Identity, session_token: Secret) -> ResLogout:
        """DELETE session/logout: invalidates ``session_token`` on the server."""
        call = SessionCall(Call.LOGOUT, host, who, token=session_token)
        result: ResLogout = result_of(self.exchange(call))
        return result

    # --- trading -------------------------------------------------------------------------------

    @staticmethod
    def trading_headers(who: Identity, session_token: Secret) -> dict[str, str]:
        """Headers of an authorised trading call: Bearer, consumerKey, sessionToken, ..."""
        return who.trading_headers(session_token)

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
        merged, auth = trading_call(who, session_token, headers)
        return self.send(method, url, headers=merged, auth=auth, **kwargs)


def _lock_wait_expired(timeout: float) -> RequestTimeout:
    return RequestTimeout(f"gave up after {timeout:g}s waiting for the transport's lock")
