"""Answers are parsed strictly: a hostile answer is a typed error, with a record and an event.

Issue 14, item 4. A loopback server (:mod:`tests.answer_server`) answers each of the four
session calls (and a trading call, for the re-login hook) with hypothesis-generated bodies:
valid answers with one field replaced by any JSON value or by a token with control or
non-ASCII characters, whole bodies of any JSON or bytes, bodies nested far too deeply, fault
envelopes of the wrong shape. Whatever the body: no untyped exception escapes, a failure leaves
a ``failed`` transition record in ``session.history`` and a ``transition`` event, a
``MalformedAnswer`` names the call, field and status but never the value, and an accepted
answer's tokens are header-safe (the next request works).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from session_fsm import (
    ConfigurationError,
    GatewayAuthError,
    KSError,
    KSSession,
    MalformedAnswer,
    RetryPolicy,
    SessionExpired,
    State,
    contract,
)
from session_fsm.models import ResLogin, ResSession2FA, ResSessionInit
from tests.answer_server import TRADING, AnswerServer, answer_server
from tests.conftest import FAST_RETRY, capture_logs, make_credentials

#: call name -> (trigger, endpoint, triggers that bring a fresh session to it)
CALLS: dict[str, tuple[str, tuple[str, str], tuple[str, ...]]] = {
    "session_init": ("init", contract.SESSION_INIT, ()),
    "login_with_user_id": ("login", contract.LOGIN_USERID, ("init",)),
    "generate_session2_fa": ("authenticate", contract.TWO_FA_ACCESSCODE, ("init", "login")),
    "session_logout": ("logout", contract.SESSION_LOGOUT, ("connect",)),
}
#: Field paths of each call's answer a mutation may hit (dotted: inside an object).
FIELDS: dict[str, list[str]] = {
    "session_init": [
        "redirect", "redirect.port", "redirect.host", "encryption", "encryption.keySize",
        "encryption.type", "encryption.publickKey", "weblink", "weblink.url", "userType",
        "status", "message", "userid",
    ],
    "login_with_user_id": ["oneTimeToken", "mpin", "biometric", "message"],
    "generate_session2_fa": [
        "sessionToken", "userId", "clientCode", "clientName", "emailId", "phoneNo",
        "enabledSegments", "enabledProducts", "publicToken", "loginTime",
    ],
    "session_logout": ["message"],
}  # fmt: skip
#: What a token may be: it goes into an HTTP header (the test's own statement of the rule).
HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
#: A marker every generated string value carries, to check no message ever shows a value.
MARK = "VALUE-"

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12).map(lambda t: MARK + t)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
#: Token-like strings: header-safe ones, and ones with CR/LF, spaces, controls, non-latin-1.
tokens = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    st.text(min_size=1, max_size=20).map(lambda t: MARK + t),
    st.sampled_from(["", "a\r\nInjected: 1", "tok\u20ac", "tok\u200b", " ", "a b", "\x00"]),
)


def deep(n: int) -> bytes:
    """A JSON array nested ``n`` deep (far past any recursion limit for large ``n``)."""
    return b"[" * n + b"]" * n


@st.composite
def hostile_answers(draw: st.DrawFn, call: str, server_valid: dict[str, Any]) -> tuple[int, bytes]:
    """(status, body) for ``call``: usually a valid answer with one field mutated."""
    kind = draw(st.sampled_from(["field", "field", "field", "body", "raw", "deep", "fault"]))
    status = 200
    if kind == "field":
        payload = json.loads(json.dumps(server_valid))
        path = draw(st.sampled_from(FIELDS[call])).split(".")
        target = payload
        for part in path[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        if draw(st.booleans()) and path[-1] in ("oneTimeToken", "sessionToken", "publicToken"):
            target[path[-1]] = draw(tokens)
        elif draw(st.integers(0, 9)) == 0:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = draw(json_values)
        envelope = draw(st.sampled_from(["Success", "success"]))
        body = json.dumps({envelope: payload}).encode()
    elif kind == "body":
        whole = draw(json_values | st.fixed_dictionaries({"Success": json_values}))
        body = json.dumps(whole).encode()
    elif kind == "raw":
        body = draw(st.binary(max_size=64))
    elif kind == "deep":
        n = draw(st.sampled_from([5_000, 50_000, 200_000]))
        wrap = draw(st.sampled_from([b"%s", b'{"Success": %s}', b'{"Success": {"redirect": %s}}']))
        body = wrap % deep(n)
    else:  # a failure answer whose fault envelope is of any shape
        status = draw(st.sampled_from([400, 401, 429, 500, 503]))
        fault = draw(json_values | st.fixed_dictionaries({"code": json_values}))
        body = json.dumps({"fault": fault}).encode()
        if draw(st.booleans()):
            body = b'{"fault": %s}' % deep(draw(st.sampled_from([5_000, 100_000])))
    return status, body


def _session(server: AnswerServer, **options: Any) -> KSSession:
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("timeout", (2.0, 5.0))
    options.setdefault("cooldown", 0)
    return KSSession(make_credentials(), host=server.url, **options)


@pytest.fixture(scope="module")
def server() -> Iterator[AnswerServer]:
    with answer_server() as s:
        yield s


def _transition_events(cap: Any) -> list[dict[str, Any]]:
    return [e for e in cap.events() if e.get("event") == "transition"]


def _check_failure(s: KSSession, cap: Any, trigger: str, err: KSError, status: int) -> None:
    """A failure left a record and an event; a MalformedAnswer names call/field/status only.
    A GatewayAuthError (a 401 the gateway answers for the Bearer token) is recorded after the
    call's failure as the ``gateway_rejected`` edge."""
    records, events = list(s.history), _transition_events(cap)
    if isinstance(err, GatewayAuthError):
        rejected, event = records.pop(), events.pop()
        assert (rejected.trigger, rejected.reason) == ("gateway_rejected", "GatewayAuthError")
        assert event["trigger"] == "gateway_rejected"
    rec = records[-1]
    assert (rec.trigger, rec.outcome, rec.error) == (trigger, "failed", type(err).__name__)
    assert events and events[-1]["trigger"] == trigger
    assert (events[-1]["outcome"], events[-1]["error"]) == ("failed", type(err).__name__)
    text = f"{err}\n{err!r}\n{err.args!r}"
    assert MARK not in text, "an error message shows a value of the answer"
    if isinstance(err, MalformedAnswer):
        assert err.call in CALLS or err.call == "trading"
        assert err.field and err.field in str(err)
        assert err.status == status and (status == 200 or f"HTTP {status}" in str(err))


