"""The fault matrix: every fault the sandbox can inject, on each session call and trading call.

The cells are the product CALLS x FAULTS x PERSISTENCE. ``once`` serves the fault to one call
(a retry or a replay then meets a healthy server); ``always`` serves it to the next
:data:`ALWAYS` calls, more than any retry budget, so the final error shows. What each cell must
do comes from the small rule table below, written from the library's documented behaviour
(``errors.error_for``, the retry policies in ``wire``, the internal edges of ``table``, the
logout and cool-down rules of ``machine``, the re-login and replay rule of ``relogin``), not
from running it. Each cell checks: the error type (or success), the state after, every sandbox
call made (so retries and re-logins are counted), the ``Retry-After`` waits, the logged
transition, whether the session can recover (or is in its documented cool-down), and that no
secret appears in any log line or exception text. A table of all cells is printed at the end.
"""

from __future__ import annotations

import logging
import secrets
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from session_fsm import (
    BadRequest,
    Credentials,
    GatewayAuthError,
    KSError,
    KSSession,
    LoginRejected,
    MalformedAnswer,
    NetworkError,
    NotAuthorized,
    OneTimeTokenRejected,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    SessionExpired,
    State,
    WrongDomain,
    contract,
    table,
)
from session_fsm.sandbox import Account, Sandbox, SandboxConfig, run_sandbox
from tests.conftest import FAST_RETRY, SLEEPS, Clock, LogCapture, tables_wanted
from tests.drivers import DRIVERS, sessions_of

# --- the cells --------------------------------------------------------------------------------

SESSION_CALLS = ("init", "login", "authenticate", "logout")
CALLS = (*SESSION_CALLS, "GET", "POST")
#: The endpoint (method, path) each call hits.
ENDPOINT = {
    "init": contract.SESSION_INIT,
    "login": contract.LOGIN_USERID,
    "authenticate": contract.TWO_FA_ACCESSCODE,
    "logout": contract.SESSION_LOGOUT,
    "GET": contract.ORDERS_REPORT,
    "POST": contract.ORDER_NORMAL,
}
#: Triggers that bring a fresh session to where the call is made.
SETUP = {
    "init": (),
    "login": ("init",),
    "authenticate": ("init", "login"),
    "logout": ("connect",),
    "GET": ("connect",),
    "POST": ("connect",),
}
START = {"init": State.UNINITIALISED, "login": State.INITIALISED, "authenticate": State.OTT_ISSUED}
#: State after the call succeeds.
DONE = {
    "init": State.INITIALISED,
    "login": State.OTT_ISSUED,
    "authenticate": State.AUTHENTICATED,
    "logout": State.LOGGED_OUT,
    "GET": State.AUTHENTICATED,
    "POST": State.AUTHENTICATED,
}
ORDER = {"instrumentToken": 11536, "transactionType": "BUY", "quantity": 1, "price": 0}

RETRY_AFTER = 1.0
READ_TIMEOUT = 0.4  # the timeout cells' read timeout; their fault answers after 3x this
ALWAYS = 10  # more than FAST_RETRY.total + 1 attempts and the one replay
PERSISTENCE = {"once": 1, "always": ALWAYS}

FAULTS: dict[str, dict[str, Any]] = {
    "400": {"status": 400},
    "401/900901": {"status": 401, "code": contract.FAULT_GATEWAY_TOKEN},
    "401/99999": {"status": 401, "code": contract.FAULT_SESSION_EXPIRED},
    "401/50001": {"status": 401, "code": contract.FAULT_OTT_INVALID},
    "401/no-code": {"status": 401},
    "429+Retry-After": {"status": 429, "retry_after": RETRY_AFTER},
    "500": {"status": 500},
    "503": {"status": 503},
    "504": {"status": 504},
    "malformed-json": {"malformed": True},
    "missing-field": {"missing_field": True},
    "dropped": {"drop": True},
    # Answers nothing until well after the client's read timeout, then drops the connection,
    # so the late server thread has no side effect on later cells.
    "read-timeout": {"delay": 3 * READ_TIMEOUT, "drop": True},
}

# --- the rules (the documented behaviour) -------------------------------------------------------

#: Faults retried below the session layer (urllib3 Retry, wire.RetryPolicy): the four session
#: calls on 429/503 and transport faults (repeating them is harmless); idempotent trading
#: requests on 429/5xx and transport faults; trading POSTs never.
RETRIED = {
    "session": {"429+Retry-After", "503", "dropped", "read-timeout"},
    "GET": {"429+Retry-After", "500", "503", "504", "dropped", "read-timeout"},
    "POST": set(),
}
ATTEMPTS = FAST_RETRY.total + 1

