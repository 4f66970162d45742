"""Configuration of the sandbox: the demo accounts, the gateway credentials and the TTLs.

Every field has a default, so ``SandboxConfig()`` is a working sandbox a new user can log in
to with the credentials :func:`session_fsm.sandbox.banner` prints.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: The two spellings of the success envelope key seen in the wild.
ENVELOPE_KEYS: tuple[str, str] = ("Success", "success")
#: When placed orders fill: at once, never, or when the control plane says (``POST /fill``).
FILL_RULES: tuple[str, ...] = ("immediate", "never", "manual")
#: The two ways the API says "session invalid" on a trading call: 401 with fault 99999 (seen
#: in the field) or 403 "Invalid session, please re-login to continue" (the API's own docs).
INVALID_SESSION_STATUSES: tuple[int, ...] = (401, 403)


@dataclass(frozen=True)
class Account:
    """One sandbox user.

    ``access_code`` is the static 2FA access code. When ``totp_secret`` is set, the current
    ``pyotp.TOTP(totp_secret)`` code (``valid_window=1``, wall-clock time) is accepted as well,
    in addition to ``access_code`` if that is non-empty.
    """

    userid: str
    password: str
    access_code: str = ""
    totp_secret: str | None = None

    def __post_init__(self) -> None:
        if not self.userid:
            raise ValueError("Account.userid must be non-empty")
        if not self.access_code and not self.totp_secret:
            raise ValueError(f"account {self.userid!r} needs an access_code or a totp_secret")
        if self.totp_secret:
            padded = self.totp_secret.upper() + "=" * (-len(self.totp_secret) % 8)
            try:
                base64.b32decode(padded, casefold=True)
            except (binascii.Error, ValueError):
                raise ValueError(
                    f"account {self.userid!r}: totp_secret is not a base32 secret"
                ) from None


DEMO_ACCOUNT = Account(userid="demo-user", password="demo-password", access_code="1234")


@dataclass(frozen=True)
class SandboxConfig:
    """Everything the sandbox needs to know; immutable, so it can be shared between threads.

    ``redirect_host`` is what ``session/init`` answers in ``redirect.host``; ``None`` means the
    sandbox's own base URL. The text ``{port}`` in it is replaced by the bound port, so a
    sandbox bound on ``127.0.0.1`` with ``port=0`` can redirect to
    ``"http://localhost:{port}/apim"``.

    ``single_session`` (default on, as brokers enforce it): a new 2FA of a user ends that user's
    previous session. Off, every 2FA adds a session and the earlier ones stay live.
    ``invalid_session`` is the status a trading call with a dead session token gets: 401 with
    fault 99999, or 403 "Invalid session, please re-login to continue". ``fill`` is when orders
    fill (:data:`FILL_RULES`). These three can be changed at run time through the control
    plane (``settings``); ``reset`` puts them back to these values.

    ``clock`` is the base of the sandbox clock (``time.monotonic`` by default); the clock the
    sandbox uses for token expiry is ``clock() + offset`` where the control plane advances the
    offset, so tests never sleep to expire things.
    """

    accounts: tuple[Account, ...] = (DEMO_ACCOUNT,)
    consumer_key: str = "demo-consumer-key"
    access_token: str = "demo-access-token"
    ott_ttl: float = 300.0
    session_ttl: float = 28800.0
    redirect_host: str | None = None
    envelope: str = "Success"
    single_session: bool = True
    invalid_session: int = 401
    fill: str = "immediate"
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.accounts:
            raise ValueError("SandboxConfig.accounts must hold at least one account")
        ids = [a.userid for a in self.accounts]
        if len(set(ids)) != len(ids):
            raise ValueError("SandboxConfig.accounts has duplicate userids")
        if not self.consumer_key or not self.access_token:
            raise ValueError("consumer_key and access_token must be non-empty")
        if self.ott_ttl <= 0 or self.session_ttl <= 0:
            raise ValueError("ott_ttl and session_ttl must be positive")
        if self.envelope not in ENVELOPE_KEYS:
            raise ValueError(f"envelope must be one of {ENVELOPE_KEYS}, not {self.envelope!r}")
        Settings(self.single_session, self.invalid_session, self.fill).check()

    def settings(self) -> Settings:
        """The run-time settings this configuration starts with."""
        return Settings(self.single_session, self.invalid_session, self.fill)

    def account(self, userid: str) -> Account | None:
        """Return the account named ``userid``, or ``None``."""
        for acc in self.accounts:
            if acc.userid == userid:
                return acc
        return None


@dataclass(frozen=True)
class Settings:
    """The sandbox behaviour the control plane may switch at run time (see SandboxConfig)."""

    single_session: bool = True
    invalid_session: int = 401
    fill: str = "immediate"

    def check(self) -> Settings:
        """Return ``self`` if every field is valid, else raise ValueError naming the field."""
        if not isinstance(self.single_session, bool):
            raise ValueError("'single_session' must be true or false")
        valid_status = isinstance(self.invalid_session, int) and not isinstance(
            self.invalid_session, bool
        )
        if not valid_status or self.invalid_session not in INVALID_SESSION_STATUSES:
            raise ValueError(f"'invalid_session' must be one of {INVALID_SESSION_STATUSES}")
        if self.fill not in FILL_RULES:
            raise ValueError(f"'fill' must be one of {FILL_RULES}")
        return self

    def to_json(self) -> dict[str, object]:
        """The control-plane JSON form."""
        return {
            "single_session": self.single_session,
            "invalid_session": self.invalid_session,
            "fill": self.fill,
        }
