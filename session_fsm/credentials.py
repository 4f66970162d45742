"""Who the session logs in as, and where its password and access code come from.

A secret comes from a *provider*: a literal, an environment variable, a callable (a person
asked through a bot's chat), a TOTP secret (pyotp), or a one-shot value. ``available()`` is
pure (it never asks anyone); ``get()`` produces the value. A provider that cannot answer again
(``repeatable`` false, already used) makes an automatic re-login raise ``ReloginNeedsHuman``.

The library's own providers (a literal, an environment variable, a TOTP secret, a one-shot
value) never wait. Any other is the application's code, which may (a person asked in a chat):
the core asks it through its driver (the ``Ask`` effect), so an async session runs a plain
function in a worker thread and awaits an ``async def`` one, never blocking its event loop.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeGuard, runtime_checkable

import pyotp

from . import validation as v
from .errors import ConfigurationError, KSError
from .secret import Secret

if TYPE_CHECKING:
    from .core.calls import Identity


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
    automatic re-login must not call it. An ``async def`` function is awaited by
    :class:`~session_fsm.AsyncKSSession` (on its event loop); a plain one runs there in a
    worker thread. :class:`~session_fsm.KSSession` calls a plain one and refuses an async one.
    """

    def __init__(
        self,
        fn: Callable[[], str | Secret] | Callable[[], Awaitable[str | Secret]],
        *,
        repeatable: bool = True,
        what: str = "secret",
    ) -> None:
        self._fn = v.callable_(what, fn)
        self.repeatable = v.flag("repeatable", repeatable)
        self.what = what
        self._used = False
        #: ``fn`` is a coroutine function (or an object whose ``__call__`` is one).
        self.awaitable = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            type(fn).__call__
        )

    def available(self) -> bool:
        return self.repeatable or not self._used

    def get(self) -> Secret:
        """The function's answer; ConfigurationError if it is not a non-empty string, or if
        the function is ``async def`` (it needs an event loop: an async session awaits it)."""
        if self.awaitable:
            raise ConfigurationError(
                f"the {self.what} callable is an async function, which KSSession cannot await",
                hint="use AsyncKSSession, or give KSSession a plain function",
            )
        self._used = True
        return as_secret(self._fn(), f"the {self.what} callable")

    async def aget(self) -> Secret:
        """:meth:`get` for an async session: an ``async def`` function awaited."""
        self._used = True
        answer = self._fn()
        value = await answer if inspect.isawaitable(answer) else answer
        return as_secret(value, f"the {self.what} callable")

    def __repr__(self) -> str:
        return f"FromCallable(repeatable={self.repeatable})"


#: The shortest TOTP secret accepted, in bits after base32 decoding (pyotp's own floor).
MIN_TOTP_BITS = 112


def _base32_bits(text: str) -> int | None:
    """How many bits ``text`` decodes to as base32 (padding optional, any case); None if it is
    not base32. Nothing about the text itself is ever reported."""
    try:
        return len(base64.b32decode(text + "=" * (-len(text) % 8), casefold=True)) * 8
    except (ValueError, TypeError):  # binascii.Error is a ValueError
        return None


class Totp:
    """An access code computed from a TOTP secret (pyotp), at the time of asking."""

    repeatable = True

    def __init__(
        self, secret: str | Secret, *, clock: Callable[[], float] = time.time, digits: int = 6
    ) -> None:
        v.count("Totp digits", digits, minimum=6, maximum=10)
        bits = _base32_bits(secret.reveal() if isinstance(secret, Secret) else secret)
        usable = bits is not None and bits >= MIN_TOTP_BITS
        totp = _totp_or_none(secret, digits) if usable else None
        del secret  # no raising frame keeps the seed in a local
        if bits is None:
            raise ConfigurationError("totp_secret is not valid base32")
        if bits < MIN_TOTP_BITS:
            raise ConfigurationError(
                f"totp_secret is too short: {bits} bits, a TOTP secret needs at least "
                f"{MIN_TOTP_BITS} (usually 32 base32 characters)",
                hint="copy the whole secret from the broker's TOTP set-up page",
            )
        if totp is None:
            raise ConfigurationError("totp_secret is not a usable TOTP secret")
        self._totp = totp
        self._clock = v.callable_("Totp clock", clock)

    def available(self) -> bool:
        return True

    def get(self) -> Secret:
        return Secret(self._totp.at(int(self._clock())))

    def __repr__(self) -> str:
        return "Totp(secret=<hidden>)"

    def __reduce__(self) -> tuple[object, ...]:
        # Like Secret: the seed would be in the pickle, and every code for ever follows from it.
        raise TypeError("Totp values are not picklable (they hold a TOTP seed)")