def _run_call(server: AnswerServer, call: str, status: int, body: bytes) -> None:
    trigger, (method, path), setup = CALLS[call]
    server.reset()
    s = _session(server)
    cap = capture_logs()
    try:
        for step in setup:
            getattr(s, step)()
        server.script(method, path, status, body)
        try:
            getattr(s, trigger)()
        except KSError as exc:
            _check_failure(s, cap, trigger, exc, status)
            if call == "session_logout":
                assert s.state is State.LOGGED_OUT  # tokens are forgotten even then
            return
        # Accepted: every token the session now holds is header-safe, and the next request
        # (which sends them) meets no untyped error.
        snap = s.snapshot()
        for token in (snap.one_time_token, snap.session_token):
            assert token is None or HEADER_SAFE.fullmatch(token.reveal())
        server.reset()
        if snap.state is State.AUTHENTICATED:
            s.get(TRADING[1])
        elif snap.state is State.OTT_ISSUED:
            s.authenticate()
    finally:
        structlog.reset_defaults()
        s.close()


def _given_for(call: str) -> Callable[..., None]:
    @settings(max_examples=60)
    @given(data=st.data())
    def check(server: AnswerServer, data: st.DataObject) -> None:
        method, path = CALLS[call][1]
        status, body = data.draw(hostile_answers(call, server.valid(method, path)))
        _run_call(server, call, status, body)

    return check


def test_an_init_answered_401_without_a_fault_code_is_a_gateway_rejection(
    server: AnswerServer,
) -> None:
    """Found by hypothesis in a random run (the README's test line draws anew each time): a
    401 to session init is the gateway refusing the Bearer token, recorded as the init's
    failure and then the ``gateway_rejected`` edge; the check took the last record for the
    init's."""
    _run_call(server, "session_init", 401, b'{"fault": null}')


test_init_answers_never_escape_untyped = _given_for("session_init")
test_login_answers_never_escape_untyped = _given_for("login_with_user_id")
test_2fa_answers_never_escape_untyped = _given_for("generate_session2_fa")
test_logout_answers_never_escape_untyped = _given_for("session_logout")


# --- the examples of the review, one by one ------------------------------------------------------


def _init_with(server: AnswerServer, **changes: Any) -> dict[str, Any]:
    payload = server.valid(*contract.SESSION_INIT)
    for dotted, value in changes.items():
        target = payload
        *parents, last = dotted.split("__")
        for p in parents:
            target = target[p]
        target[last] = value
    return payload


