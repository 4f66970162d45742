"""The ``session-fsm`` command line (also ``python -m session_fsm``).

Commands: ``demo`` (the main job, on an embedded sandbox), ``sandbox``, ``login``, ``status``,
``logout``, ``diagram``, ``trace``. An error prints one line and exits 2 (a setting or usage
to fix) or 1 (the call failed), with no traceback unless ``--debug``; secrets are never printed.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import __version__
from .errors import ConfigurationError, KSError

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
#: Exit codes: the operation failed (API, network, store); a usage or settings mistake.
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

_ACCOUNT_HELP = f"""\
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


class UserError(Exception):
    """A mistake the user can fix; printed as one line."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="session-fsm",
        description="Keep a trading bot logged in to the Kotak Securities KS Trade API.",
    )
    p.add_argument("--version", action="version", version=f"session-fsm {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser(
        "demo",
        help="play a bot's day against an embedded sandbox",
        description="Start a sandbox in this process and play a trading bot's day on it with a "
        "real session: connect, trading calls, an expiry the session recovers from by itself, "
        "a 429 waited out, logout; then the path taken and a summary. Takes a few seconds.",
    )
    d.add_argument("--json", action="store_true", help="print JSON lines instead of a console")

    sb = sub.add_parser(
        "sandbox",
        help="serve the KS session API twin until interrupted",
        description="Serve the sandbox on loopback and print its URL and demo credentials; "
        "Ctrl+C or SIGTERM stops it.",
    )
    sb.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sb.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    sb.add_argument("--userid", default="demo-user")
    sb.add_argument("--password", default="demo-password")
    sb.add_argument("--access-code", default="1234")
    sb.add_argument("--consumer-key", default="demo-consumer-key")
    sb.add_argument("--access-token", default="demo-access-token")
    sb.add_argument("--ott-ttl", type=float, default=300.0, metavar="SECONDS")
    sb.add_argument("--session-ttl", type=float, default=28800.0, metavar="SECONDS")

    for name, text in (
        ("login", "log in (or resume the stored session) and save it in the token store"),
        ("status", "show the stored session: state, host, userid, age (never a secret)"),
        ("logout", "log out the stored session and delete it from the store"),
    ):
        c = sub.add_parser(
            name,
            help=text,
            description=text[0].upper() + text[1:] + ".",
            epilog=_ACCOUNT_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        c.add_argument(
            "--store", default=None, help=f"file:PATH or redis://host:port/db ({STORE_ENV})"
        )
        c.add_argument("--config", type=Path, metavar="FILE", help="KEY=VALUE file of settings")
        c.add_argument("--json", action="store_true", help="print JSON (events on stderr too)")
        c.add_argument(
            "-v", "--verbose", action="store_true", help="show each transition on stderr"
        )
        if name == "login":
            c.add_argument(
                "--fresh", action="store_true", help="log out a stored session and log in anew"
            )

    g = sub.add_parser("diagram", help="render the state machine from the transition table")
    g.add_argument("--format", choices=("mermaid", "svg", "png", "dot"), default="mermaid")
    g.add_argument("--highlight", metavar="STATE", help="state to highlight")
    g.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")

    t = sub.add_parser("trace", help="replay a JSON transition log as a diagram and timeline")
    t.add_argument("logfile", type=Path)
    t.add_argument("--format", choices=("mermaid", "svg", "png", "dot"), default="mermaid")
    t.add_argument("-o", "--output", type=Path, help="write the diagram to FILE")

    for command in sub.choices.values():  # --debug also after the command name
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
    return p


def _read_config(path: Path) -> dict[str, str]:
    """KS_* settings of a KEY=VALUE file (``export`` prefixes, quotes and # comments allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
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
            raise UserError(f"{path}:{n}: expected KEY=VALUE")
        if key not in _KNOWN:
            raise UserError(f"{path}:{n}: unknown setting {key} (known: {', '.join(_KNOWN)})")
        values[key] = value.strip().strip("'\"")
    return values


def settings(config_file: Path | None, command: str = "login") -> dict[str, str]:
    """KS_* settings from a KEY=VALUE file overlaid by the environment, checked for ``command``.

    Every missing setting is named in one :class:`UserError`.
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
        raise UserError(
            f"missing settings: {', '.join(missing)} (set them in the environment or a --config "
            "file; see --help)"
        )
    return values


def _session(args: argparse.Namespace) -> tuple[KSSession, str]:
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
    parts = urlsplit(spec)  # redis-py also takes ?password=: drop the query too
    if not parts.netloc:
        return spec.partition("?")[0]
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc, query="").geturl()


def _status_fields(session: KSSession, store: str) -> dict[str, Any]:
    """What status shows: state, host, userid, generation, login time and age. No secret."""
    snap = session.snapshot()
    when = snap.login_time
    return {
        "state": snap.state.value,
        "host": snap.host,
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


def _cmd_account(args: argparse.Namespace) -> int:
    from .demo import configure_output
    from .table import State

    # Quiet unless asked: a failure then prints exactly one line (the error).
    configure_output(args.json, sys.stderr, logging.INFO if args.verbose else logging.CRITICAL)
    session, store = _session(args)
    try:
        outcome = _ACTIONS[args.command](session, args)
        fields = _status_fields(session, store)
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
        return EXIT_FAILED
    return 0


def _write(data: bytes, output: Path | None) -> None:
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(data)


def _cmd_diagram(args: argparse.Namespace) -> int:
    from .diagrams import render
    from .table import State

    highlight = None
    if args.highlight:
        by_name = {s.value.lower(): s for s in State} | {s.name.lower(): s for s in State}
        highlight = by_name.get(args.highlight.lower())
        if highlight is None:
            raise UserError(
                f"unknown state {args.highlight!r}; one of: {', '.join(s.value for s in State)}"
            )
    _write(render(args.format, highlight=highlight), args.output)
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    from .trace import run_trace

    return run_trace(args.logfile, args.format, args.output)


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import Account, SandboxConfig, serve

    try:
        config = SandboxConfig(
            accounts=(Account(args.userid, args.password, args.access_code),),
            consumer_key=args.consumer_key,
            access_token=args.access_token,
            ott_ttl=args.ott_ttl,
            session_ttl=args.session_ttl,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    serve(config, args.host, args.port)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(json_lines=args.json)


_COMMANDS = {
    "demo": _cmd_demo,
    "sandbox": _cmd_sandbox,
    "login": _cmd_account,
    "status": _cmd_account,
    "logout": _cmd_account,
    "diagram": _cmd_diagram,
    "trace": _cmd_trace,
}


def error_line(command: str, exc: BaseException) -> str:
    """The one line a failed command prints: what went wrong and what to do, no secret."""
    from .logs import redact_value

    if isinstance(exc, (UserError, KSError)):
        text = str(exc)  # written to be shown: names, statuses and hints only
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
    text = " ".join(str(redact_value(text)).split())
    return f"session-fsm {command}: error: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``session-fsm``; returns the exit code."""
    args = _parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        if debug:
            raise
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and stop Python complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        if debug:
            raise
        sys.stderr.write(error_line(args.command, exc) + "\n")
        usage = isinstance(exc, (UserError, ConfigurationError))
        return EXIT_USAGE if usage else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
