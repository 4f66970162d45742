"""The CLI's account commands: ``login``, ``status`` and ``logout`` on a stored session.

Settings come from ``KS_*`` environment variables or a KEY=VALUE ``--config`` file (the
environment wins); every missing one is named in one :class:`ConfigurationError`. The session
is kept in a token store (``--store``, ``KS_STORE``, default a 0600 file under the home
directory), so ``status`` answers without any HTTP call. Nothing printed holds a secret.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .masking import mask_url

if TYPE_CHECKING:
    from .session import KSSession

#: Environment variables read by login/status/logout, by Credentials field.
ENV = {
    "host": "KS_HOST",
    "userid": "KS_USERID",
    "consumer_key": "KS_CONSUMER_KEY",
    "access_token": "KS_ACCESS_TOKEN",
    "ip": "KS_IP",
    "app_id": "KS_APP_ID",
    "password": "KS_PASSWORD",
    "access_code": "KS_ACCESS_CODE",
    "totp_secret": "KS_TOTP_SECRET",
}
#: The token store (``file:PATH`` or ``redis://...``) when ``--store`` is not given.
STORE_ENV = "KS_STORE"
DEFAULT_STORE = "file:~/.session_fsm/tokens.json"
#: What each account command needs (a tuple: any one of them). status makes no HTTP call.
_NEEDS: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "status": ("host", "userid"),
    "logout": ("host", "userid", "consumer_key", "access_token"),
    "login": (
        "host", "userid", "consumer_key", "access_token", "password",
        ("access_code", "totp_secret"),
    ),
}  # fmt: skip
_KNOWN = (*ENV.values(), STORE_ENV)
#: Stands in for the gateway credentials status never sends.
_UNUSED = "unused-by-status"
ACCOUNT_HELP = f"""\
settings come from the environment, or from a KEY=VALUE --config file (the environment wins):
  KS_HOST          API base URL, e.g. https://tradeapi.kotaksecurities.com/apim
  KS_USERID        the trading user id
  KS_CONSUMER_KEY  the app's consumer key
  KS_ACCESS_TOKEN  the gateway (Bearer) token
  KS_PASSWORD      the password (login)
  KS_ACCESS_CODE   the 2FA access code (login), or KS_TOTP_SECRET to compute it
  KS_IP, KS_APP_ID optional (default 127.0.0.1, session_fsm)
  KS_STORE         token store when --store is not given (default {DEFAULT_STORE})