def _totp_or_none(secret: str | Secret, digits: int) -> pyotp.TOTP | None:
    """A working pyotp TOTP for ``secret``, or None (the error, and this frame, are dropped)."""
    try:
        totp = pyotp.TOTP(secret.reveal() if isinstance(secret, Secret) else secret, digits=digits)
        totp.at(0)
    except Exception:
        return None
    return totp


def _make_totp(secret: str | Secret, digits: int) -> pyotp.TOTP | None:
    """A TOTP of ``secret``, or None when it is not valid base32 (pyotp's exception, which
    may hold the seed, is dropped here)."""
    try:
        totp = pyotp.TOTP(Secret(secret).reveal(), digits=digits)
        totp.at(0)
    except Exception:
        return None
    return totp


ProviderLike = str | Secret | SecretProvider | Callable[[], str] | Callable[[], Awaitable[str]]


def as_secret(value: object, source: str) -> Secret:
    """``value`` (what ``source`` produced) as a non-empty Secret; ConfigurationError if it is
    anything else (None, a number, an empty or blank string), so nothing such is ever sent."""
    if isinstance(value, str):
        value = Secret(value)
    if not isinstance(value, Secret):
        got = "no value" if value is None else f"type {type(value).__name__}"
        raise ConfigurationError(f"{source} must give a non-empty string; it gave {got}")
    if not value.reveal().strip():
        raise ConfigurationError(f"{source} must give a non-empty string; it gave a blank one")
    return value


def produce(provider: SecretProvider, what: str) -> Secret:
    """Ask ``provider`` for ``what`` (``password``, ``access_code``): a non-empty Secret, or
    ConfigurationError naming ``what`` before anything is sent (never the value). A provider
    that raises (a chat nobody answered, a vault that is down) is that error too, naming its
    error's class only (its text, chain and frames may hold the secret): a typed error, which a
    re-login's waiters raise again rather than each asking the provider once more."""
    with _Asking(what):
        value = provider.get()
    return as_secret(value, _source(what))


async def produce_awaited(provider: SecretProvider, what: str) -> Secret:
    """:func:`produce` for an async session, off its event loop's back: an ``async def``
    function awaited, any other provider of the application's run in a worker thread."""
    if not _is_async(provider):
        return await asyncio.to_thread(produce, provider, what)
    with _Asking(what):
        value = await provider.aget()
    return as_secret(value, _source(what))


class _Asking:
    """``with _Asking(what):`` around asking a provider: its own error (not a KSError, not a
    cancellation) becomes the ConfigurationError of :func:`produce`, with nothing chained."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: object, tb: object) -> None:
        if kind is None or not issubclass(kind, Exception) or issubclass(kind, KSError):
            return  # answered, or passed on as it is
        del exc, tb
        _provider_failed(self.what, kind.__name__).unchained()


#: The library's own providers: they never wait (no person, no network), so the core asks
#: them itself. Any other provider is the application's code, asked through the driver.
QUIET_PROVIDERS: frozenset[type] = frozenset({Literal, OneShot, FromEnv, Totp})


def asks_the_application(provider: SecretProvider) -> bool:
    """Whether ``provider`` is the application's code (it may block, or be async)."""
    return type(provider) not in QUIET_PROVIDERS


def refuse_async_providers(credentials: Credentials) -> None:
    """ConfigurationError (at KSSession's construction, not at a re-login hours later) if a
    password or access-code provider is an ``async def`` function: only an async session can
    await it."""
    for what in ("password", "access_code"):
        if _is_async(getattr(credentials, f"{what}_provider")):
            raise ConfigurationError(
                f"Credentials.{what} is an async function, which KSSession cannot await",
                hint="use AsyncKSSession, or give KSSession a plain function",
            )


def _is_async(provider: SecretProvider | None) -> TypeGuard[FromCallable]:
    """Whether ``provider`` is an ``async def`` function (only an async session awaits it)."""
    return isinstance(provider, FromCallable) and provider.awaitable


def _source(what: str) -> str:
    return f"the {what} (Credentials({what}=...))"


