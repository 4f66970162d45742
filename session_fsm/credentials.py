"""Who the session logs in as, and where its password and access code come from.

A secret comes from a *provider*: a literal, an environment variable, a callable (a person
asked through a bot's chat), a TOTP secret (pyotp), or a one-shot value. ``available()`` is
pure (it never asks anyone); ``get()`` produces the value. A provider that cannot answer again
(``repeatable`` false, already used) makes an automatic re-login raise ``ReloginNeedsHuman``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import pyotp

from .errors import ConfigurationError
from .secret import Secret


@runtime_checkable
class SecretProvider(Protocol):
    """Produces a secret on demand."""

    #: False when the provider cannot be asked again without a person (a one-shot code).
    repeatable: bool

    def available(self) -> bool:
        """Whether ``get()`` can answer now. Pure: asks no one, sends nothing."""
        ...

    def get(self) -> Secret:
        """The secret. Raises ConfigurationError when it cannot be had."""
        ...


class Literal:
    """A fixed secret."""

    repeatable = True

    def __init__(self, value: str | Secret) -> None:
        self._value = Secret(value) if isinstance(value, str) else value

    def available(self) -> bool:
        return bool(self._value)

    def get(self) -> Secret:
        return self._value

    def __repr__(self) -> str:
        return f"Literal({self._value!r})"


class OneShot:
    """A secret good for one use (an access code a person typed once)."""

    repeatable = False

    def __init__(self, value: str | Secret) -> None:
        self._value: Secret | None = Secret(value) if isinstance(value, str) else value
        self._lock = threading.Lock()

    def available(self) -> bool:
        return self._value is not None

    def get(self) -> Secret:
        with self._lock:
            value, self._value = self._value, None
        if value is None:
            raise ConfigurationError("the one-shot secret was already used")
        return value

    def __repr__(self) -> str:
        return f"OneShot(used={self._value is None})"


class FromEnv:
    """A secret read from an environment variable each time it is needed."""

    repeatable = True

    def __init__(self, name: str) -> None:
        self.name = name

    def available(self) -> bool:
        return bool(os.environ.get(self.name))

    def get(self) -> Secret:
        value = os.environ.get(self.name)
        if not value:
            raise ConfigurationError(f"environment variable {self.name} is not set")
        return Secret(value)

    def __repr__(self) -> str:
        return f"FromEnv({self.name!r})"


class FromCallable:
    """A secret produced by a function (e.g. asking a person through a chat bot).

    ``repeatable=False`` says the function can only answer when a person is present, so an
    automatic re-login must not call it.
    """

    def __init__(self, fn: Callable[[], str | Secret], *, repeatable: bool = True) -> None:
        self._fn = fn
        self.repeatable = repeatable
        self._used = False

    def available(self) -> bool:
        return self.repeatable or not self._used

    def get(self) -> Secret:
        self._used = True
        value = self._fn()
        return value if isinstance(value, Secret) else Secret(str(value))

    def __repr__(self) -> str:
        return f"FromCallable(repeatable={self.repeatable})"


class Totp:
    """An access code computed from a TOTP secret (pyotp), at the time of asking."""

    repeatable = True

    def __init__(
        self, secret: str | Secret, *, clock: Callable[[], float] = time.time, digits: int = 6
    ) -> None:
        self._clock = clock
        totp = _make_totp(secret, digits) if isinstance(secret, (str, Secret)) else None
        del secret  # raised below, and no local of this frame may hold the seed in the clear
        if totp is None:
            raise ConfigurationError("totp_secret is not valid base32")
        self._totp = totp

    def available(self) -> bool:
        return True

    def get(self) -> Secret:
        return Secret(self._totp.at(int(self._clock())))

    def __repr__(self) -> str:
        return "Totp(secret=<hidden>)"


def _make_totp(secret: str | Secret, digits: int) -> pyotp.TOTP | None:
    """A TOTP of ``secret``, or None when it is not valid base32 (pyotp's exception, which
    may hold the seed, is dropped here)."""
    try:
        totp = pyotp.TOTP(Secret(secret).reveal(), digits=digits)
        totp.at(0)
    except Exception:
        return None
    return totp


ProviderLike = str | Secret | SecretProvider | Callable[[], str]


def as_provider(value: ProviderLike | None, what: str) -> SecretProvider | None:
    """Turn a string, Secret, callable or provider into a provider (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (str, Secret)):
        return Literal(value)
    if isinstance(value, SecretProvider):
        return value
    if callable(value):
        return FromCallable(value)
    raise ConfigurationError(f"{what} must be a str, a provider or a callable")


@dataclass(frozen=True, repr=False)
class Credentials:
    """Everything needed to log in. No field's value ever appears in a repr.

    ``password`` and ``access_code`` take a string, a :class:`SecretProvider` or a callable;
    ``totp_secret`` (base32) supplies the access code when ``access_code`` is not given.
    ``access_token_provider`` (callable returning a fresh Bearer token) lets the session recover
    from a rejected gateway token (fault 900901) once instead of failing.
    """

    userid: str
    consumer_key: str
    access_token: str | Secret
    password: ProviderLike | None = None
    access_code: ProviderLike | None = None
    ip: str = "127.0.0.1"
    app_id: str = "session_fsm"
    totp_secret: str | Secret | None = field(default=None)
    access_token_provider: Callable[[], str] | None = None

    def __post_init__(self) -> None:
        missing = [
            name
            for name in ("userid", "consumer_key", "access_token", "ip", "app_id")
            if not getattr(self, name)
        ]
        if missing:
            raise ConfigurationError(f"Credentials needs {', '.join(missing)}")
        object.__setattr__(self, "access_token", Secret(self.access_token))
        object.__setattr__(self, "password", as_provider(self.password, "password"))
        code = as_provider(self.access_code, "access_code")
        if code is None and self.totp_secret:
            code = Totp(self.totp_secret)
        object.__setattr__(self, "access_code", code)
        if self.totp_secret is not None:
            object.__setattr__(self, "totp_secret", Secret(self.totp_secret))

    @property
    def password_provider(self) -> SecretProvider | None:
        """The password's provider (after normalisation)."""
        return self.password  # type: ignore[return-value]

    @property
    def access_code_provider(self) -> SecretProvider | None:
        """The access code's provider (after normalisation)."""
        return self.access_code  # type: ignore[return-value]

    @property
    def bearer(self) -> Secret:
        """The gateway (Bearer) token as a Secret."""
        assert isinstance(self.access_token, Secret)
        return self.access_token

    def __repr__(self) -> str:
        return (
            f"Credentials(userid={self.userid!r}, consumer_key=<hidden>, ip={self.ip!r}, "
            f"app_id={self.app_id!r}, access_token={self.bearer!r})"
        )

    __str__ = __repr__
