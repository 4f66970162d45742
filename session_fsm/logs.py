"""Where the library's events go, structlog processors, and the one opt-in configuration helper.

Like requests or boto3, the library is silent until the application configures logging, and it
never configures logging itself. Its events go:

- through the application's structlog chain, when the application has called
  ``structlog.configure()`` (or :func:`configure_logging`);
- otherwise to the standard library logger ``session_fsm`` (which has a ``NullHandler``): with
  ``logging.basicConfig(level=logging.INFO)`` they appear as ``transition trigger=init ...``
  lines, and the event's fields are on the record as ``record.session_fsm`` (a dict);
- with neither, nowhere.

Every event the library emits has already passed :func:`redact_value`, so it is clean whatever
processors the application chose; :func:`redact` is the same as a structlog processor for
applications that want it in their own chains.
"""

from __future__ import annotations

import functools
import json as _json
import logging
import re
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from typing import Any, Final, TextIO

import structlog

from .console_log import tidy_for_console, use_colour
from .secret import Secret

#: The standard library logger the events go to when structlog is not configured.
STDLIB_LOGGER: Final = logging.getLogger("session_fsm")
STDLIB_LOGGER.addHandler(logging.NullHandler())  # silent until the application says otherwise

MASK: Final = "[redacted]"

#: Key names (normalised: lower case, no ``_``/``-``) whose values are secrets.
SECRET_KEYS: Final = frozenset(
    {
        "password", "passwd", "pwd", "accesscode", "onetimetoken", "ott", "sessiontoken",
        "token", "accesstoken", "bearer", "authorization", "secret", "totpsecret",
        "publictoken", "apikey", "cookie", "setcookie",
    }
)  # fmt: skip
_SECRET_PARTS: Final = ("password", "token", "secret", "accesscode", "authorization")
_BEARER: Final = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")


@functools.lru_cache(maxsize=4096)  # events reuse a few dozen key names: decide each once
def _is_secret_key(key: object) -> bool:
    k = str(key).lower()
    if k.startswith(("has_", "is_")):
        return False  # a predicate's name (a guard like has_password) holds a bool, not a secret
    k = k.replace("_", "").replace("-", "")
    return k in SECRET_KEYS or any(p in k for p in _SECRET_PARTS)


_SCALARS: Final = frozenset({int, float, bool, type(None)})


