"""The ``session-fsm`` command line (also ``python -m session_fsm``).

Commands: ``demo`` (the main job, on an embedded sandbox), ``sandbox``, ``login``, ``status``,
``logout``, ``diagram``, ``trace``. A user error prints one line and exits 2 (no traceback
unless ``--debug``); secrets are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigurationError, KSError

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
_REQUIRED = ("host", "userid", "consumer_key", "access_token")


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

    d = sub.add_parser("demo", help="play a bot's day against an embedded sandbox")
    d.add_argument("--json", action="store_true", help="print JSON lines instead of a console")

    sb = sub.add_parser("sandbox", help="serve the KS session API twin until interrupted")
    sb.add_argument("--host", default="127.0.0.1")
    sb.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    sb.add_argument("--userid", default="demo-user")
    sb.add_argument("--password", default="demo-password")
    sb.add_argument("--access-code", default="1234")
    sb.add_argument("--consumer-key", default="demo-consumer-key")
    sb.add_argument("--access-token", default="demo-access-token")
    sb.add_argument("--ott-ttl", type=float, default=300.0, metavar="SECONDS")
    sb.add_argument("--session-ttl", type=float, default=28800.0, metavar="SECONDS")

    for name, text in (
        ("login", "connect and save the session in the store"),
        ("status", "show the stored session (never a secret)"),
        ("logout", "log out the stored session and delete it"),
    ):
        c = sub.add_parser(name, help=text)
        c.add_argument("--store", default=None, help="file:PATH or redis://host:port/db")
        c.add_argument("--config", type=Path, help="KEY=VALUE file of KS_* settings")
        c.add_argument("--json", action="store_true", help="print JSON")

    g = sub.add_parser("diagram", help="render the state machine from the transition table")
    g.add_argument("--format", choices=("mermaid", "svg", "png", "dot"), default="mermaid")
    g.add_argument("--highlight", metavar="STATE", help="state to highlight")
    g.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")

    t = sub.add_parser("trace", help="replay a JSON transition log as a diagram and timeline")
    t.add_argument("logfile", type=Path)
    t.add_argument("--format", choices=("mermaid", "svg", "png", "dot"), default="mermaid")
    t.add_argument("-o", "--output", type=Path, help="write the diagram to FILE")
    return p


def settings(config_file: Path | None) -> dict[str, str]:
    """KS_* settings from a KEY=VALUE file overlaid by the environment. Missing ones are named."""
    values: dict[str, str] = {}
    if config_file is not None:
        try:
            text = config_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read config file {config_file}: {exc.strerror}") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise UserError(f"{config_file}:{n}: expected KEY=VALUE")
            values[key.strip()] = value.strip().strip("'\"")
    for var in ENV.values():
        if os.environ.get(var):
            values[var] = os.environ[var]
    missing = [ENV[k] for k in _REQUIRED if not values.get(ENV[k])]
    if missing:
        raise UserError(f"missing settings: {', '.join(missing)} (environment or --config)")
    return values


def _session(args: argparse.Namespace) -> Any:
    from .credentials import Credentials
    from .session import KSSession

    v = settings(args.config)
    creds = Credentials(
        userid=v[ENV["userid"]],
        consumer_key=v[ENV["consumer_key"]],
        access_token=v[ENV["access_token"]],
        password=v.get(ENV["password"]) or None,
        access_code=v.get(ENV["access_code"]) or None,
        totp_secret=v.get(ENV["totp_secret"]) or None,
        ip=v.get(ENV["ip"]) or "127.0.0.1",
        app_id=v.get(ENV["app_id"]) or "session_fsm",
    )
    store = args.store or "file:" + str(Path("~/.session_fsm/tokens.json").expanduser())
    return KSSession(creds, host=v[ENV["host"]], store=store)


def _print(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _status_fields(session: Any) -> dict[str, Any]:
    import time

    snap = session.snapshot()
    age = None if snap.login_time is None else round(time.time() - snap.login_time, 1)
    return {
        "state": snap.state.value,
        "host": snap.host,
        "userid": session.credentials.userid,
        "generation": snap.generation,
        "session_age_s": age,
        "session_token": snap.session_token.fingerprint if snap.session_token else None,
    }


def _cmd_account(args: argparse.Namespace) -> int:
    import json

    session = _session(args)
    if args.command == "login":
        session.connect()
    elif args.command == "logout":
        session.resume()
        if session.may("logout"):
            session.logout()
    else:
        session.resume()  # status reads the store; it makes no HTTP call
    fields = _status_fields(session)
    if args.json:
        _print(json.dumps(fields))
    else:
        _print("  ".join(f"{k}={v}" for k, v in fields.items()))
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

    config = SandboxConfig(
        accounts=(Account(args.userid, args.password, args.access_code),),
        consumer_key=args.consumer_key,
        access_token=args.access_token,
        ott_ttl=args.ott_ttl,
        session_ttl=args.session_ttl,
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``session-fsm``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (UserError, ConfigurationError, KSError, OSError) as exc:
        if args.debug:
            raise
        sys.stderr.write(f"session-fsm {args.command}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