#: The typed error of each fault (errors.error_for plus the answer-shape rules).
ERROR: dict[str, type[KSError] | None] = {
    "400": BadRequest,
    "401/900901": GatewayAuthError,
    "401/99999": SessionExpired,
    "401/50001": OneTimeTokenRejected,
    "429+Retry-After": RateLimited,
    "500": ServiceUnavailable,
    "503": ServiceUnavailable,
    "504": ServiceUnavailable,
    "dropped": NetworkError,
    "read-timeout": RequestTimeout,
}
#: A 401 without a recognised code means what the call makes of it.
BARE_401 = {"init": GatewayAuthError, "login": LoginRejected, "authenticate": LoginRejected}
#: Errors that move a session along an internal edge (named in the table).
INTERNAL_EDGE = {
    GatewayAuthError: "gateway_rejected",
    WrongDomain: "redirect_changed",
    OneTimeTokenRejected: "ott_rejected",
}
#: Errors remembered for the cool-down: later logins fail at once without a request.
COOLDOWN = (LoginRejected, GatewayAuthError, NotAuthorized)


def error_of(call: str, fault: str) -> type[KSError] | None:
    """The error a fault answer means for ``call`` (None: the answer is accepted)."""
    if fault == "401/no-code":
        return BARE_401.get(call, SessionExpired)
    if fault == "malformed-json":
        # Session answers are parsed; a trading answer is returned to the caller as it came.
        return MalformedAnswer if call in SESSION_CALLS else None
    if fault == "missing-field":
        # Only oneTimeToken and sessionToken are required; a missing redirect means "stay".
        return MalformedAnswer if call in ("login", "authenticate") else None
    return ERROR[fault]


@dataclass(frozen=True)
class Expect:
    """What one cell must show."""

    error: type[KSError] | None
    state: State
    attempts: int  # calls that reached the faulted endpoint
    relogin: bool = False  # a login + 2FA happened to renew the session
    sleeps: tuple[float, ...] = ()
    cooldown: bool = False


def expect(call: str, fault: str, persistence: str) -> Expect:
    """Apply the rules to one cell."""
    kind = "session" if call in SESSION_CALLS else call
    once = persistence == "once"
    err = error_of(call, fault)
    attempts, sleeps = 1, 0
    if fault in RETRIED[kind]:
        attempts = 2 if once else ATTEMPTS
        sleeps = attempts - 1 if fault == "429+Retry-After" else 0
        if once:
            err = None
    waits = (RETRY_AFTER,) * sleeps
    if err is None:
        return Expect(None, DONE[call], attempts, sleeps=waits)
    if call == "logout":
        # Tokens are forgotten even when the server call fails; an expired session is the goal.
        return Expect(
            None if err is SessionExpired else err, State.LOGGED_OUT, attempts, sleeps=waits
        )
    if kind != "session" and err is SessionExpired:
        # Re-login, replay once; a second 401 for the same request is the error.
        return Expect(None if once else err, State.AUTHENTICATED, 2, relogin=True)
    start = START.get(call, State.AUTHENTICATED)
    # A session call's error takes its internal edge when the table has one from ``start``; a
    # trading call only takes one for a rejected gateway token (the re-login hook).
    edge = table.edge(start, INTERNAL_EDGE.get(err, ""))
    if kind != "session" and err is not GatewayAuthError:
        edge = None
    state = edge.dest if edge is not None else start
    return Expect(err, state, attempts, sleeps=waits, cooldown=issubclass(err, COOLDOWN))


# --- fixtures -----------------------------------------------------------------------------------

PASSWORD = "pw-" + secrets.token_urlsafe(12)
ACCESS_CODE = "ac-" + secrets.token_hex(8)
BEARER = "bearer-" + secrets.token_urlsafe(16)
ROWS: list[str] = []


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """This module's sandbox: an account whose secrets are unique strings, easy to search for."""
    config = SandboxConfig(
        accounts=(Account("fm-user", PASSWORD, ACCESS_CODE),),
        consumer_key="fm-consumer-key",
        access_token=BEARER,
    )
    with run_sandbox(config) as sb:
        yield sb


@pytest.fixture(params=DRIVERS, ids=str)
def new_session(
    request: pytest.FixtureRequest, sb: Sandbox, clock: Clock
) -> Iterator[Callable[..., Any]]:
    """Every cell runs on both drivers: KSSession and AsyncKSSession (see tests/drivers.py)."""
    with sessions_of(request.param, sb.url, clock) as make:
        yield make