def redact_value(value: Any, _depth: int = 0) -> Any:
    """Return ``value`` with every secret masked, recursively (dicts, lists, tuples, sets)."""
    if _depth > 20:
        return MASK
    if type(value) in _SCALARS:  # most event fields: counters, durations, flags, None
        return value
    if isinstance(value, Secret):
        return repr(value)
    if isinstance(value, str):
        return _BEARER.sub(r"\1" + MASK, value) if "earer" in value else value
    if type(value) is dict or isinstance(value, Mapping):  # skip the ABC check for dicts
        return {
            k: (MASK if _is_secret_key(k) else redact_value(v, _depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_value(v, _depth + 1) for v in value]
    if isinstance(value, (tuple, set, frozenset)):
        return tuple(redact_value(v, _depth + 1) for v in value)
    return value


#: While :func:`emit_record` logs, the names of the fields it vouches for (typed values, no
#: secret), so :func:`redact` skips them; every other key (the application's context) is checked.
_vouched = threading.local()


def redact(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret keys and Bearer tokens anywhere in the event."""
    clean: frozenset[str] = getattr(_vouched, "keys", _NONE)
    for key in list(event_dict):
        if key in clean:
            continue
        if key == "event":
            event_dict[key] = redact_value(event_dict[key])
        elif _is_secret_key(key):
            event_dict[key] = MASK
        else:
            event_dict[key] = redact_value(event_dict[key])
    return event_dict


#: The parts of structlog's configuration a bound logger is made of.
_CONFIG_KEYS: Final = ("processors", "context_class", "wrapper_class", "logger_factory")
#: (those parts, the logger bound under them) while structlog caches loggers on first use.
_shared: tuple[tuple[Any, ...], Any] | None = None


class LibraryLogger:
    """The library's logger: the application's structlog chain if structlog is configured,
    else the stdlib logger ``session_fsm``. Decided per event, so configuring logging after
    sessions were made still takes effect."""

    __slots__ = ("_bound", "_proxy")

    def __init__(self) -> None:
        self._proxy: Any = None
        self._bound: Any = None

    def _structlog(self) -> Any:
        """structlog's logger for the events: its lazy proxy, or, when structlog caches
        loggers on first use, the logger such a proxy binds at its first event and keeps for
        good (so does this logger, whatever is configured later). That logger is bound once
        per configuration and shared by the library's loggers: a session made after the
        application configures structlog again binds one under the new configuration."""
        global _shared
        bound = self._bound
        if bound is not None:
            return bound
        config = structlog.get_config()
        if config["cache_logger_on_first_use"]:
            key = tuple(config[k] for k in _CONFIG_KEYS)
            shared = _shared
            if shared is not None and all(a is b for a, b in zip(shared[0], key, strict=True)):
                bound = shared[1]
            else:
                bound = structlog.get_logger("session_fsm").bind()
                _shared = (key, bound)
            self._bound = bound
            return bound
        proxy = self._proxy
        if proxy is None:
            proxy = self._proxy = structlog.get_logger("session_fsm")
        return proxy

    def is_enabled_for(self, level: int) -> bool:
        """Whether an event at ``level`` would be logged (so it is worth building)."""
        if structlog.is_configured():
            enabled = getattr(self._structlog(), "is_enabled_for", None)
            return True if enabled is None else bool(enabled(level))
        return STDLIB_LOGGER.isEnabledFor(level)

    def _log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if structlog.is_configured():
            getattr(self._structlog(), level)(event, **fields)
            return
        number = _LEVELS[level]
        if not STDLIB_LOGGER.isEnabledFor(number):
            return
        text = " ".join(f"{k}={_plain(v)}" for k, v in fields.items() if v is not None)
        STDLIB_LOGGER.log(
            number, "%s %s", event, text, extra={"session_fsm": {"event": event, **fields}}
        )

    def debug(self, event: str, **fields: Any) -> None:
        """Log ``event`` at DEBUG."""
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log ``event`` at INFO."""
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log ``event`` at WARNING."""
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log ``event`` at ERROR."""
        self._log("error", event, fields)

    def __repr__(self) -> str:
        return "LibraryLogger('session_fsm')"


def _plain(value: Any) -> str:
    """A field as ``key=value`` text shows it: bare when it has no space, else quoted."""
    text = value if isinstance(value, str) else _COMPACT.encode(value)
    return text if text and " " not in text else _ENCODER.encode(text)


def get_logger() -> Any:
    """The library's logger (see :class:`LibraryLogger`; configuration is the application's)."""
    return LibraryLogger()


def emit(logger: Any, level: str, event: str, **fields: Any) -> None:
    """Log one event after redaction, so the library's events are clean under any config.

    An event the logger's level filters out is dropped before any work is done on it.
    """
    enabled = getattr(logger, "is_enabled_for", None)
    if enabled is not None and not enabled(_LEVELS[level]):
        return
    getattr(logger, level)(event, **redact_value(fields))


def emit_record(
    logger: Any, level: str, event: str, fields: dict[str, Any], clean: frozenset[str]
) -> None:
    """Log an event whose ``clean`` fields are typed, non-secret values (a transition record:
    names, states, numbers). They need no redaction pass here, and :func:`redact` in the
    application's chain skips them too, checking only what the application added (its context):
    the per-transition cost stays small."""
    _vouched.keys = clean  # (a level the logger filters out costs a no-op call, no check)
    try:
        if type(logger) is LibraryLogger:
            logger._log(level, event, fields)
        else:
            getattr(logger, level)(event, **fields)
    finally:
        _vouched.keys = _NONE


_NONE: Final[frozenset[str]] = frozenset()


_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                  "error": logging.ERROR}  # fmt: skip


def configure_logging(
    *, json: bool | None = None, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Opt-in structlog setup for applications: console on a TTY, JSON lines otherwise.

    Includes :func:`redact`, ISO timestamps (UTC) and the log level. On the console a transition
    reads ``transition  init: Uninitialised -> Initialised`` (see
    :func:`~session_fsm.console_log.tidy_for_console`), coloured on a terminal unless
    ``NO_COLOR`` is set or ``TERM=dumb``. The library never calls this. For JSON the steps
    after the context are one processor, :func:`json_line`: every processor is a Python call on
    every event, and between network calls each one runs cold.
    """
    out = stream or sys.stderr
    if json is None:
        json = not out.isatty()
    processors: list[Any] = [structlog.contextvars.merge_contextvars]
    if json:
        processors.append(json_line)
    else:
        processors += [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            tidy_for_console,
            structlog.dev.ConsoleRenderer(colors=use_colour(out)),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line (print() makes two): lines of processes sharing a pipe never mix.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=True,
    )


#: One encoder for every line (``json.dumps`` with ``default=`` builds a new one per call).
_ENCODER: Final = _json.JSONEncoder(default=repr)


def _c_encoder() -> Any:
    """``_ENCODER``'s C encoder, made once (``JSONEncoder.encode`` makes one per call), without
    the circular-reference bookkeeping: :func:`redact` has rebuilt every value it did not skip
    (depth-bounded), and the ones it skips are the library's own flat values. None where the
    json module has no C accelerator, or one that does not render as ``_ENCODER`` does."""
    if _c_make_encoder is None:
        return None
    try:
        encode = _c_make_encoder(
            None, repr, _json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False,
            True,
        )  # fmt: skip
        sample = {"a": [1, 2.5, None, True], "b": {"c": "\u00e9\n"}, "d": float("inf")}
        return encode if "".join(encode(sample, 0)) == _ENCODER.encode(sample) else None
    except Exception:  # another signature: the plain encoder does it
        return None


_C_ENCODE: Final = _c_encoder()
_COMPACT: Final = _json.JSONEncoder(default=repr, separators=(",", ":"))
_LEVEL_ALIASES: Final = {"warn": "warning", "exception": "error"}
#: (second, "YYYY-MM-DDTHH:MM:SS") of the last event, swapped as one tuple (thread-safe).
_second: tuple[int, str] = (-1, "")


def json_line(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
    """structlog processor, last in a chain: add ``level`` and a UTC ISO ``timestamp``,
    :func:`redact`, format ``exc_info``, and render one JSON object (what structlog's
    ``add_log_level``, ``TimeStamper``, ``format_exc_info`` and ``JSONRenderer`` do, in one
    call)."""
    global _second
    event_dict["level"] = _LEVEL_ALIASES.get(method_name, method_name)
    now = time.time()
    whole = int(now)
    cached, prefix = _second
    if cached != whole:  # formatting the date is the slow part: once a second
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, prefix)
    event_dict["timestamp"] = f"{prefix}.{int((now - whole) * 1e6):06d}Z"
    redact(logger, method_name, event_dict)
    if "exc_info" in event_dict:
        event_dict = structlog.processors.format_exc_info(logger, method_name, event_dict)
    if _C_ENCODE is not None and type(event_dict) is dict:
        return "".join(_C_ENCODE(event_dict, 0))
    return _ENCODER.encode(event_dict)