status needs only KS_HOST and KS_USERID and makes no HTTP call; it exits 0 when a session is
stored, 1 when none is. Errors print one line and exit 1 (the call failed) or 2 (fix a
setting); --debug shows the traceback. No secret is ever printed.
"""


def _read_config(path: Path) -> dict[str, str]:
    """KS_* settings of a KEY=VALUE file (``export`` prefixes, quotes and # comments allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        sys.stderr.write(f"session-fsm: warning: {path} is readable by others; chmod 600 it\n")
    values: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        if not sep:
            raise ConfigurationError(f"{path}:{n}: expected KEY=VALUE")
        if key not in _KNOWN:
            raise ConfigurationError(
                f"{path}:{n}: unknown setting {key} (known: {', '.join(_KNOWN)})"
            )
        values[key] = value.strip().strip("'\"")
    return values


def settings(config_file: Path | None, command: str = "login") -> dict[str, str]:
    """KS_* settings from a KEY=VALUE file overlaid by the environment, checked for ``command``.

    Every missing setting is named in one :class:`ConfigurationError`.
    """
    values = _read_config(config_file) if config_file is not None else {}
    for var in _KNOWN:
        if os.environ.get(var):
            values[var] = os.environ[var]
    missing = []
    for need in _NEEDS[command]:
        names = need if isinstance(need, tuple) else (need,)
        if not any(values.get(ENV[n]) for n in names):
            missing.append(" or ".join(ENV[n] for n in names))
    if missing:
        raise ConfigurationError(
            f"missing settings: {', '.join(missing)} (set them in the environment or a --config "
            "file; see --help)"
        )
    return values


def account_session(args: argparse.Namespace) -> tuple[KSSession, str]:
    """The session the account commands act on, and the store spec it uses."""
    from .credentials import Credentials
    from .session import KSSession

    v = settings(args.config, args.command)

    def get(field: str) -> str | None:
        return v.get(ENV[field]) or None

    creds = Credentials(
        userid=v[ENV["userid"]],
        consumer_key=get("consumer_key") or _UNUSED,
        access_token=get("access_token") or _UNUSED,
        password=get("password"),
        access_code=get("access_code"),
        totp_secret=get("totp_secret"),
        ip=get("ip") or "127.0.0.1",
        app_id=get("app_id") or "session_fsm",
    )
    store = args.store or v.get(STORE_ENV) or DEFAULT_STORE
    return KSSession(creds, host=v[ENV["host"]], store=store), store


def _print(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def shown_store(spec: str) -> str:
    """The store spec as it may be printed: a file path expanded, a URL without its password."""
    if spec.startswith("file:"):
        return "file:" + str(Path(spec[len("file:") :]).expanduser())
    masked = mask_url(spec)  # first: whatever follows may fail on a malformed URL
    try:
        parts = urlsplit(masked)  # redis-py also takes ?password=: drop the query too
        port = parts.port
    except ValueError:  # a bad port or bracket: show the masked text without its query
        port, parts = None, None
    if parts is None or not parts.netloc:
        return masked.partition("?")[0].partition("#")[0]
    host = parts.hostname or ""
    netloc = f"{host}:{port}" if port else host
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def status_fields(session: KSSession, store: str) -> dict[str, Any]:
    """What status shows: state, host, userid, generation, login time and age. No secret."""
    snap = session.snapshot()
    when = snap.login_time
    return {
        "state": snap.state.value,
        "host": mask_url(snap.host),
        "userid": session.credentials.userid,
        "generation": snap.generation,
        "logged_in_at": None
        if when is None
        else dt.datetime.fromtimestamp(when, dt.timezone.utc).isoformat(timespec="seconds"),
        "session_age_s": None if when is None else round(max(0.0, time.time() - when), 1),
        "store": shown_store(store),
    }


def human_age(seconds: float) -> str:
    """``42 s``, ``5 min 3 s``, ``2 h 05 min``."""
    s = int(seconds)
    if s < 60:
        return f"{seconds:.0f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _login(session: KSSession, args: argparse.Namespace) -> str:
    if session.resume():
        if not args.fresh:
            return "already logged in (session resumed from the store, no HTTP call)"
        session.logout()
    session.connect()
    return "logged in"


def _logout(session: KSSession, args: argparse.Namespace) -> str:
    if not session.resume():
        return "no stored session: nothing to log out"
    session.logout()
    return "logged out; the session is deleted from the store"


def _status(session: KSSession, args: argparse.Namespace) -> str:
    if session.resume():
        return "session stored (not checked with the server: status makes no HTTP call)"
    return "no stored session"


_ACTIONS: dict[str, Callable[[KSSession, argparse.Namespace], str]] = {
    "login": _login,
    "logout": _logout,
    "status": _status,
}


def run_account(args: argparse.Namespace) -> int:
    """Run ``args.command`` (login, status or logout); print the outcome; return the exit code."""
    from .demo import configure_output
    from .table import State

    # Quiet unless asked: a failure then prints exactly one line (the error).
    configure_output(args.json, sys.stderr, logging.INFO if args.verbose else logging.CRITICAL)
    session, store = account_session(args)
    try:
        outcome = _ACTIONS[args.command](session, args)
        fields = status_fields(session, store)
    finally:
        session.close()
    if args.json:
        _print(json.dumps({"result": outcome, **fields}))
    else:
        lines = [f"{outcome}:"]
        for key, value in fields.items():
            if key == "session_age_s":
                key, value = "session_age", None if value is None else human_age(value)
            lines.append(f"  {key.replace('_', ' '):<13} {'-' if value is None else value}")
        _print("\n".join(lines))
    if args.command == "status" and session.state is not State.AUTHENTICATED:
        return 1  # status: no live session stored
    return 0
