"""Every option and credential field is checked at construction, with a typed error naming the
field and never its value; a secret provider that yields nothing fails before anything is sent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_fsm import Credentials, KSSession, RetryPolicy
from session_fsm.config import SessionConfig
from session_fsm.errors import ConfigurationError
from session_fsm.sandbox import Sandbox
from session_fsm.secret import Secret
from session_fsm.wire import WireConfig
from tests.conftest import make_credentials

HOST = "http://127.0.0.1:1/apim"  # never reached: construction does no I/O
BEARER = "eyJhbGciOiJIUzI1NiJ9.gateway-token-9f3c"
LOGIN = "POST /session/1.0/session/login/userid"
TWO_FA = "POST /session/1.0/session/2FA/accesscode"
INIT = "GET /session/1.0/session/init"

#: (option, bad value): each must be refused when the session is made.
BAD_OPTIONS: list[tuple[str, Any]] = [
    ("timeout", "5"),
    ("timeout", (-1, 5)),
    ("timeout", (5,)),
    ("timeout", (math.nan, 5)),
    ("timeout", None),
    ("timeout", (1, math.inf)),
    ("relogin_timeout", math.nan),
    ("relogin_timeout", "30"),
    ("relogin_timeout", 1e300),
    ("retry", 5),
    ("retry", None),
    ("history_size", "5"),
    ("history_size", 2.5),
    ("history_size", True),
    ("cooldown", None),
    ("cooldown", -math.inf),
    ("ott_ttl", math.nan),
    ("soft_window", "sixty"),
    ("max_session_age", -7.5),
    ("max_session_age", "3600"),
    ("allowed_domains", "kotaksecurities.com"),
    ("allowed_domains", ("evil.com\\x",)),
    ("allowed_domains", (42,)),
    ("allow_loopback", "yes"),
    ("auto_relogin", 1),
    ("replay_posts", None),
    ("verify", "/no/such/ca-bundle.pem"),
    ("verify", 0),
    ("daily_cutoff", 1530),
    ("daily_cutoff", "quarter past three"),
    ("cutoff_tz", 5.5),
]

#: (Credentials field, bad value).
BAD_FIELDS: list[tuple[str, Any]] = [
    ("userid", "trader\u20ac42"),
    ("userid", "trader42\r\nX-Injected: yes"),
    ("userid", "     "),
    ("userid", 123456789),
    ("userid", "trader 42"),
    ("consumer_key", "ck-\u200bdeadbeef"),
    ("consumer_key", b"ck-bytes-value"),
    ("access_token", BEARER[:10] + "\u200b" + BEARER[10:]),  # a pasted zero-width space
    ("access_token", BEARER + "\n"),
    ("access_token", "Bearer " + BEARER),
    ("access_token", 123456789),
    ("ip", "not-an-address"),
    ("ip", 2130706433),
    ("app_id", "my\tbot-app"),
    ("app_id", "\u00e9quipe-bot"),
    ("password", 12345678),
    ("access_code", 987654),
    ("totp_secret", 1234567),
    ("access_token_provider", "not-callable-xyz"),
]


def assert_names_field_not_value(err: ConfigurationError, field: str, value: Any) -> None:
    shown = f"{err!s} {err!r} {err.args!r}"
    assert field in shown
    assert repr(value) not in shown
    if isinstance(value, str) and len(value.strip()) >= 3:
        assert value not in shown and value.strip() not in shown
    if isinstance(value, str) and BEARER in value:
        assert BEARER[:10] not in shown and BEARER[10:] not in shown
    # Raised on its own: no chained exception (whose text may hold the value) rides along.
    assert err.__cause__ is None and err.__context__ is None


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS)
def test_a_bad_option_is_refused_when_the_session_is_made(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        KSSession(make_credentials(), host=HOST, **{option: value})
    assert_names_field_not_value(info.value, option, value)


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
def test_a_bad_credential_field_is_refused_at_construction(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        make_credentials(**{field: value})
    assert_names_field_not_value(info.value, field, value)


@pytest.mark.parametrize(
    ("make", "field", "value"),
    [
        (lambda x: RetryPolicy(total=x), "total", "3"),
        (lambda x: RetryPolicy(total=x), "total", -1),
        (lambda x: RetryPolicy(backoff_factor=x), "backoff_factor", math.nan),
        (lambda x: RetryPolicy(retry_after_cap=x), "retry_after_cap", -5),
        (lambda x: RetryPolicy(sleeper=x), "sleeper", "time.sleep"),
        (lambda x: WireConfig(timeout=x), "timeout", "10"),
        (lambda x: WireConfig(pool_maxsize=x), "pool_maxsize", -3),
        (lambda x: WireConfig(retry=x), "retry", 3),
        (lambda x: KSSession(x, host=HOST), "credentials", {"userid": "u"}),
        (lambda x: KSSession(make_credentials(), host=HOST, clock=x), "clock", 17.25),
        (lambda x: KSSession(make_credentials(), host=x), "host", 8080),
        (lambda x: KSSession(make_credentials(), host=HOST, wire=x), "wire", "wire-xyz"),
        (lambda x: KSSession(make_credentials(), host=HOST, on_transition=x), "on_transition", 7),
    ],
)
def test_retry_wire_and_session_arguments_are_checked(
    make: Callable[[Any], Any], field: str, value: Any
) -> None:
    with pytest.raises(ConfigurationError) as info:
        make(value)
    assert_names_field_not_value(info.value, field, value)


def test_good_values_are_taken_in_their_canonical_form() -> None:
    config = SessionConfig(timeout=5, allowed_domains=["Example.COM"], relogin_timeout=2)
    assert config.timeout == (5.0, 5.0) and config.allowed_domains == ("example.com",)
    assert WireConfig(timeout=[1, 2]).timeout == (1.0, 2.0)
    creds = make_credentials(app_id="my trading bot", ip="::1", access_token=Secret(BEARER))
    assert creds.bearer.reveal() == BEARER


def test_the_zero_width_space_in_a_bearer_never_becomes_a_unicode_error() -> None:
    pasted = BEARER[:10] + "\u200b" + BEARER[10:]
    with pytest.raises(ConfigurationError) as info:
        Credentials(userid="u1", consumer_key="ck", access_token=pasted)
    assert "access_token" in str(info.value) and "invisible" in str(info.value)
    assert not isinstance(info.value, UnicodeError)
    assert BEARER[:10] not in repr(info.value) and BEARER[10:] not in repr(info.value)


# --- junk of every kind ---------------------------------------------------------------------

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=6),
    st.lists(st.floats(allow_nan=True) | st.integers() | st.text(max_size=3), max_size=3),
    st.tuples(st.floats(allow_nan=True), st.floats(allow_nan=True)),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
OPTIONS = sorted({name for name, _ in BAD_OPTIONS} | {"ott_ttl", "soft_window"})
FIELDS = ["userid", "consumer_key", "access_token", "ip", "app_id", "password", "access_code"]


def refused_cleanly(build: Callable[[], Any], field: str, value: Any) -> bool:
    try:
        build()
    except ConfigurationError as err:  # anything else escapes and fails the test
        shown = f"{err!s} {err!r}"
        assert field in shown
        if len(repr(value)) >= 4:
            assert repr(value) not in shown
        return True
    return False


@given(option=st.sampled_from(OPTIONS), value=JUNK)
def test_junk_options_are_refused_with_a_configuration_error_or_taken(
    option: str, value: Any
) -> None:
    if option == "verify" and isinstance(value, str) and value:
        value = "/no/such/" + value  # an existing path would be a good value
    if refused_cleanly(lambda: SessionConfig(**{option: value}), option, value):
        return
    taken = getattr(SessionConfig(**{option: value}), option)
    if option in ("relogin_timeout", "cooldown", "ott_ttl", "soft_window"):
        assert finite(taken)
    elif option == "timeout":
        assert type(taken) is tuple and all(finite(t) and t > 0 for t in taken)
    elif option in ("allow_loopback", "auto_relogin", "replay_posts"):
        assert type(taken) is bool
    elif option == "history_size":
        assert type(taken) is int and taken >= 1
    elif option == "retry":
        assert isinstance(taken, RetryPolicy)


def finite(x: Any, low: float = 0.0) -> bool:
    return type(x) is float and math.isfinite(x) and x >= low


#: (field, builder, what a taken value must look like on the built object).
BUILDERS: list[tuple[str, Callable[[Any], Any], Callable[[Any], bool]]] = [
    ("total", lambda x: RetryPolicy(total=x), lambda r: type(r.total) is int and r.total >= 0),
    ("backoff_factor", lambda x: RetryPolicy(backoff_factor=x), lambda r: finite(r.backoff_factor)),
    ("backoff_max", lambda x: RetryPolicy(backoff_max=x), lambda r: finite(r.backoff_max)),
    ("retry_after_cap", lambda x: RetryPolicy(retry_after_cap=x),
     lambda r: finite(r.retry_after_cap)),
    ("timeout", lambda x: WireConfig(timeout=x),
     lambda w: type(w.timeout) is tuple and len(w.timeout) == 2
     and all(finite(t) and t > 0 for t in w.timeout)),
    ("pool_maxsize", lambda x: WireConfig(pool_maxsize=x),
     lambda w: type(w.pool_maxsize) is int and w.pool_maxsize >= 1),
    ("allowed_domains", lambda x: WireConfig(allowed_domains=x),
     lambda w: type(w.allowed_domains) is tuple
     and all(isinstance(d, str) and d and d.isascii() for d in w.allowed_domains)),
]  # fmt: skip


@given(builder=st.sampled_from(BUILDERS), value=JUNK)
def test_junk_retry_and_wire_settings_are_refused_or_taken_sane(
    builder: tuple[str, Callable[[Any], Any], Callable[[Any], bool]], value: Any
) -> None:
    field, build, sane = builder
    if not refused_cleanly(lambda: build(value), field, value):
        assert sane(build(value)), f"{field} took a value it cannot use"


@given(field=st.sampled_from(FIELDS), value=JUNK)
def test_junk_credential_fields_are_refused_or_safe_to_send(field: str, value: Any) -> None:
    if refused_cleanly(lambda: make_credentials(**{field: value}), field, value):
        return
    creds = make_credentials(**{field: value})
    if field in ("userid", "consumer_key", "ip", "app_id"):
        sent = getattr(creds, field)
        sent.encode("ascii")  # what is taken goes into a header as written
        assert sent.strip() and "\r" not in sent and "\n" not in sent
    if field == "access_token":
        assert creds.bearer.reveal().isascii() and creds.bearer.reveal().isprintable()


# --- providers that yield nothing -----------------------------------------------------------


@pytest.mark.parametrize("answer", [None, "", "   ", 1234, b"pw-bytes"])
def test_a_password_callable_yielding_nothing_fails_before_the_login_is_sent(
    sb: Sandbox, new_session: Callable[..., KSSession], answer: Any
) -> None:
    session = new_session(make_credentials(password=lambda: answer))
    with pytest.raises(ConfigurationError) as info:
        session.connect()
    assert "password" in str(info.value)
    calls = sb.control.stats()["calls"]
    assert calls.get(LOGIN, 0) == 0 and sb.control.stats()["logins"] == 0
    assert session.history[-1].outcome == "failed"


@pytest.mark.parametrize("answer", [None, "", 1234])
def test_an_access_code_callable_yielding_nothing_fails_before_2fa_is_sent(
    sb: Sandbox, new_session: Callable[..., KSSession], answer: Any
) -> None:
    session = new_session(make_credentials(access_code=lambda: answer))
    with pytest.raises(ConfigurationError) as info:
        session.connect()
    assert "access_code" in str(info.value)
    calls = sb.control.stats()["calls"]
    assert calls.get(LOGIN, 0) == 1 and calls.get(TWO_FA, 0) == 0


class NoneProvider:
    """A hand-written provider breaking its contract: get() gives None."""

    repeatable = True

    def available(self) -> bool:
        return True

    def get(self) -> Any:
        return None


def test_a_custom_provider_yielding_none_fails_before_the_login_is_sent(
    sb: Sandbox, new_session: Callable[..., KSSession]
) -> None:
    session = new_session(make_credentials(password=NoneProvider()))
    with pytest.raises(ConfigurationError, match="password"):
        session.connect()
    assert sb.control.stats()["calls"].get(LOGIN, 0) == 0


def test_a_refreshed_bearer_with_a_pasted_invisible_character_is_never_sent(
    sb: Sandbox, new_session: Callable[..., KSSession]
) -> None:
    fresh = "fresh-" + BEARER[:8] + "\u200b" + BEARER[8:]
    session = new_session(make_credentials(access_token_provider=lambda: fresh))
    sb.control.fault("/session/1.0/session/init", status=401, code=900901)
    with pytest.raises(ConfigurationError) as info:
        session.connect()
    assert "access_token_provider" in str(info.value)
    assert BEARER[8:] not in repr(info.value)
    assert sb.control.stats()["calls"].get(INIT, 0) == 1  # not sent again with the bad token


def _frames_text(err: BaseException) -> str:
    """The locals of the library's frames in the error's traceback (the caller's own frames
    hold what the caller passed), as repr shows them, plus those objects' fields."""
    parts = []
    tb = err.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "session_fsm" + os.sep in name and (os.sep + "tests" + os.sep) not in name:
            for value in tb.tb_frame.f_locals.values():
                parts.append(repr(value))
                fields = getattr(value, "__dict__", {})
                parts.extend(repr(x) for x in fields.values())
                parts.extend(str(x) for x in fields.values() if isinstance(x, str))
        tb = tb.tb_next
    assert parts, "no library frame in the traceback"
    return "\n".join(parts)


def test_a_refused_credential_leaves_no_plain_secret_in_the_traceback_frames() -> None:
    password, seed = "pw-Frame-Hunt-7731", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    with pytest.raises(ConfigurationError) as info:
        Credentials(userid="bad\u200buser", consumer_key="ck", access_token=BEARER,
                    password=password, totp_secret=seed)  # fmt: skip
    shown = _frames_text(info.value)
    for secret in (password, seed, BEARER):
        assert secret not in shown


def test_a_bad_totp_seed_leaves_no_seed_in_the_traceback_frames() -> None:
    seed = "NOT-BASE32-seed-0189!"
    with pytest.raises(ConfigurationError, match="totp_secret") as info:
        make_credentials(access_code=None, totp_secret=seed)
    assert seed not in _frames_text(info.value)