@pytest.mark.parametrize(
    ("call", "change", "field"),
    [
        ("session_init", {"redirect__port": "443"}, "redirect.port"),
        ("session_init", {"redirect__port": [443]}, "redirect.port"),
        ("session_init", {"redirect__port": 70000}, "redirect.port"),
        ("session_init", {"encryption__keySize": "big"}, "encryption.keySize"),
        ("session_init", {"redirect": "somewhere"}, "redirect"),
        ("login_with_user_id", {"oneTimeToken": True}, "oneTimeToken"),
        ("login_with_user_id", {"oneTimeToken": "ott\r\nX-Evil: 1"}, "oneTimeToken"),
        ("generate_session2_fa", {"enabledSegments": 5}, "enabledSegments"),
        ("generate_session2_fa", {"sessionToken": 12345}, "sessionToken"),
        ("generate_session2_fa", {"sessionToken": ["x"]}, "sessionToken"),
        ("generate_session2_fa", {"sessionToken": "tok\r\nInjected: 1"}, "sessionToken"),
        ("generate_session2_fa", {"sessionToken": "tok\u20ac"}, "sessionToken"),
        ("generate_session2_fa", {"loginTime": "yesterday"}, "loginTime"),
        ("session_logout", {"message": {"nested": 1}}, "message"),
    ],
)
def test_each_reviewed_answer_is_a_malformed_answer(
    server: AnswerServer, call: str, change: dict[str, Any], field: str
) -> None:
    trigger, (method, path), setup = CALLS[call]
    server.reset()
    payload = _init_with(server, **change) if call == "session_init" else {
        **server.valid(method, path), **change
    }
    s = _session(server)
    cap = capture_logs()
    try:
        for step in setup:
            getattr(s, step)()
        server.script(method, path, 200, json.dumps({"Success": payload}).encode())
        with pytest.raises(MalformedAnswer) as info:
            getattr(s, trigger)()
        err = info.value
        assert (err.call, err.field, err.status) == (call, field, 200)
        assert str(err).startswith(f"{call} answer: field {field!r}")
        _check_failure(s, cap, trigger, err, 200)
        for value in change.values():
            if isinstance(value, str):
                assert value not in str(err) and value not in repr(err)
    finally:
        structlog.reset_defaults()
        s.close()


@pytest.mark.parametrize("call", list(CALLS))
def test_deeply_nested_answer_is_malformed(server: AnswerServer, call: str) -> None:
    trigger, (method, path), setup = CALLS[call]
    server.reset()
    s = _session(server)
    cap = capture_logs()
    try:
        for step in setup:
            getattr(s, step)()
        server.script(method, path, 200, b'{"Success": %s}' % deep(100_000))
        with pytest.raises(MalformedAnswer, match="nested too deeply") as info:
            getattr(s, trigger)()
        _check_failure(s, cap, trigger, info.value, 200)
    finally:
        structlog.reset_defaults()
        s.close()


def test_answer_over_the_size_cap_is_malformed_and_not_read_whole(server: AnswerServer) -> None:
    server.reset()
    s = _session(server, max_answer_bytes=4096)
    cap = capture_logs()
    try:
        padding = {"padding": "x" * 5000, **server.valid(*contract.SESSION_INIT)}
        server.script(*contract.SESSION_INIT, 200, json.dumps({"Success": padding}).encode())
        with pytest.raises(MalformedAnswer, match="max_answer_bytes=4096") as info:
            s.init()
        assert info.value.field == "body"
        _check_failure(s, cap, "init", info.value, 200)
        server.reset()
        s.init()  # a normal answer is read (the cap is per answer)
        assert s.state is State.INITIALISED
    finally:
        structlog.reset_defaults()
        s.close()


@pytest.mark.parametrize("bad", ["1", True, 10, 2**31, 1.5, None])
def test_max_answer_bytes_is_validated(server: AnswerServer, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_answer_bytes"):
        _session(server, max_answer_bytes=bad)


# --- the re-login hook and trading error answers ------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, b'{"fault": %s}' % deep(100_000)),
        (401, b"[" * 60_000),
        (401, json.dumps({"fault": {"code": [99999]}}).encode()),
        (401, json.dumps({"fault": "expired"}).encode()),
        (401, json.dumps({"fault": {"code": 1e309}}).encode().replace(b"Infinity", b"1e999")),
        (500, json.dumps({"fault": {"code": {"x": 1}}}).encode()),
        (401, json.dumps({"fault": {"code": 99999, "description": ["x"]}}).encode()),
    ],
)
def test_trading_fault_bodies_in_the_hook_are_malformed(
    server: AnswerServer, status: int, body: bytes
) -> None:
    server.reset()
    s = _session(server)
    cap = capture_logs()
    try:
        s.connect()
        server.script(*TRADING, status, body)
        with pytest.raises(MalformedAnswer) as info:
            s.get(TRADING[1])
        err = info.value
        assert (err.call, err.status) == ("trading", status)
        rec = s.history[-1]
        assert (rec.trigger, rec.outcome, rec.error, rec.status) == (
            "request", "failed", "MalformedAnswer", status,
        )  # fmt: skip
        assert rec.src is rec.dst is State.AUTHENTICATED
        events = _transition_events(cap)
        assert (events[-1]["trigger"], events[-1]["error"]) == ("request", "MalformedAnswer")
    finally:
        structlog.reset_defaults()
        s.close()