@pytest.fixture(scope="module", autouse=True)
def _print_table(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the module, print one line per cell (expected vs observed): when a cell failed,
    or on request (``-v`` or ``SESSION_FSM_TABLES=1``); a green run stays quiet."""
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is None or not ROWS:
        return
    if not tables_wanted(request.config) and not any(r.endswith("FAIL") for r in ROWS):
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_sep("-", f"fault matrix: {len(ROWS)} cells")
        reporter.write_line(HEADER)
        for row in ROWS:
            reporter.write_line(row)


HEADER = (
    f"{'call':<12} {'fault':<16} {'served':<6} {'result':<22} {'state':<14} "
    f"{'calls':>5} {'relogin':>7} {'waits':>5} {'cool':>4}  verdict"
)


def _row(call: str, fault: str, persistence: str, seen: Expect, ok: bool) -> str:
    result = seen.error.__name__ if seen.error else "success"
    return (
        f"{call:<12} {fault:<16} {persistence:<6} {result:<22} {seen.state.value:<14} "
        f"{seen.attempts:>5} {('yes' if seen.relogin else 'no'):>7} {len(seen.sleeps):>5} "
        f"{('yes' if seen.cooldown else 'no'):>4}  {'PASS' if ok else 'FAIL'}"
    )


def _run(session: KSSession, call: str) -> None:
    if call in SESSION_CALLS or call == "connect":
        getattr(session, call)()
    elif call == "GET":
        session.get(ENDPOINT[call][1])
    else:
        session.post(ENDPOINT[call][1], json=ORDER)


def _attempt(session: KSSession, call: str) -> KSError | None:
    try:
        _run(session, call)
    except KSError as exc:
        return exc
    return None


def _calls_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    b, a = before["calls"], after["calls"]
    return {k: n - b.get(k, 0) for k, n in a.items() if n != b.get(k, 0)}


def _key(call: str) -> str:
    method, path = ENDPOINT[call]
    return f"{method} {path}"


def _exception_text(exc: BaseException) -> str:
    return f"{exc}\n{exc!r}\n" + "".join(traceback.format_exception(exc))


# --- the matrix ---------------------------------------------------------------------------------


@pytest.mark.parametrize("persistence", list(PERSISTENCE))
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("call", CALLS)
def test_cell(
    call: str,
    fault: str,
    persistence: str,
    sb: Sandbox,
    new_session: Callable[..., KSSession],
    logs: LogCapture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    want = expect(call, fault, persistence)
    issued: set[str] = set()

    def remember_tokens(session: Any, record: Any) -> None:
        snap = session.snapshot()
        for token in (snap.session_token, snap.one_time_token):
            if token is not None:
                issued.add(token.reveal())

    creds = Credentials(
        userid="fm-user",
        consumer_key="fm-consumer-key",
        access_token=BEARER,
        password=PASSWORD,
        access_code=ACCESS_CODE,
        app_id="fault-matrix",
    )
    timeout = (2.0, READ_TIMEOUT) if fault == "read-timeout" else (2.0, 5.0)
    s = new_session(creds, timeout=timeout, on_transition=remember_tokens)
    for step in SETUP[call]:
        _run(s, step)
    generation = s.generation
    method, path = ENDPOINT[call]
    before = sb.control.stats()
    sb.control.fault(path, method=method, count=PERSISTENCE[persistence], **FAULTS[fault])
    SLEEPS.clear()

    err = _attempt(s, call)
    generations = s.generation - generation

    after = sb.control.stats()
    calls = _calls_delta(before, after)
    relogin = call not in SESSION_CALLS and after["logins"] > before["logins"]
    seen = Expect(
        type(err) if err else None,
        s.state,
        calls.get(_key(call), 0),
        relogin=relogin,
        sleeps=tuple(SLEEPS),
    )
    # Every request made, by endpoint: the faulted one, plus login + 2FA when re-logging in.
    want_calls = {_key(call): want.attempts}
    if want.relogin:
        want_calls.update({_key("login"): 1, _key("authenticate"): 1})

    # Once the server is healthy again the session recovers, unless a failed login is being
    # remembered: then connect() fails at once with that same error and sends nothing.
    texts = [_exception_text(err)] if err else []
    sb.control.reset()
    again = _attempt(s, "connect")
    # (the same error again: its class and text; a fresh object each time)
    cooled = again is not None and type(again) is type(err) and str(again) == str(err)
    seen = Expect(seen.error, seen.state, seen.attempts, seen.relogin, seen.sleeps, cooled)
    ok = seen == want and calls == want_calls
    ROWS.append(_row(call, fault, persistence, seen, ok))
    assert seen == want, f"observed {seen}"
    assert calls == want_calls
    if call not in SESSION_CALLS:  # a re-login made exactly one new session generation
        assert generations == want.relogin
    if cooled:
        assert sb.control.stats()["calls"] == {}, "a request was sent during the cool-down"
        s.reset_cooldown()
        again = _attempt(s, "connect")
    assert again is None, f"no recovery: {again!r}"
    s.get(ENDPOINT["GET"][1])
    assert s.state is State.AUTHENTICATED

    # The call was logged as one transition event with its outcome, internal edges too.
    events = [e for e in logs.events() if e.get("event") == "transition"]
    if call in SESSION_CALLS:
        mine = next(e for e in events if e["trigger"] == call)
        assert mine["outcome"] == ("failed" if want.error else "ok")
        assert mine["error"] == (want.error.__name__ if want.error else None)
    start = START.get(call, State.AUTHENTICATED)
    if want.error and want.state is not start and call != "logout":
        internal = INTERNAL_EDGE[want.error]
        assert any(e["trigger"] == internal and e["outcome"] == "ok" for e in events)
    if want.relogin:
        assert any(e.get("event") == "request_replayed" for e in logs.events())

    # No secret anywhere: log lines (both renderers, stdlib logging) and exception texts.
    output = "\n".join([logs.text(), caplog.text, *texts])
    for secret in (PASSWORD, ACCESS_CODE, BEARER, *issued):
        assert secret not in output, "a secret reached the output"
    assert issued, "the cell should have seen at least one token to look for"
