"""The ``session-fsm`` command line (also ``python -m session_fsm``).

Commands: ``demo`` (the main job, on an embedded sandbox), ``sandbox``, ``login``, ``status``,
``logout`` (in :mod:`~session_fsm.account`), ``diagram``, ``trace``. An error prints one line
and exits 2 (a setting or usage to fix) or 1 (the call failed), with no traceback unless
``--debug``; secrets are never printed.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .account import ACCOUNT_HELP, ALLOWED_ENV, DEFAULT_STORE, STORE_ENV
from .contract import KS_DOMAIN
from .errors import ConfigurationError, KSError

#: Exit codes: the operation failed (API, network, store); a usage or settings mistake.
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class UserError(Exception):
    """A mistake the user can fix; printed as one line."""


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help text as written (epilogs keep their lines), each option's default value shown (an
    on/off flag or an option that is unset by default says so in its own words)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _port(text: str) -> int:
    """argparse type of ``--port``: a TCP port number, 0 for any free one."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (0-65535; 0: any free)")
    return port


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="session-fsm",
        description="Keep a trading bot logged in to the Kotak Securities KS Trade API.",
        formatter_class=_Help,
    )
    p.add_argument("--version", action="version", version=f"session-fsm {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser(
        "demo",
        formatter_class=_Help,
        help="play a bot's day against an embedded sandbox",
        description="Start a sandbox in this process and play a trading bot's day on it with a "
        "real session: connect, trading calls, an expiry the session recovers from by itself, "
        "a 429 waited out, logout; then the path taken and a summary. Takes a few seconds.",
    )
    d.add_argument("--json", action="store_true", help="print JSON lines instead of a console")
    d.add_argument(
        "--async",
        dest="use_async",
        action="store_true",
        help="play it on AsyncKSSession in an asyncio event loop (needs session_fsm[async])",
    )

    sb = sub.add_parser(
        "sandbox",
        formatter_class=_Help,
        help="serve the KS session API twin until interrupted",
        description="Serve the sandbox on loopback and print its URL and demo credentials; "
        "Ctrl+C or SIGTERM stops it.",
    )
    sb.add_argument("--host", default="127.0.0.1", help="address to bind")
    sb.add_argument("--port", type=_port, default=8765, help="TCP port; 0 picks a free one")
    sb.add_argument("--userid", default="demo-user", help="the one account's user id")
    sb.add_argument("--password", default="demo-password", help="the account's password")
    sb.add_argument(
        "--access-code", default=None, help="static 2FA code (1234 unless a TOTP secret is given)"
    )
    sb.add_argument(
        "--totp-secret",
        nargs="?",
        const="",
        default=None,
        metavar="BASE32",
        help="accept the account's current TOTP as the 2FA code (no value: a random secret); "
        "printed in the banner",
    )
    sb.add_argument("--consumer-key", default="demo-consumer-key", help="the app's consumer key")
    sb.add_argument(
        "--access-token", default="demo-access-token", help="the gateway (Bearer) token"
    )
    sb.add_argument("--ott-ttl", type=float, default=300.0, metavar="SECONDS",
                    help="how long a one-time token lives")  # fmt: skip
    sb.add_argument("--session-ttl", type=float, default=28800.0, metavar="SECONDS",
                    help="how long a session token lives")  # fmt: skip
    sb.add_argument(
        "--many-sessions",
        action="store_true",
        help="a new 2FA keeps the user's earlier sessions live (default: it ends them)",
    )
    sb.add_argument(
        "--invalid-session",
        type=int,
        choices=(401, 403),
        default=401,
        help="how trading calls answer a dead session: 401 fault 99999 or 403",
    )
    sb.add_argument(
        "--fill",
        choices=("immediate", "never", "manual"),
        default="immediate",
        help="when orders fill (manual: on POST /_sandbox/fill)",
    )

    for name, text in (
        ("login", "log in (or resume and check the stored session) and save it in the store"),
        ("status", "show the stored session: state, host, userid, age (never a secret)"),
        ("logout", "log out the stored session and delete it from the store"),
    ):
        c = sub.add_parser(
            name,
            help=text,
            description=text[0].upper() + text[1:] + ".",
            epilog=ACCOUNT_HELP,
            formatter_class=_Help,
        )
        c.add_argument(
            "--store",
            default=None,
            help=f"file:PATH or redis://host:port/db (else {STORE_ENV}, else {DEFAULT_STORE})",
        )
        c.add_argument("--config", type=Path, metavar="FILE", help="KEY=VALUE file of settings")
        c.add_argument(
            "--allowed-domain",
            dest="allowed_domains",
            action="append",
            metavar="DOMAIN",
            default=None,
            help="a domain KS_HOST and its redirects may be under; repeat for more (else "
            f"{ALLOWED_ENV}, comma-separated, else {KS_DOMAIN})",
        )
        c.add_argument("--json", action="store_true", help="print JSON (events on stderr too)")
        c.add_argument(
            "-v", "--verbose", action="store_true", help="show each transition on stderr"
        )
        if name == "login":
            c.add_argument(
                "--fresh", action="store_true", help="log out a stored session and log in anew"
            )
            c.add_argument(
                "--no-check",
                dest="check",
                action="store_false",
                help="trust a stored session without checking it with the server",
            )
            c.add_argument(
                "--reset-cooldown",
                action="store_true",
                help="forget a stored wrong-password cool-down (after fixing KS_PASSWORD)",
            )
        if name == "status":
            c.add_argument(
                "--check",
                action="store_true",
                help="check a stored session with one authenticated call (needs "
                "KS_CONSUMER_KEY and KS_ACCESS_TOKEN; never logs in)",
            )

    formats = ("mermaid", "svg", "png", "dot")
    g = sub.add_parser(
        "diagram", formatter_class=_Help, help="render the state machine from the transition table"
    )
    g.add_argument("--format", choices=formats, default="mermaid", help="output format")
    g.add_argument("--highlight", metavar="STATE", help="state to highlight")
    g.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")

    t = sub.add_parser(
        "trace",
        formatter_class=_Help,
        help="replay a JSON transition log as a diagram and timeline",
        description="Read JSON lines logged with configure_logging(json=True) and print the "
        "timeline of every attempted transition (one block per session) and a diagram.",
    )
    t.add_argument("logfile", type=Path, help="the JSON log file, or - for standard input")
    t.add_argument("--format", choices=formats, default="mermaid", help="diagram format")
    t.add_argument("-o", "--output", type=Path, help="write the diagram to FILE")
    t.add_argument("--session", metavar="ID", help="only the session with this session_id")

    for command in sub.choices.values():  # --debug also after the command name
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
    return p


