"""Credentials are masked out of every URL the CLI or an error prints, however malformed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_fsm.account import shown_store
from session_fsm.errors import ConfigurationError, UnsafeRedirect
from session_fsm.masking import mask_url
from session_fsm.stores import open_store
from session_fsm.wire import WireConfig, check_host
from tests.test_cli import account_env, cli

SECRET = "pw-Mk9-URL-SECRET"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://u:pw-Mk9-URL-SECRET@h/p?x=1", "https://***@h/p?x=1"),
        ("rediss:/h:6379/0?password=pw-Mk9-URL-SECRET", "rediss:/h:6379/0?password=***"),
        ("redis//:pw-Mk9-URL-SECRET@h/0", "***@h/0"),
        ("redis:/:pw-Mk9-URL-SECRET@h:abc/0", "redis:/***@h:abc/0"),
        ("https://h/apim?access_token=pw-Mk9-URL-SECRET&v=2", "https://h/apim?access_token=***&v=2"),
        ("https://h/#id_token=pw-Mk9-URL-SECRET", "https://h/#id_token=***"),
        ("h?Pass%77ord=pw-Mk9-URL-SECRET", "h?Pass%77ord=***"),
        ("u:pw-Mk9-URL-SECRET@evil.example.com", "***@evil.example.com"),
        ("https://evil.com\\@tradeapi.kotaksecurities.com/apim", "https://***@tradeapi.kotaksecurities.com/apim"),
        ("redis://:pw?Mk9/URL#SECRET@h/0", "redis://***@h/0"),
        ("redis://h:6379/0?lock_ttl=5&db=1", "redis://h:6379/0?lock_ttl=5&db=1"),
        ("file:/srv/tokens.json", "file:/srv/tokens.json"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


#: Where a secret sits in userinfo: any visible character may be in it ("@", "?", "#", "/").
USERINFO_SHAPES = [
    "https://user:{s}@tradeapi.kotaksecurities.com/apim",
    "https://{s}@h",
    "redis://:{s}@127.0.0.1:6379/0",
    "rediss:/:{s}@h/0",
    "redis:{s}@h",
    "{s}@h",
    "h\\{s}@x/y",
    "https://u:{s}@h/p?x=1&y=2",
]
#: Where a secret is a query or fragment value: up to the next separator, as a parser reads it.
QUERY_SHAPES = [
    "rediss:/h/0?password={s}",
    "redis://h/0?db=1&password={s}",
    "unix:///run/r.sock?password={s}",
    "https://h/apim?token={s}#x",
    "https://h/cb#access_token={s}&state=1",
    "redis//h?x=1;Passwd={s}",
]
VISIBLE = st.characters(min_codepoint=33, max_codepoint=126)


def check_masked(url: str, secret: str) -> None:
    assert secret not in mask_url(url)
    assert secret not in str(UnsafeRedirect(url)) and secret not in repr(UnsafeRedirect(url))


@given(shape=st.sampled_from(USERINFO_SHAPES), secret=st.text(VISIBLE, min_size=6, max_size=24))
def test_no_userinfo_secret_survives_masking(shape: str, secret: str) -> None:
    check_masked(shape.format(s=secret), secret)


@given(
    shape=st.sampled_from(QUERY_SHAPES),
    secret=st.text(
        st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="&;#"),
        min_size=6,
        max_size=24,
    ),
)
def test_no_query_secret_survives_masking(shape: str, secret: str) -> None:
    check_masked(shape.format(s=secret), secret)


@given(st.text(max_size=60))
def test_masking_never_raises(text: str) -> None:
    assert isinstance(mask_url(text), str)
    shown_store(text) if not text.startswith("file:") else None


@pytest.mark.parametrize(
    "spec",
    [
        f"rediss:/127.0.0.1:6379/0?password={SECRET}",
        f"redis+tls://:{SECRET}@h/0",
        f"redis//h/0?password={SECRET}&x=1",
        f"file://user:{SECRET}@otherhost/t.json",
    ],
)
def test_a_misspelled_store_url_error_never_holds_its_password(spec: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store(spec)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


def test_shown_store_survives_a_malformed_port() -> None:
    assert shown_store(f"redis://:{SECRET}@h:abc/0?password={SECRET}") == "redis://***@h:abc/0"


def test_an_unsafe_redirect_never_shows_userinfo_and_names_allowed_domains() -> None:
    with pytest.raises(UnsafeRedirect) as info:
        check_host(f"https://trader:{SECRET}@evil.example.com/apim", WireConfig())
    shown = f"{info.value} {info.value!r} {info.value.host}"
    assert SECRET not in shown and "evil.example.com" in shown
    assert "allowed_hosts" not in str(info.value)
    with pytest.raises(UnsafeRedirect) as other:  # a host off the list: the hint names the option
        check_host("https://evil.example.com/apim", WireConfig())
    assert "allowed_domains" in str(other.value) and "allowed_hosts" not in str(other.value)


def test_cli_never_prints_a_store_or_host_password(tmp_path: Path) -> None:
    env = account_env("http://127.0.0.1:1/apim")
    bad_store = cli("status", "--store", f"rediss:/127.0.0.1:6379/0?password={SECRET}",
                    env=env, home=tmp_path)  # fmt: skip
    assert bad_store.rc == 2 and "unknown store" in bad_store.err
    host = f"https://trader:{SECRET}@evil.example.com/apim"
    bad_host = cli("status", env={**account_env(host)}, home=tmp_path)
    assert bad_host.rc != 0 and "evil.example.com" in bad_host.err
    for run in (bad_store, bad_host):
        assert SECRET not in run.all


def test_a_session_repr_never_shows_a_host_userinfo() -> None:
    from session_fsm import KSSession
    from tests.conftest import make_credentials

    # allowed_domains under test is the hostname; whether userinfo is refused outright is the
    # allow-list's business (issue 14 item 1): whatever it lets through, a repr never shows it.
    host = f"http://u:{SECRET}@127.0.0.1:1/apim"
    try:
        session = KSSession(make_credentials(), host=host)
    except (UnsafeRedirect, ConfigurationError) as exc:
        assert SECRET not in f"{exc} {exc!r}"
        return
    assert SECRET not in repr(session) and SECRET not in str(session)