def _provider_failed(what: str, failed: str) -> ConfigurationError:
    return ConfigurationError(
        f"{_source(what)} could not be had: its provider raised {failed}",
        hint=f"check what gives the {what} (a callable, an environment variable, a TOTP "
        "secret), then call connect()",
    )


def as_provider(value: ProviderLike | None, what: str) -> SecretProvider | None:
    """Turn a string, Secret, callable or provider into a provider (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (str, Secret)):
        return Literal(value)
    if isinstance(value, SecretProvider):
        return value
    if callable(value):
        return FromCallable(value, what=what)
    got = f"type {type(value).__name__}"
    raise ConfigurationError(f"{what} must be a str, a provider or a callable; got {got}")


@dataclass(frozen=True, repr=False, init=False)
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

    def __init__(
        self,
        userid: str,
        consumer_key: str,
        access_token: str | Secret,
        password: ProviderLike | None = None,
        access_code: ProviderLike | None = None,
        ip: str = "127.0.0.1",
        app_id: str = "session_fsm",
        totp_secret: str | Secret | None = None,
        access_token_provider: Callable[[], str] | None = None,
    ) -> None:
        # Written out (not dataclass-generated) so the plain secrets leave this frame's locals
        # before any check can raise: a traceback rendered with its locals shows none of them.
        put = object.__setattr__
        put(self, "userid", userid)
        put(self, "consumer_key", consumer_key)
        put(self, "access_token", access_token)
        put(self, "password", password)
        put(self, "access_code", access_code)
        put(self, "ip", ip)
        put(self, "app_id", app_id)
        put(self, "totp_secret", totp_secret)
        put(self, "access_token_provider", access_token_provider)
        del access_token, password, access_code, totp_secret
        self.__post_init__()

    def __post_init__(self) -> None:
        # Every field is checked here: header values are visible ASCII (a pasted zero-width
        # space or CR/LF fails now, naming the field, not at the first request with the value
        # in a UnicodeEncodeError). Secrets are wrapped before they are checked.
        missing = [
            name
            for name in ("userid", "consumer_key", "access_token", "ip", "app_id")
            if getattr(self, name) is None or getattr(self, name) == ""
        ]
        if missing:
            raise ConfigurationError(f"Credentials needs {', '.join(missing)}")
        token = self.access_token
        if not isinstance(token, str | Secret):
            raise ConfigurationError(
                f"Credentials.access_token must be a str or Secret; got type {type(token).__name__}"
            )
        object.__setattr__(self, "access_token", Secret(token))
        del token
        if self.totp_secret is not None and not isinstance(self.totp_secret, str | Secret):
            raise ConfigurationError(
                "Credentials.totp_secret must be a base32 str or Secret; "
                f"got type {type(self.totp_secret).__name__}"
            )
        # Every secret is wrapped before anything else can raise: a failing check below must
        # not leave a plain password in ``self``, reachable from the traceback's frames.
        if self.totp_secret is not None:
            object.__setattr__(self, "totp_secret", Secret(self.totp_secret))
        object.__setattr__(self, "password", as_provider(self.password, "password"))
        code = as_provider(self.access_code, "access_code")
        if code is None and self.totp_secret:
            code = Totp(self.totp_secret)
        object.__setattr__(self, "access_code", code)
        v.secret_header("Credentials.access_token", self.bearer)
        v.header_text("Credentials.userid", self.userid)
        v.header_text("Credentials.consumer_key", self.consumer_key)
        v.ip_address("Credentials.ip", self.ip)
        v.header_text("Credentials.app_id", self.app_id, spaces=True)
        if self.access_token_provider is not None:
            v.callable_("Credentials.access_token_provider", self.access_token_provider)
        from .core.calls import Identity  # (the core's modules import this one)

        # Made once, with the credentials: every session of them starts from this one
        # immutable value (a session made then costs no object for it).
        object.__setattr__(
            self, "_identity", Identity(self.userid, self.consumer_key, self.ip, self.app_id,
                                        self.bearer)
        )  # fmt: skip

    @property
    def identity(self) -> Identity:
        """Who calls with these credentials: the identifiers and the Bearer token (a Secret),
        as sessions start with them (a session's own changes when its provider replaces the
        Bearer token)."""
        who: Identity = self._identity  # type: ignore[attr-defined]
        return who

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