def _write(data: bytes, output: Path | None, fmt: str = "") -> None:
    if output is None and fmt == "png" and sys.stdout.isatty():
        raise UserError(
            "png is binary and standard output is a terminal: add -o FILE (or redirect)"
        )
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(data)


def _cmd_account(args: argparse.Namespace) -> int:
    from .account import run_account

    return run_account(args)


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
    _write(render(args.format, highlight=highlight), args.output, args.format)
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    from .trace import run_trace

    return run_trace(args.logfile, args.format, args.output, session=args.session)


def _cmd_sandbox(args: argparse.Namespace) -> int:
    import pyotp

    from .sandbox import Account, SandboxConfig, banner, serve

    totp = args.totp_secret
    if totp == "":
        totp = pyotp.random_base32()
    code = args.access_code
    if code is None:
        code = "" if totp else "1234"
    try:
        config = SandboxConfig(
            accounts=(Account(args.userid, args.password, code, totp),),
            consumer_key=args.consumer_key,
            access_token=args.access_token,
            ott_ttl=args.ott_ttl,
            session_ttl=args.session_ttl,
            single_session=not args.many_sessions,
            invalid_session=args.invalid_session,
            fill=args.fill,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        serve(
            config, args.host, args.port, ready=lambda url: _say(banner(url, config))
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {args.port} on {args.host} is in use (another sandbox?): pick another "
                "with --port, or --port 0 for a free one"
            ) from None
        if exc.errno in (errno.EACCES, errno.EADDRNOTAVAIL):
            raise UserError(
                f"cannot listen on {args.host} port {args.port}: {exc.strerror}"
            ) from None
        raise
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.use_async:
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "session-fsm demo --async needs aiohttp, which is not installed",
                hint="pip install 'session_fsm[async]'",
            ) from None
    return run_demo(json_lines=args.json, use_async=args.use_async)


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
        if command in ("login", "status", "logout"):
            from .account import cli_words

            text = cli_words(text)  # the settings by the names this command reads
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


def _say(text: str) -> None:
    """The command line's own output (the sandbox's banner): one line, flushed at once, so a
    parent process reading our stdout sees it while the server runs."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
