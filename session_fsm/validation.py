"""Checks of settings and credential fields, run when the object holding them is constructed.

Each function takes the field's name and the value given, returns the value in its canonical
form, and raises :class:`~session_fsm.errors.ConfigurationError` naming the field and what it
must be. A message never holds the value (it may be a token pasted in the wrong place): only
the field's name, the expected form and, at most, the given value's type name. The errors are
raised outside any ``except`` block, so no chained exception carries the value either.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError
from .secret import Secret

#: The longest duration any setting may take (a week): longer is a typo, and keeps every
#: timeout far below ``threading.TIMEOUT_MAX``.
MAX_SECONDS = 7 * 24 * 3600.0
#: The longest header value accepted (a gateway JWT is a few hundred characters).
MAX_HEADER_LENGTH = 8192
#: Visible ASCII (RFC 9110 ``VCHAR``): what a header value may hold, so it is sent as written.
_VISIBLE = re.compile(r"[\x21-\x7e]+")
#: Visible ASCII words separated by single spaces (an app id such as ``my bot``).
_VISIBLE_WORDS = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
#: A DNS name: letters, digits and hyphens in dot-separated labels (IDNs in their ``xn--`` form).
_DOMAIN = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*")


def _fail(field: str, must: str, value: Any, hint: str | None = None) -> ConfigurationError:
    """The error for ``field``: what it must be and the type it got (never the value)."""
    got = "no value" if value is None else f"type {type(value).__name__}"
    return ConfigurationError(f"{field} must be {must}; got {got}", hint=hint)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def seconds(
    field: str, value: Any, *, positive: bool = False, maximum: float = MAX_SECONDS
) -> float:
    """A finite number of seconds, ``> 0`` when ``positive`` else ``>= 0``, up to ``maximum``."""
    low = "> 0" if positive else ">= 0"
    must = f"{low} (a finite number of seconds, at most {maximum:g})"
    if not _is_number(value):
        raise _fail(field, must, value)
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0) and value <= maximum
    if not ok:
        raise ConfigurationError(f"{field} must be {must}; got a number outside that range")
    return float(value)


def optional_seconds(field: str, value: Any, *, positive: bool = False) -> float | None:
    """``None``, or :func:`seconds`."""
    return None if value is None else seconds(field, value, positive=positive)


def count(field: str, value: Any, *, minimum: int, maximum: int) -> int:
    """A whole number within ``minimum..maximum`` (a bool is not one)."""
    must = f">= {minimum} (a whole number, at most {maximum})"
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(field, must, value)
    if not minimum <= value <= maximum:
        raise ConfigurationError(f"{field} must be {must}; got a number outside that range")
    return value


def flag(field: str, value: Any) -> bool:
    """``True`` or ``False`` (not a truthy string, number or None)."""
    if not isinstance(value, bool):
        raise _fail(field, "True or False", value)
    return value


def timeout(field: str, value: Any) -> tuple[float, float]:
    """A (connect, read) pair of positive seconds; one number stands for both."""
    must = "seconds > 0 as a number or a (connect, read) pair of numbers"
    if _is_number(value):
        one = seconds(field, value, positive=True)
        return (one, one)
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise _fail(field, must, value)
    connect = seconds(f"{field}[0] (connect)", value[0], positive=True)
    read = seconds(f"{field}[1] (read)", value[1], positive=True)
    return (connect, read)


def callable_(field: str, value: Any) -> Any:
    """Something callable."""
    if not callable(value):
        raise _fail(field, "callable", value)
    return value


def instance(field: str, value: Any, kind: type, hint: str | None = None) -> Any:
    """An instance of ``kind``."""
    if not isinstance(value, kind):
        raise _fail(field, f"a {kind.__name__}", value, hint)
    return value


def _header_must(spaces: bool) -> str:
    return "a non-empty string of visible ASCII characters" + (
        " (single spaces between words allowed)" if spaces else " (no spaces)"
    )


def header_problem(value: str, *, spaces: bool = False) -> str | None:
    """What keeps the string ``value`` from being a header value, or None. Never raises, so
    a revealed secret checked here is gone from the stack before any error is raised."""
    if not value or not value.strip():
        return "an empty or blank string"
    if len(value) > MAX_HEADER_LENGTH:
        return f"one over {MAX_HEADER_LENGTH} characters long"
    if (_VISIBLE_WORDS if spaces else _VISIBLE).fullmatch(value) is None:
        return "one with a space, control, invisible or non-ASCII character"
    return None


def _header_error(field: str, problem: str, spaces: bool) -> ConfigurationError:
    return ConfigurationError(
        f"{field} must be {_header_must(spaces)}; got {problem}",
        hint=f"type {field} again (pasted text can carry invisible characters)",
    )


def header_text(field: str, value: Any, *, spaces: bool = False) -> str:
    """A string sent as an HTTP header value: visible ASCII only, not empty.

    ``spaces`` allows single spaces between words. Pasted invisible characters (a zero-width
    space, a non-breaking space, CR/LF) and non-ASCII letters are refused here instead of
    failing, with the value in the message, when the first request is encoded.
    """
    if not isinstance(value, str):
        raise _fail(field, _header_must(spaces), value)
    problem = header_problem(value, spaces=spaces)
    if problem is not None:
        raise _header_error(field, problem, spaces)
    return value


def secret_header(field: str, secret: Secret) -> Secret:
    """:func:`header_text` for a secret: the plain value never sits in a raising frame."""
    problem = header_problem(secret.reveal())
    if problem is not None:
        raise _header_error(field, problem, False)
    return secret


def ip_address(field: str, value: Any) -> str:
    """An IPv4 or IPv6 address, as a string."""
    must = "an IPv4 or IPv6 address"
    if not isinstance(value, str):
        raise _fail(field, must, value)
    try:
        ipaddress.ip_address(value)
        ok = True
    except ValueError:  # its message quotes the value: not chained
        ok = False
    if not ok:
        raise ConfigurationError(f"{field} must be {must}; got a string that is not one")
    return value


def domains(field: str, value: Any) -> tuple[str, ...]:
    """DNS names (lower-cased), as a tuple; a lone string is refused (it is not a list)."""
    must = "a list or tuple of domain names (not one string)"
    if isinstance(value, str | bytes) or not isinstance(value, tuple | list | frozenset | set):
        raise _fail(field, must, value)
    names = []
    for i, name in enumerate(value):
        if not isinstance(name, str):
            raise _fail(f"{field}[{i}]", "a domain name string", name)
        low = name.lower()
        if len(low) > 253 or _DOMAIN.fullmatch(low) is None:
            raise ConfigurationError(
                f"{field}[{i}] must be a domain name (ASCII letters, digits, hyphens and dots; "
                "IDNs in their xn-- form)"
            )
        names.append(low)
    return tuple(names)


def verify(field: str, value: Any) -> bool | str:
    """TLS verification: ``True``, ``False`` or the path of an existing CA bundle."""
    if isinstance(value, bool):
        return value
    must = "True, False or the path of a CA bundle file or folder"
    if not isinstance(value, str) or not value:
        raise _fail(field, must, value)
    if not os.path.exists(value):
        raise ConfigurationError(f"{field} must be {must}; no file or folder is at that path")
    return value


def zone(field: str, value: Any) -> str:
    """An IANA time zone name that this machine knows."""
    from zoneinfo import ZoneInfo

    must = 'an IANA time zone name such as "Asia/Kolkata"'
    if not isinstance(value, str) or not value:
        raise _fail(field, must, value)
    try:
        ZoneInfo(value)
        ok = True
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        ok = False
    if not ok:
        raise ConfigurationError(
            f"{field} must be {must}; this one is unknown here",
            hint="check the spelling, or install tzdata",
        )
    return value


def time_of_day(field: str, value: Any) -> str:
    """A time of day as ``"HH:MM"`` (or ``"HH:MM:SS"``)."""
    import datetime as dt

    must = 'a time of day such as "15:30"'
    if not isinstance(value, str):
        raise _fail(field, must, value)
    try:
        dt.time.fromisoformat(value)
        ok = True
    except ValueError:
        ok = False
    if not ok:
        raise ConfigurationError(f"{field} must be {must}; got a string that is not one")
    return value


def each_callable(field: str, value: Any) -> list[Callable[..., Any]]:
    """One callable or a list of them, as a list."""
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        callable_(f"{field}[{i}]" if isinstance(value, list) else field, item)
    return list(items)
