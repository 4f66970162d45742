"""The fast paths of logging and snapshots keep their promises.

Transition events skip redaction for the fields the library vouches for, but never for what the
application added to the event (its context variables); ``configure_logging``'s one-step JSON
processor renders what structlog's chain would; ``Snapshot.evolve`` is ``dataclasses.replace``.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import fields, replace
from datetime import datetime, timezone
from typing import Any

import pytest
import structlog

from session_fsm import (
    KSSession,
    Secret,
    SessionExpired,
    Snapshot,
    State,
    TransitionRecord,
    configure_logging,
)
from session_fsm.core.snapshot import EVENT_KEYS, Cooldown
from session_fsm.logs import json_line
from session_fsm.sandbox import Sandbox
from session_fsm.wire import WireConfig, host_allowed
from tests.conftest import make_credentials

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture()
def json_log() -> Any:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()


def test_transition_events_still_redact_the_applications_context(
    sb: Sandbox, json_log: Any
) -> None:
    # The application binds secrets into its context: they ride on the library's events, which
    # are the ones whose own fields skip redaction.
    structlog.contextvars.bind_contextvars(
        api_token="ctx-tok-123456789", note="Bearer ctx-bearer-987654321", request_id=7
    )
    KSSession(make_credentials(), host=sb.url).connect()
    lines = json_log()
    transitions = [e for e in lines if e["event"] == "transition"]
    assert [e["trigger"] for e in transitions] == ["init", "login", "authenticate"]
    text = json.dumps(lines)
    assert "ctx-tok-123456789" not in text and "ctx-bearer-987654321" not in text
    for e in transitions:
        assert e["api_token"] == "[redacted]" and e["request_id"] == 7
        assert e["note"] == "Bearer [redacted]"
        # the vouched fields arrive untouched (no "[redacted]" for guards like has_password)
        assert set(e) == EVENT_KEYS | {"api_token", "note", "request_id", "level", "timestamp"}
    assert transitions[1]["guards"] == {"has_password": True}


def test_vouching_ends_with_the_event(json_log: Any) -> None:
    # After a transition event, an application event with the same key names is redacted again.
    log = structlog.get_logger("app")
    from session_fsm.logs import emit_record

    emit_record(log, "info", "transition", {"reason": "ok"}, frozenset({"event", "reason"}))
    log.info("mine", reason="Bearer abc-secret-token-1")
    first, second = json_log()
    assert first["reason"] == "ok"
    assert second["reason"] == "Bearer [redacted]"


def test_event_keys_are_the_record_fields() -> None:
    rec = TransitionRecord(0.0, "login", State.INITIALISED, State.OTT_ISSUED, "ok")
    assert set(rec.as_event()) | {"event", "session_id", "userid"} == EVENT_KEYS


def test_json_line_renders_like_the_structlog_chain() -> None:
    out = json_line(None, "warn", {"event": "e", "password": "pw-1", "n": 1})
    line = json.loads(out)
    assert line["level"] == "warning" and line["password"] == "[redacted]" and line["n"] == 1
    assert ISO_UTC.match(line["timestamp"]), line["timestamp"]
    stamp = datetime.strptime(line["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    assert abs((now - stamp).total_seconds()) < 5
    try:
        raise ValueError("boom")
    except ValueError:
        line = json.loads(json_line(None, "exception", {"event": "x", "exc_info": True}))
    assert line["level"] == "error" and "ValueError: boom" in line["exception"]
    assert "exc_info" not in line
    # anything JSON cannot encode is written as its repr (a Secret shows its fingerprint)
    line = json.loads(json_line(None, "info", {"event": "x", "obj": object(), "s": Secret("zz")}))
    assert line["obj"].startswith("<object") and line["s"].startswith("Secret(fp=")


def test_snapshot_evolve_is_replace() -> None:
    snap = Snapshot(State.AUTHENTICATED, "h", 3, Secret("t"), None, None, 9.0)
    values: dict[str, Any] = {
        "state": State.LOGGED_OUT,
        "host": "h2",
        "generation": 4,
        "session_token": Secret("u"),
        "one_time_token": Secret("o"),
        "ott_time": 1.5,
        "login_time": 2.5,
        "who": None,
        "bearer_generation": 2,
        "cooldown": Cooldown(5.0, "LoginRejected"),
        "refreshing": True,
        "refresh_retry_at": 7.5,
        "relogins_failed": 2,
        "relogin_error": SessionExpired("the re-login failed"),
    }
    assert set(values) == {f.name for f in fields(Snapshot)}
    for name, value in values.items():
        assert snap.evolve(**{name: value}) == replace(snap, **{name: value})
        assert getattr(snap.evolve(**{name: value}), name) is value  # compare=False ones too
    assert snap.evolve(**values) == replace(snap, **values) == Snapshot(**values)
    assert snap.evolve() == snap
    with pytest.raises(TypeError, match="'sessionToken'"):
        snap.evolve(sessionToken=Secret("x"))


def test_allow_list_given_as_a_list() -> None:
    config = WireConfig(allowed_domains=["example.com"], allow_loopback=False)  # type: ignore[arg-type]
    assert host_allowed("https://api.example.com/apim", config)
    assert not host_allowed("https://example.com.evil.io/apim", config)
    assert not host_allowed("http://127.0.0.1:9/apim", config)
    assert host_allowed("http://127.0.0.1:9/apim", WireConfig())


def test_per_call_options_override_the_wires_defaults(sb: Sandbox) -> None:
    # Wire.send merges timeout/verify/allow_redirects under the caller's own keyword arguments.
    from session_fsm import RequestTimeout, RetryPolicy, Wire, contract

    wire = Wire(WireConfig(timeout=(1.0, 5.0), retry=RetryPolicy(total=0)))
    try:
        url = sb.url + contract.ORDERS_REPORT[1]
        sb.control.fault(contract.ORDERS_REPORT[1], delay=0.6)
        with pytest.raises(RequestTimeout):
            wire.send("GET", url, timeout=(1.0, 0.2))  # the caller's read timeout wins
        sb.control.fault(contract.ORDERS_REPORT[1], delay=0.3)
        assert wire.send("GET", url).status_code == 401  # the Wire's 5 s: no token, but answered
    finally:
        wire.close()
