"""Generated secrets never reach a log line, an exception text or a repr.

Each example starts a sandbox whose account uses hypothesis-generated password, access code and
Bearer token, drives a real session through its lifecycle and through every error path of the
wire layer, and searches every captured log line (JSON and console renderers, under an
application config that has no redaction of its own) and every exception's str/repr for the
generated secrets and for the one-time and session tokens the sandbox issued.
"""

from __future__ import annotations

import io
import json
from typing import Any

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from session_fsm import (
    Credentials,
    KSError,
    KSSession,
    RetryPolicy,
    Secret,
    configure_logging,
    contract,
)
from session_fsm.logs import redact
from session_fsm.sandbox import Account, SandboxConfig, run_sandbox

# Distinctive secrets: long enough that finding one is never a coincidence.
secret_text = st.text(
    alphabet="abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=12, max_size=40
)
digits = st.text(alphabet="0123456789", min_size=10, max_size=16)

FAULTS: list[dict[str, Any]] = [
    {"status": 400},
    {"status": 401, "code": contract.FAULT_GATEWAY_TOKEN},
    {"status": 401, "code": contract.FAULT_SESSION_EXPIRED},
    {"status": 401, "code": contract.FAULT_OTT_INVALID},
    {"status": 401, "code": 0},
    {"status": 429, "retry_after": 1},
    {"status": 500},
    {"status": 503},
    {"status": 504},
    {"malformed": True},
    {"missing_field": True},
    {"drop": True},
    {"delay": 0.5},
]
PATHS = [
    contract.SESSION_INIT[1],
    contract.LOGIN_USERID[1],
    contract.TWO_FA_ACCESSCODE[1],
    contract.ORDERS_REPORT[1],
    contract.ORDER_NORMAL[1],
    contract.SESSION_LOGOUT[1],
]


class Capture:
    def __init__(self) -> None:
        self.console = io.StringIO()
        self.json = io.StringIO()
        self.texts: list[str] = []

    def configure(self) -> None:
        """An application's own config: both renderers, no redaction processor of its own."""

        def tee(_: Any, __: str, ev: Any) -> str:
            self.console.write(structlog.dev.ConsoleRenderer(colors=False)(_, __, dict(ev)))
            return json.dumps(ev, default=repr)

        structlog.configure(
            processors=[structlog.processors.add_log_level, tee],
            logger_factory=structlog.PrintLoggerFactory(self.json),
            cache_logger_on_first_use=False,
        )

    def everything(self) -> str:
        return "\n".join([self.console.getvalue(), self.json.getvalue(), *self.texts])


def run(call: Any, cap: Capture) -> None:
    try:
        call()
    except KSError as exc:
        cap.texts += [str(exc), repr(exc), str(exc.__cause__), repr(exc.args)]


@settings(max_examples=6, deadline=None)
@given(password=secret_text, code=digits, bearer=secret_text, consumer=secret_text)
def test_no_secret_in_logs_errors_or_reprs(
    password: str, code: str, bearer: str, consumer: str
) -> None:
    cap = Capture()
    cap.configure()
    issued: list[str] = []
    config = SandboxConfig(
        accounts=(Account("hyp-user", password, code),), consumer_key=consumer, access_token=bearer
    )
    creds = Credentials(
        userid="hyp-user",
        consumer_key=consumer,
        access_token=bearer,
        password=password,
        access_code=code,
    )
    try:
        with run_sandbox(config) as sb:
            s = KSSession(
                creds,
                host=sb.url,
                timeout=(1.0, 0.3),
                cooldown=0,
                retry=RetryPolicy(total=1, backoff_factor=0, sleeper=lambda _: None),
            )

            def remember() -> None:
                snap = s.snapshot()
                for tok in (snap.one_time_token, snap.session_token):
                    if tok is not None:
                        issued.append(tok.reveal())

            s.on_transition(lambda _s, _r: remember())
            cap.texts += [repr(s), str(s), repr(creds), repr(s.snapshot()), repr(s.auth)]
            for path in PATHS:
                for fault in FAULTS:
                    sb.control.reset()
                    run(s.connect, cap)
                    sb.control.fault(path, **fault)
                    if path in PATHS[:3]:
                        if s.may("logout"):
                            run(s.logout, cap)
                        run(s.connect, cap)
                    elif path == contract.SESSION_LOGOUT[1]:
                        run(s.logout, cap)
                    elif path == contract.ORDER_NORMAL[1]:
                        run(lambda p=path: s.post(p, json={"secretish": password}), cap)
                    else:
                        run(lambda p=path: s.get(p), cap)
                    cap.texts += [repr(s.snapshot()), repr(s.history[-1:])]
            run(s.connect, cap)
            remember()
            s.logout()
            s.close()
    finally:
        structlog.reset_defaults()
    text = cap.everything()
    assert "transition" in text  # the capture really saw the library's events
    for secret in (password, code, bearer, *issued):
        assert secret not in text, "a secret leaked"
    assert issued, "the lifecycle issued tokens"


def test_redaction_processor_masks_nested_secrets() -> None:
    event = {
        "event": "x",
        "headers": {"Authorization": "Bearer abc.def", "sessionToken": "tok", "ok": 1},
        "items": [{"password": "p"}, ("accessCode", {"oneTimeToken": "o"})],
        "note": "sent Bearer zzz to server",
        "has_password": True,
        "token": Secret("hidden-value"),
    }
    out = redact(None, "info", dict(event))
    flat = json.dumps(out, default=str)
    for leaked in ("abc.def", 'tok"', '"p"', '"o"', "zzz", "hidden-value"):
        assert leaked not in flat
    assert out["headers"]["ok"] == 1 and out["has_password"] is True


def test_configure_logging_helper_redacts(capsys: Any) -> None:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    try:
        structlog.get_logger("app").info("mine", password="pw-123456789", sessionToken="t0k3n")
    finally:
        structlog.reset_defaults()
    line = json.loads(stream.getvalue())
    assert line["password"] == "[redacted]" and line["sessionToken"] == "[redacted]"
    assert "timestamp" in line and line["level"] == "info"


def test_secret_type() -> None:
    s = Secret("sup3r-s3cret-value")
    assert "sup3r" not in repr(s) and "sup3r" not in str(s) and "sup3r" not in f"{s}"
    assert s.reveal() == "sup3r-s3cret-value" and s == Secret("sup3r-s3cret-value")
    assert s.fingerprint == Secret("sup3r-s3cret-value").fingerprint != Secret("x").fingerprint
    import pickle

    try:
        pickle.dumps(s)
    except TypeError:
        pass
    else:  # pragma: no cover
        raise AssertionError("a Secret must not be picklable")