@settings(max_examples=40)
@given(data=st.data())
def test_trading_401_bodies_never_escape_untyped(server: AnswerServer, data: st.DataObject) -> None:
    status, body = data.draw(hostile_answers("session_logout", {"message": "x"}))
    if status == 200:
        status = 401
    server.reset()
    s = _session(server)
    cap = capture_logs()
    try:
        s.connect()
        server.script(*TRADING, status, body)
        try:
            s.get(TRADING[1])
        except MalformedAnswer as exc:
            assert s.history[-1].trigger == "request"
            assert _transition_events(cap)[-1]["error"] == "MalformedAnswer"
            assert MARK not in f"{exc}{exc!r}"
        except KSError as exc:  # a well-formed fault: its typed error (re-login made records)
            assert MARK not in f"{exc}{exc!r}"
    finally:
        structlog.reset_defaults()
        s.close()


def test_well_formed_401_in_the_hook_still_relogs_in(server: AnswerServer) -> None:
    """The strict fault parser did not break the re-login: 99999 still renews and replays."""
    server.reset()
    s = _session(server)
    try:
        s.connect()
        fault = {"fault": {"code": contract.FAULT_SESSION_EXPIRED, "message": "expired"}}
        server.script(*TRADING, 401, json.dumps(fault).encode())
        with pytest.raises(SessionExpired):  # the replay meets the same 401
            s.get(TRADING[1])
        assert server.calls[" ".join(contract.LOGIN_USERID)] == 2
    finally:
        s.close()


# --- the models, directly -----------------------------------------------------------------------


def test_models_type_check_without_a_server() -> None:
    assert ResLogin.parse({"oneTimeToken": "t"}).one_time_token.reveal() == "t"
    with pytest.raises(MalformedAnswer, match="oneTimeToken"):
        ResLogin.parse({"oneTimeToken": True})
    with pytest.raises(MalformedAnswer, match="sessionToken"):
        ResSession2FA.parse({"sessionToken": "a\nb"})
    with pytest.raises(MalformedAnswer, match=r"redirect\.port"):
        ResSessionInit.parse({"redirect": {"host": "h", "port": "443"}})
    assert ResSessionInit.parse({"redirect": {"host": "h", "port": 443}}).redirect is not None


@pytest.mark.parametrize("value", ["note\r\nInjected: 1", "caf\u00e9\u20ac", " zq-lead"])
def test_a_header_value_http_cannot_carry_is_a_configuration_error(
    server: AnswerServer, value: str
) -> None:
    """The transport's own refusals (requests' InvalidHeader, http.client's ValueError or
    UnicodeEncodeError, whose texts quote the value) become a typed error without the value."""
    server.reset()
    s = _session(server)
    try:
        s.connect()
        with pytest.raises(ConfigurationError) as info:
            s.get(TRADING[1], headers={"X-Note": value})
        err = info.value
        assert value not in f"{err}{err!r}" and err.__context__ is None
    finally:
        s.close()


def test_a_stored_token_that_is_not_header_safe_is_no_session() -> None:
    from session_fsm.stores import StoredSession

    good = {"host": "h", "userid": "u", "session_token": "tok", "generation": 1, "login_time": 1}
    assert StoredSession.from_json(good).session_token.reveal() == "tok"
    for bad in ("tok\r\nX: 1", "tok\u20ac", "a b"):
        with pytest.raises(ValueError, match="session_token") as info:
            StoredSession.from_json({**good, "session_token": bad})
        assert bad not in str(info.value)


def test_a_body_that_stalls_is_a_request_timeout(server: AnswerServer) -> None:
    """The body is read after the headers (streamed, to cap it): a read timeout met there is
    a RequestTimeout like one met before the headers, not a NetworkError."""
    from session_fsm import RequestTimeout

    server.reset()
    s = _session(server, timeout=(2.0, 0.3), retry=RetryPolicy(total=0))
    try:
        server.script(*contract.SESSION_INIT, 200, b'{"Success": {', stall=1.0)
        with pytest.raises(RequestTimeout):
            s.init()
        assert s.history[-1].error == "RequestTimeout"
    finally:
        s.close()
