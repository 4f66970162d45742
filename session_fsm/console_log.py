"""How the library's events read on a terminal: short lines, colour only where it is wanted.

:func:`tidy_for_console` is the structlog processor :func:`~session_fsm.configure_logging` puts
before the console renderer: a ``transition`` event reads ``transition  init: Uninitialised ->
Initialised`` plus the fields that say something, as in ``session-fsm demo``.
:func:`use_colour` is the colour decision: a terminal, and neither ``NO_COLOR`` (any non-empty
value, see no-color.org) nor ``TERM=dumb``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any, TextIO

from .core.snapshot import OK
from .table import State

#: The fields of a ``transition`` event worth showing on a terminal (the rest are in JSON logs).
_CONSOLE_KEEP = ("outcome", "reason", "generation", "status", "fault_code", "error", "call",
                 "guards")  # fmt: skip


def use_colour(out: TextIO) -> bool:
    """Whether to colour what is written to ``out``: a TTY, no ``NO_COLOR``, no ``TERM=dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def tidy_for_console(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: shorten library events to what a person reads on a terminal.

    A ``transition`` event becomes ``init: Uninitialised -> Initialised`` plus the fields that
    say something (an outcome other than ok, a reason, a failed guard); None values go.
    """
    if event_dict.get("event") == "transition":
        src, dst, trig = event_dict.get("src"), event_dict.get("dst"), event_dict.get("trigger")
        kept = {k: event_dict.get(k) for k in _CONSOLE_KEEP}
        if kept["outcome"] == OK:
            del kept["outcome"]
        guards = kept.pop("guards") or {}
        failed = [g for g, ok in guards.items() if not ok] if isinstance(guards, dict) else []
        if failed:
            kept["failed_guards"] = ",".join(failed)
        for key in list(event_dict):
            if key not in ("event", "level", "timestamp"):
                del event_dict[key]
        if dst != State.AUTHENTICATED.value:
            del kept["generation"]  # it only changes on arriving at Authenticated
        event_dict["event"] = f"transition  {trig}: {src} -> {dst}"
        event_dict.update({k: v for k, v in kept.items() if v is not None})
        return _short_time(event_dict)
    if event_dict.get("event") == "trading_call":
        call = [event_dict.pop(k, "?") for k in ("method", "path", "status")]
        event_dict["event"] = "{} {} -> {}".format(*call)
    if event_dict.get("event") == "retry_wait":
        event_dict["event"] = f"waiting {event_dict.pop('seconds', '?')} s before retrying"
    for key in ("session_id", "userid"):
        event_dict.pop(key, None)
    for key in [k for k, v in event_dict.items() if v is None]:
        del event_dict[key]
    return _short_time(event_dict)


def _short_time(event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Keep the time of day of an ISO timestamp (the date is noise on a terminal)."""
    stamp = event_dict.get("timestamp")
    if isinstance(stamp, str) and "T" in stamp:
        event_dict["timestamp"] = stamp.split("T", 1)[1][:12]
    return event_dict
