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

from . import contract
from .errors import ConfigurationError
from .masking import mask_url

if TYPE_CHECKING:
    from .sync.session import KSSession

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
#: The allow-list of API hosts (comma-separated) when ``--allowed-domain`` is not given.
ALLOWED_ENV = "KS_ALLOWED_DOMAINS"
#: The one cheap authenticated call that checks a stored session is alive.
CHECK_CALL = contract.ORDERS_REPORT
#: What each account command needs (a tuple: any one of them). status makes no HTTP call;
#: ``status --check`` makes one trading call, so it needs the gateway credentials too.
_NEEDS: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "status": ("host", "userid"),
    "status --check": ("host", "userid", "consumer_key", "access_token"),
    "logout": ("host", "userid", "consumer_key", "access_token"),
    "login": (
        "host", "userid", "consumer_key", "access_token", "password",
        ("access_code", "totp_secret"),
    ),
}  # fmt: skip
_KNOWN = (*ENV.values(), STORE_ENV, ALLOWED_ENV)
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
  KS_ALLOWED_DOMAINS  domains KS_HOST (and its redirects) may be under, comma-separated,
                   when no --allowed-domain is given (default {contract.KS_DOMAIN})
login resumes a stored session and checks it with one authenticated call (GET
/reports/1.0/orders), logging in again if it is dead; --no-check trusts it unchecked (and says
so). A rejected password starts a cool-down kept in the store: later runs do not send it again
until it ends (or --reset-cooldown). status needs only KS_HOST and KS_USERID and makes no HTTP
call; status --check makes the same one call (it never logs in). The store must outlive the
command: memory: is refused.
exit codes: 0 done (status: a live session is stored; without --check, one is stored);
  1 the call failed, or (status) no session is stored or the check found it dead;
  2 a setting or argument to fix.
--json prints one object: result, state, host, userid, generation, logged_in_at,
  session_age_s, store, live (true/false after a check, null when not checked).
Errors print one line; --debug shows the traceback. No secret is ever printed.
"""


#: The library's words for a setting, and the CLI user's (an error's hint names what to set).
_CLI_WORDS = (
    ("Credentials(userid=..., password=...)", f"{ENV['userid']}, {ENV['password']}"),
    ("(access_code=/totp_secret=)", f"({ENV['access_code']} or {ENV['totp_secret']})"),
    ("Credentials(password=...)", ENV["password"]),
    ("Credentials(access_code=...)", ENV["access_code"]),
    ("(host=)", f"({ENV['host']})"),
    ("host=", f"{ENV['host']}="),
    ("add its domain to allowed_domains if you trust it (CLI: --allowed-domain)",
     f"add its domain with --allowed-domain (or {ALLOWED_ENV}) if you trust it"),
)  # fmt: skip


def cli_words(text: str) -> str:
    """``text`` (an error's message) with the library's setting names replaced by the CLI's
    (``Credentials(password=...)`` -> ``KS_PASSWORD``)."""
    for library, cli in _CLI_WORDS:
        text = text.replace(library, cli)
    return text


def _read_config(path: Path) -> dict[str, str]:
    """KS_* settings of a KEY=VALUE file (``export`` prefixes, quotes and # comments allowed)."""
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # its text shows a byte of the file (of a secret, maybe)
        at = data.count(b"\n", 0, exc.start) + 1
        raise ConfigurationError(
            f"{path}:{at}: not UTF-8 text", hint="save the config file as UTF-8"
        ) from None
    del data
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
    from .sync.session import KSSession

    store_spec = getattr(args, "store", None)
    check = args.command == "status" and getattr(args, "check", False)
    v = settings(args.config, "status --check" if check else args.command)

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
    store = store_spec or v.get(STORE_ENV) or DEFAULT_STORE
    if store.strip() == "memory:":
        raise ConfigurationError(
            "the memory: store keeps nothing after the command ends: a login would log the "
            "user's other sessions out at the broker and then throw the session away",
            hint="use --store file:PATH or redis://host:port/db (or leave the default)",
        )
    domains = getattr(args, "allowed_domains", None) or [
        d.strip() for d in v.get(ALLOWED_ENV, "").split(",") if d.strip()
    ]
    options: dict[str, Any] = {"allowed_domains": tuple(domains)} if domains else {}
    # status --check only looks: it never logs in (auto_relogin off).
    session = KSSession(
        creds, host=v[ENV["host"]], store=store, auto_relogin=not check, **options
    )
    return session, store


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


def check_session(session: KSSession) -> bool:
    """Make :data:`CHECK_CALL` with the session; True if it went through.

    With ``auto_relogin`` on, a dead session is logged in again by the call itself (and the
    call replayed); with it off, a dead session is False. Other errors propagate.
    """
    from .errors import SessionExpired

    try:
        session.request(*CHECK_CALL)
    except SessionExpired:
        return False
    return True


def _login(session: KSSession, args: argparse.Namespace) -> str:
    if args.reset_cooldown:
        session.reset_cooldown()
    if session.resume():
        if args.fresh:
            session.logout()
        elif not args.check:
            return "stored session resumed, NOT checked with the server (--no-check)"
        else:
            generation = session.generation
            check_session(session)
            if session.generation != generation:
                return "the stored session was dead: logged in again"
            return "already logged in (the stored session was checked: it is live)"
    session.connect()
    return "logged in"


def _none_stored(session: KSSession) -> str:
    """Why ``resume()`` found nothing: no record, or one left alone because its host is off
    the session's allow-list (``load_usable``; the event ``stored_session_ignored`` says why)."""
    from .stores import StoreError

    try:
        kept = session.store.load(session.store_key())
    except StoreError:
        kept = None
    if kept is None:
        return "no stored session"
    return (
        "no stored session usable here: the one stored has a host off this session's "
        "allow-list (-v shows why; `session-fsm login` logs in at the configured host)"
    )


def _logout(session: KSSession, args: argparse.Namespace) -> str:
    if not session.resume():
        return f"{_none_stored(session)}: nothing to log out"
    session.logout()
    return "logged out; the session is deleted from the store"


def _status(session: KSSession, args: argparse.Namespace) -> str:
    if not session.resume():
        return _none_stored(session)
    if not args.check:
        return "session stored (not checked with the server: add --check to check it)"
    if check_session(session):
        return "session stored and live (checked with one authenticated call)"
    return "session stored but dead (the server rejected it): run session-fsm login"


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
    # live: known after a login (it just logged in, or checked) or status --check; else null.
    unchecked = (args.command == "status" and not args.check) or "NOT checked" in outcome
    live = session.state is State.AUTHENTICATED
    fields["live"] = None if unchecked and live else live
    if args.json:
        _print(json.dumps({"result": outcome, **fields}))
    else:
        lines = [f"{outcome}:"]
        for key, value in fields.items():
            if key == "session_age_s":
                key, value = "session_age", None if value is None else human_age(value)
            if key == "live":
                value = "not checked" if value is None else "yes" if value else "no"
            lines.append(f"  {key.replace('_', ' '):<13} {'-' if value is None else value}")
        _print("\n".join(lines))
    if args.command == "status" and session.state is not State.AUTHENTICATED:
        return 1  # status: no live session stored
    return 0
