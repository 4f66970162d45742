"""No secret is reachable from any error the library raises (issue 14, item 2).

Hypothesis generates the account's password and access code and the gateway (Bearer) token; the
sandbox serves them and issues its own one-time and session tokens. Every cell of the fault
matrix (:mod:`tests.test_fault_matrix`: each fault on each session and trading call, served
until it shows) is driven, plus a wrong password, a wrong access code and a gateway-token
refresh, and each error raised is hunted through (:mod:`tests.secret_hunt`): its object graph
(attributes, args, cause/context chain, traceback frames' locals, recursively) and its
renderings by the locals-showing renderers (stdlib ``capture_locals``, structlog
``dict_tracebacks``, rich ``show_locals``), for each secret and its base64, URL-encoded and hex
forms. Zero hits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from session_fsm import (
    Credentials,
    KSError,
    KSSession,
    LoginRejected,
    NetworkError,
    RetryPolicy,
    Secret,
    contract,
)
from session_fsm.sandbox import Account, Sandbox, SandboxConfig, run_sandbox
from tests.secret_hunt import hunt, reachable_strings, rich_rendering
from tests.test_fault_matrix import CALLS, ENDPOINT, FAULTS, ORDER, SESSION_CALLS, SETUP

USER = "hunt-user"
#: Secrets with characters that base64, URL-encoding and hex all change, so each form differs.
secret_text = st.text(
    alphabet="abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789+/=!-_.~",
    min_size=12,
    max_size=32,
)
access_codes = st.text(alphabet="0123456789", min_size=8, max_size=12)
bearers = st.text(
    alphabet="abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789-_.", min_size=16, max_size=40
)
#: Tokens the sandbox issued while the test ran (module-level: no session references it).
ISSUED: set[str] = set()
READ_TIMEOUT = 0.25
ATTEMPTS = 4  # the fault is served this often: more than the retries below make


def _remember(session: KSSession, record: Any) -> None:
    snap = session.snapshot()
    for token in (snap.session_token, snap.one_time_token):
        if token is not None:
            ISSUED.add(token.reveal())


def _credentials(password: str, code: str, bearer: str, **over: Any) -> Credentials:
    fields: dict[str, Any] = dict(
        userid=USER,
        consumer_key="hunt-consumer-key",
        access_token=bearer,
        password=password,
        access_code=code,
        app_id="secret-hunt",
    )
    fields.update(over)
    return Credentials(**fields)


def _session(sb: Sandbox, creds: Credentials, **options: Any) -> KSSession:
    options.setdefault("retry", RetryPolicy(total=2, backoff_factor=0.0, sleeper=lambda _: None))
    options.setdefault("timeout", (2.0, 3.0))
    return KSSession(creds, host=sb.url, on_transition=_remember, cooldown=0, **options)


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


def _errors_of_the_matrix(sb: Sandbox, creds: Credentials) -> Iterator[tuple[str, KSError]]:
    """Drive every fault-matrix cell (fault served until it shows); yield each error."""
    for call in CALLS:
        for fault, spec in FAULTS.items():
            sb.control.reset()
            timeout = (2.0, READ_TIMEOUT) if fault == "read-timeout" else (2.0, 3.0)
            s = _session(sb, creds, timeout=timeout)
            try:
                for step in SETUP[call]:
                    _run(s, step)
                method, path = ENDPOINT[call]
                spec = {**spec, "delay": 3 * READ_TIMEOUT} if "delay" in spec else spec
                sb.control.fault(path, method=method, count=ATTEMPTS, **spec)
                err = _attempt(s, call)
                if err is not None:
                    yield f"{call} x {fault}", err
            finally:
                s.close()


def _errors_of_a_bad_day(
    sb: Sandbox, password: str, code: str, bearer: str
) -> Iterator[tuple[str, KSError]]:
    """Wrong password, wrong access code, a rejected Bearer refreshed to another wrong one."""
    sb.control.reset()
    for name, creds in (
        ("wrong password", _credentials(password + "x", code, bearer)),
        ("wrong access code", _credentials(password, code + "1", bearer)),
        (
            "bearer refreshed to a wrong one",
            _credentials(password, code, bearer + "x", access_token_provider=lambda: bearer + "y"),
        ),
    ):
        s = _session(sb, creds)
        try:
            err = _attempt(s, "connect")
            assert err is not None, name
            yield name, err
        finally:
            s.close()


@settings(max_examples=2)
@given(password=secret_text, code=access_codes, bearer=bearers)
def test_no_error_of_the_fault_matrix_reaches_a_secret(
    password: str, code: str, bearer: str
) -> None:
    ISSUED.clear()
    config = SandboxConfig(
        accounts=(Account(USER, password, code),),
        consumer_key="hunt-consumer-key",
        access_token=bearer,
    )
    errors: list[tuple[str, KSError]] = []
    with run_sandbox(config) as sb:
        errors += _errors_of_the_matrix(sb, _credentials(password, code, bearer))
        errors += _errors_of_a_bad_day(sb, password, code, bearer)
    kinds = {type(e).__name__ for _, e in errors}
    # The matrix really raised the error classes it is about (a run that raised nothing
    # would prove nothing).
    assert {"NetworkError", "RequestTimeout", "LoginRejected", "SessionExpired"} <= kinds
    assert {"MalformedAnswer", "ServiceUnavailable", "GatewayAuthError"} <= kinds
    assert len(ISSUED) >= 4, "the sandbox issued tokens to look for"
    secrets = [password, code, bearer, *sorted(ISSUED)]
    found = {name: hits for name, err in errors if (hits := hunt(err, secrets))}
    assert not found, f"secrets reachable from errors: {found}"


# --- the review's case, and the mechanism, one by one --------------------------------------------

PASSWORD = "hunt-Password+/=123"
CODE = "98765432"
BEARER = "hunt-bearer-0123456789abcdef"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    config = SandboxConfig(
        accounts=(Account(USER, PASSWORD, CODE),),
        consumer_key="hunt-consumer-key",
        access_token=BEARER,
    )
    with run_sandbox(config) as sb:
        yield sb


def test_network_error_during_login_keeps_no_context_and_no_secret(sb: Sandbox) -> None:
    """The review's case: a dropped login kept requests' exception (holding the request with
    the password body and Bearer header) as ``__context__``."""
    s = _session(sb, _credentials(PASSWORD, CODE, BEARER))
    try:
        s.init()
        sb.control.fault(contract.LOGIN_USERID[1], drop=True, count=ATTEMPTS)
        with pytest.raises(NetworkError) as info:
            s.login()
        err = info.value
        assert err.__context__ is None and err.__cause__ is None
        assert hunt(err, [PASSWORD, BEARER]) == []
    finally:
        s.close()


def test_login_rejected_frames_hold_no_revealed_password(sb: Sandbox) -> None:
    s = _session(sb, _credentials(PASSWORD + "-wrong", CODE, BEARER))
    try:
        with pytest.raises(LoginRejected) as info:
            s.connect()
        assert hunt(info.value, [PASSWORD + "-wrong", BEARER]) == []
        names = [p for p, _ in reachable_strings(info.value)]
        assert any("<fire>" in p for p in names)  # the walk entered the edge flow's frames
    finally:
        s.close()


def test_trading_error_response_has_its_tokens_masked(sb: Sandbox) -> None:
    """A trading error carries the response; its request shows no Bearer or session token."""
    s = _session(sb, _credentials(PASSWORD, CODE, BEARER))
    try:
        s.connect()
        token = s.snapshot().session_token
        assert token is not None
        sb.control.fault(contract.ORDERS_REPORT[1], status=400)
        err = _attempt(s, "GET")
        assert err is not None and err.response is not None  # type: ignore[attr-defined]
        headers = err.response.request.headers  # type: ignore[attr-defined]
        assert headers[contract.H_AUTHORIZATION] == "[redacted]"
        assert headers[contract.H_SESSION_TOKEN] == "[redacted]"
        assert hunt(err, [BEARER, token.reveal()]) == []
    finally:
        s.close()


def test_call_auth_reveals_only_into_the_prepared_request() -> None:
    import requests

    from session_fsm.answers import CallAuth, Identity, seal

    who = Identity("u", "ck", "127.0.0.1", "app", Secret(BEARER))
    ott = {contract.H_ONE_TIME_TOKEN: Secret("ott-abc")}
    auth = CallAuth(who, ott, {"password": Secret(PASSWORD)})
    assert BEARER not in repr(auth) and PASSWORD not in repr(auth)
    prep = requests.Request("POST", "http://127.0.0.1/x", auth=auth).prepare()
    assert prep.headers[contract.H_AUTHORIZATION] == f"Bearer {BEARER}"
    assert prep.body is not None and PASSWORD.encode() in prep.body  # type: ignore[operator]
    assert prep.headers["Content-Length"] == str(len(prep.body))  # type: ignore[arg-type]
    seal(prep, drop_body=True)
    assert prep.body is None and prep.headers[contract.H_AUTHORIZATION] == "[redacted]"
    assert prep.headers[contract.H_ONE_TIME_TOKEN] == "[redacted]"


def test_rich_renderer_is_used_when_installed() -> None:
    """CI installs rich (test extra): the hunt really renders with it there."""
    pytest.importorskip("rich")
    try:
        raise ValueError("x")
    except ValueError as exc:
        text = rich_rendering(exc)
    assert text is not None and "ValueError" in text


# --- malformed answers that carry a valid token: the token never shows either -------------------


@pytest.mark.parametrize(
    ("trigger", "setup", "endpoint", "change"),
    [
        ("login", ("init",), contract.LOGIN_USERID, {"mpin": {"x": 1}}),
        ("authenticate", ("init", "login"), contract.TWO_FA_ACCESSCODE, {"enabledSegments": 5}),
        ("authenticate", ("init", "login"), contract.TWO_FA_ACCESSCODE, {"loginTime": "x"}),
        ("authenticate", ("init", "login"), contract.TWO_FA_ACCESSCODE, {"publicToken": 7}),
    ],
)
def test_a_malformed_answer_keeps_its_valid_token_masked(
    trigger: str, setup: tuple[str, ...], endpoint: tuple[str, str], change: dict[str, Any]
) -> None:
    """The answer's token was valid but another field was not: the parsed payload (a frame
    local of the parser and the wire) holds the token only as a Secret, the body not at all."""
    import json

    from session_fsm import MalformedAnswer
    from tests.answer_server import OTT, SESSION_TOKEN, answer_server

    with answer_server() as server:
        creds = _credentials(PASSWORD, CODE, BEARER)
        s = KSSession(creds, host=server.url, cooldown=0, timeout=(2.0, 3.0))
        try:
            for step in setup:
                getattr(s, step)()

            body = {"Success": {**server.valid(*endpoint), **change}}
            server.script(*endpoint, 200, json.dumps(body).encode())
            with pytest.raises(MalformedAnswer) as info:
                getattr(s, trigger)()
            found = hunt(info.value, [PASSWORD, CODE, BEARER, OTT, SESSION_TOKEN, "pub-0123456789"])
            assert found == []
        finally:
            s.close()
