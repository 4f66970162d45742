"""Retries below the session: urllib3's ``Retry`` with a capped ``Retry-After`` that never
waits past the call's deadline, and :class:`RetryPolicy`, the immutable value users configure.

Idempotent methods are retried on 429/5xx, dropped connections and read timeouts; the four
session calls (login and 2FA POSTs included) on 429/503; POSTs on trading paths never.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from . import validation
from .hosts import LOOPBACK_HOSTS as LOOPBACK_HOSTS  # where it was first defined
from .transport import current_call

#: Methods safe to retry on 429/5xx/timeouts (and to replay after a re-login).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


#: Statuses retried for idempotent requests.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


#: Statuses retried for the session calls (login and 2FA included).
SESSION_RETRY_STATUSES = frozenset({429, 503})


#: Upper bounds of RetryPolicy.total and WireConfig.pool_maxsize (larger is a typo).
MAX_RETRIES = 100


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

    def _delay(self, response: Any) -> float:
        """Seconds to wait before the next try: the server's ``Retry-After`` (capped), else
        the jittered exponential backoff."""
        delay = None
        if response is not None and self.respect_retry_after_header:
            delay = self.get_retry_after(response)
        return self.get_backoff_time() if delay is None else delay

    def ends_past(self, deadline: float, now: float, response: Any = None) -> bool:
        """Whether waiting before the next try (``response``'s ``Retry-After``, else the
        backoff) would end at or past ``deadline`` (both monotonic seconds): then no retry."""
        return now + self._delay(response) >= deadline

    def sleep(self, response: Any = None) -> None:
        delay = self._delay(response)
        if delay > 0:
            self.sleeper(delay)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> CappedRetry:
        """urllib3's increment, and no retry whose wait would end past the call's deadline
        (an answer is then returned as it is; an error ends the call as timed out)."""
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        assert isinstance(new, CappedRetry)
        call = current_call()
        if call is not None and (
            call.expired or new.ends_past(call.deadline, time.monotonic(), response)
        ):
            call.expired = True
            reason = error or ResponseError("a retry would pass the deadline")
            raise MaxRetryError(_pool, url or "", reason)
        return new


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

    def __post_init__(self) -> None:
        validation.count("RetryPolicy.total", self.total, minimum=0, maximum=MAX_RETRIES)
        for name in ("backoff_factor", "backoff_jitter", "backoff_max", "retry_after_cap"):
            object.__setattr__(
                self, name, validation.seconds(f"RetryPolicy.{name}", getattr(self, name))
            )
        validation.callable_("RetryPolicy.sleeper", self.sleeper)

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
