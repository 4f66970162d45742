"""A value that never shows itself: the one type every token, password and code travels in.

``Secret`` prints as a short keyed fingerprint (``Secret(fp=3fa9c2d1)``) so two log lines or
errors can be correlated without the value ever reaching a terminal. The fingerprint is an
HMAC under a key drawn once per process, so even a 4-digit access code cannot be recovered from
its fingerprint by trying every value.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Final

_KEY: Final = os.urandom(32)


def fingerprint(value: str) -> str:
    """Return an 8-hex-digit keyed fingerprint of ``value`` (stable within one process)."""
    return hmac.new(_KEY, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:8]


class Secret:
    """An immutable secret string. ``str()``/``repr()`` show only a fingerprint.

    Call :meth:`reveal` at the one place the value must go on the wire.
    """

    __slots__ = ("_fp", "_value")

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"Secret takes a str, not {type(value).__name__}")
        self._value = value
        self._fp = ""  # computed on first use: most secrets are never printed

    def reveal(self) -> str:
        """Return the plain value (for the wire only; never log it)."""
        return self._value

    @property
    def fingerprint(self) -> str:
        """The keyed fingerprint shown in place of the value."""
        if not self._fp:
            self._fp = fingerprint(self._value)
        return self._fp

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return hmac.compare_digest(self._value.encode(), other._value.encode())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"Secret(fp={self.fingerprint})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling (e.g. into a multiprocessing queue) is refused: a secret crosses a process
        # boundary only through a token store that chose to persist it.
        raise TypeError("Secret values are not picklable")
