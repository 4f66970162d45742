"""The secret hunt: generated secrets, a bad day, and every output channel searched.

Hypothesis draws a password, an access code, a Bearer token and a TOTP seed; a sandbox account
is made with them and a real session lives through a bad day against it over loopback: an
expiry, a 429, a 503, a connection dropped during login, a wrong access code, a rejected
gateway token refreshed from a provider, malformed answers to each session call, logout. The
application around it logs the way real applications do, ``log.exception()`` included.

Every channel a secret could leave by is then searched for each secret (and for the one-time
and session tokens the sandbox issued) in its obvious encodings (plain, base64, URL-encoded,
hex): log lines in four renderers (JSON with structlog's ``dict_tracebacks``, which shows frame
locals; the console renderer with rich's locals-showing tracebacks; logfmt; stdlib logging),
each error rendered with the three locals-showing renderers (stdlib ``capture_locals``,
structlog's ``ExceptionDictTransformer``, rich ``show_locals``), reprs, pickles, the CLI's
output and the token store's file.

The store exists to keep the session token, so the store file is searched for every other
secret; the session token itself may only be in it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pyotp
import pytest
import structlog
import structlog.tracebacks
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from session_fsm import Credentials, FileStore, KSError, KSSession, RetryPolicy, contract
from session_fsm.sandbox import Account, SandboxConfig, run_sandbox

try:
    import rich.console
    import rich.traceback

    HAVE_RICH = True
except ImportError:  # pragma: no cover - rich is in the test extra
    HAVE_RICH = False

# Distinctive secrets: long enough that a hit is never a coincidence.
secret_text = st.text(
    alphabet="abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=14, max_size=32
)
codes = st.text(alphabet="0123456789", min_size=9, max_size=14)
seeds = st.binary(min_size=16, max_size=20).map(lambda b: base64.b32encode(b).decode())

#: Each example is a whole bad day (seconds): a failure is reported as found, not shrunk.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
FAST = RetryPolicy(total=1, backoff_factor=0, backoff_jitter=0, sleeper=lambda _: None)
REPORT = contract.ORDERS_REPORT[1]
SESSION_PATHS = (
    contract.SESSION_INIT[1],
    contract.LOGIN_USERID[1],
    contract.TWO_FA_ACCESSCODE[1],
)


def encodings(secret: str) -> set[str]:
    """The secret and the forms it would take if something encoded it on its way out."""
    raw = secret.encode()
    forms = {
        secret,
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(secret, safe=""),
        quote_plus(secret),
        raw.hex(),
        raw.hex().upper(),
    }
    return {f for f in forms if len(f) >= 8}


def hits(text: str, secrets: dict[str, str]) -> list[str]:
    """Names of the secrets found in ``text`` in any of their encodings."""
    return [name for name, value in secrets.items() if any(f in text for f in encodings(value))]


class Channels:
    """Everything the application around the session could write somewhere."""

    def __init__(self) -> None:
        self.json = io.StringIO()
        self.console = io.StringIO()
        self.logfmt = io.StringIO()
        self.stdlib = io.StringIO()
        self.texts: list[str] = []
        self.errors: list[BaseException] = []

    def configure(self) -> None:
        """An application's own structlog chain (no redaction of its own), fanned out to the
        JSON renderer with dict tracebacks (frame locals shown), the console renderer and logfmt;
        stdlib logging captured as well. (Rich's locals-showing traceback is rendered once per
        error in :meth:`render_errors`: in every log line it would cost seconds.)"""
        json_chain = [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(default=repr),
        ]
        console = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
        logfmt = [structlog.processors.format_exc_info, structlog.processors.LogfmtRenderer()]

        def tee(logger: Any, name: str, event: Any) -> str:
            out = dict(event)
            for proc in json_chain:
                out = proc(logger, name, out)
            self.json.write(f"{out}\n")
            self.console.write(console(logger, name, dict(event)) + "\n")
            lf: Any = dict(event)
            for proc in logfmt:
                lf = proc(logger, name, lf)
            self.logfmt.write(f"{lf}\n")
            return ""

        structlog.reset_defaults()  # no level filter left by an earlier test's config
        structlog.configure(
            processors=[structlog.processors.add_log_level, tee],
            logger_factory=structlog.ReturnLoggerFactory(),
            cache_logger_on_first_use=False,
        )
        handler = logging.StreamHandler(self.stdlib)
        handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        self._handler = handler

    def undo(self) -> None:
        structlog.reset_defaults()
        logging.getLogger().removeHandler(self._handler)

    def run(self, call: Callable[[], object]) -> None:
        """Call as an application would: catch the library's error and log it with its
        traceback (``log.exception``), keep it for the renderers below."""
        try:
            call()
        except KSError as exc:
            self.errors.append(exc)
            structlog.get_logger("app").exception("call failed")
            logging.getLogger("app").exception("call failed")

    def render_errors(self) -> None:
        rich_seen: set[type[BaseException]] = set()
        for exc in self.errors:
            self.texts += [str(exc), repr(exc), repr(exc.args), repr(vars(exc))]
            self.texts.append(
                "".join(
                    traceback.TracebackException.from_exception(exc, capture_locals=True).format()
                )
            )
            transform = structlog.tracebacks.ExceptionDictTransformer(show_locals=True)
            self.texts.append(
                json.dumps(transform((type(exc), exc, exc.__traceback__)), default=repr)
            )
            if HAVE_RICH and type(exc) not in rich_seen:  # seconds each: once per class
                rich_seen.add(type(exc))
                out = io.StringIO()
                con = rich.console.Console(file=out, width=200, color_system=None)
                con.print(
                    rich.traceback.Traceback.from_exception(
                        type(exc), exc, exc.__traceback__, show_locals=True, extra_lines=0
                    )
                )
                self.texts.append(out.getvalue())
            with contextlib.suppress(Exception):  # refusing to pickle is fine; leaking is not
                self.texts.append(pickle.dumps(exc).decode("latin-1"))

    def everything(self) -> str:
        return "\n".join(
            [
                self.json.getvalue(),
                self.console.getvalue(),
                self.logfmt.getvalue(),
                self.stdlib.getvalue(),
                *self.texts,
            ]
        )


def pickles(objects: Iterable[object]) -> list[str]:
    out = []
    for obj in objects:
        with contextlib.suppress(Exception):
            out.append(pickle.dumps(obj).decode("latin-1"))
    return out


def bad_day(
    sb: Any, creds: Credentials, wrong: list[Credentials], store_path: Path, ch: Channels
) -> list[str]:
    """Drive a session through a bad day; return the one-time and session tokens issued."""
    issued: list[str] = []
    s = KSSession(
        creds, host=sb.url, store=FileStore(store_path), timeout=(1.0, 0.5), cooldown=0, retry=FAST
    )

    def remember(*_: object) -> None:
        snap = s.snapshot()
        for tok in (snap.one_time_token, snap.session_token):
            if tok is not None and tok.reveal() not in issued:
                issued.append(tok.reveal())

    s.on_transition(remember)
    ch.run(s.connect)
    ch.run(lambda: s.get(REPORT))
    sb.control.expire()  # an expiry met by a trading call: re-login and replay
    ch.run(lambda: s.get(REPORT))
    sb.control.fault(REPORT, status=429, retry_after=0)
    ch.run(lambda: s.get(REPORT))
    sb.control.fault(REPORT, status=503, count=3)
    ch.run(lambda: s.get(REPORT))
    sb.control.fault(REPORT, status=401, code=contract.FAULT_GATEWAY_TOKEN)
    ch.run(lambda: s.get(REPORT))  # the provider refreshes the Bearer token
    ch.run(lambda: s.post(contract.ORDER_NORMAL[1], json={"note": "order"}))
    # A connection dropped in the middle of the login: the password was in flight.
    sb.control.expire()
    sb.control.fault(contract.LOGIN_USERID[1], drop=True, count=3)
    ch.run(lambda: s.get(REPORT))
    ch.run(s.connect)
    for path in SESSION_PATHS:  # malformed answers to each session call, then missing fields
        for fault in ({"malformed": True}, {"missing_field": True}):
            sb.control.expire()
            sb.control.fault(path, count=3, **fault)
            ch.run(lambda: s.get(REPORT))
            ch.run(s.connect)
    ch.run(s.connect)
    remember()
    ch.texts += [repr(s), str(s), repr(s.snapshot()), repr(s.history), repr(s.auth)]
    ch.texts += [repr(creds), repr(s.store), repr(s.wire)]
    ch.texts += pickles([creds, s.snapshot(), s.history, creds.password, creds.access_code])
    ch.run(s.logout)
    s.close()
    for other in wrong:  # rejected logins: the password and a code were sent
        w = KSSession(other, host=sb.url, timeout=(1.0, 0.5), cooldown=0, retry=FAST)
        ch.run(w.connect)
        ch.texts.append(repr(w))
        w.close()
    return issued


@settings(
    max_examples=3,
    deadline=None,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(password=secret_text, code=codes, bearer=secret_text, bearer2=secret_text, seed=seeds)
def test_secret_hunt_bad_day(
    tmp_path: Path, password: str, code: str, bearer: str, bearer2: str, seed: str
) -> None:
    account = Account("hunt-user", password, code, totp_secret=seed)
    config = SandboxConfig(accounts=(account,), access_token=bearer)
    creds = Credentials(
        userid="hunt-user",
        consumer_key="demo-consumer-key",
        access_token=bearer,
        password=password,
        access_code=code,
        access_token_provider=lambda: bearer,  # answers with the (still good) token
    )
    wrong = [  # a wrong access code; a Bearer token the gateway rejects, with no provider
        Credentials(
            userid="hunt-user",
            consumer_key="demo-consumer-key",
            access_token=bearer,
            password=password,
            access_code=code[::-1] + "7",
        ),
        Credentials(
            userid="hunt-user",
            consumer_key="demo-consumer-key",
            access_token=bearer2,
            password=password,
            totp_secret=seed,
        ),
    ]
    store_path = tmp_path / f"store-{abs(hash((password, code)))}.json"
    ch = Channels()
    ch.configure()
    try:
        with run_sandbox(config) as sb:
            issued = bad_day(sb, creds, wrong, store_path, ch)
            calls = sb.control.stats()
    finally:
        ch.undo()
    ch.render_errors()
    assert calls, "the sandbox was reached"
    assert ch.errors, "the bad day raised errors to render"
    assert len(issued) >= 4, "the bad day issued one-time and session tokens"
    text = ch.everything()
    assert "transition" in text, "the capture saw the library's events"
    secrets = {"password": password, "access code": code, "bearer": bearer, "bearer2": bearer2}
    secrets["totp seed"] = seed
    secrets |= {f"issued token {i}": tok for i, tok in enumerate(issued)}
    assert hits(text, secrets) == []
    stored = store_path.read_text() if store_path.exists() else ""
    session_tokens = {t for t in issued if t in stored}
    others = {k: v for k, v in secrets.items() if v not in session_tokens}
    assert hits(stored, others) == [], "the store keeps the session token and nothing else"


@settings(
    max_examples=2,
    deadline=None,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(password=secret_text, bearer=secret_text, seed=seeds)
def test_secret_hunt_cli(tmp_path: Path, password: str, bearer: str, seed: str) -> None:
    """The real ``session-fsm`` login/status/logout, a failing login with --debug, a TOTP
    account: nothing on stdout or stderr, and nothing in the store but the session token."""
    account = Account("cli-user", password, totp_secret=seed)
    config = SandboxConfig(accounts=(account,), access_token=bearer)
    store = tmp_path / "cli-store.json"
    out: list[str] = []
    with run_sandbox(config) as sb:
        env = {
            **os.environ,
            "KS_HOST": sb.url,
            "KS_USERID": "cli-user",
            "KS_CONSUMER_KEY": "demo-consumer-key",
            "KS_ACCESS_TOKEN": bearer,
            "KS_PASSWORD": password,
            "KS_TOTP_SECRET": seed,
            "KS_STORE": f"file:{store}",
        }

        def cli(*args: str, **over: str) -> int:
            proc = subprocess.run(
                [sys.executable, "-m", "session_fsm", *args],
                env={**env, **over},
                capture_output=True,
                text=True,
                timeout=60,
            )
            out.extend([proc.stdout, proc.stderr])
            return proc.returncode

        assert cli("login") == 0, out
        assert cli("status") == 0, out
        cli("status", "--json")
        sb.control.fault(contract.LOGIN_USERID[1], drop=True, count=5)
        sb.control.expire()
        assert cli("--debug", "login", KS_STORE=f"file:{tmp_path / 'other.json'}") != 0
        assert (
            cli(
                "--debug",
                "login",
                KS_PASSWORD=password + "x",
                KS_STORE="file:" + str(tmp_path / "third.json"),
            )
            != 0
        )
        cli("logout")
    text = "\n".join(out)
    code_now = pyotp.TOTP(seed).now()
    assert "cli-user" in text or "Authenticated" in text, "the CLI said something"
    secrets = {"password": password, "bearer": bearer, "totp seed": seed}
    assert hits(text, secrets) == []
    assert code_now not in text or len(code_now) < 6
    if store.exists():
        assert hits(store.read_text(), secrets) == []


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_holders_refuse_pickling(protocol: int) -> None:
    """Every holder of a secret refuses to be pickled, the TOTP provider included."""
    seed = base64.b32encode(b"0123456789abcdef").decode()
    creds = Credentials(
        userid="u",
        consumer_key="k",
        access_token="bearer-token-xyz",
        password="pw-abcdefgh",
        totp_secret=seed,
    )
    for holder in (creds.bearer, creds.password, creds.access_code, creds):
        with pytest.raises(TypeError):
            pickle.dumps(holder, protocol=protocol)
