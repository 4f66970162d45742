"""The allow-list holds for the async wire's parser too: every URL the check approves is one
that aiohttp (which reads URLs with yarl) connects to an allowed host. The same generated
hosts as ``test_host_check``'s property, read by yarl instead of requests/urllib3."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

yarl = pytest.importorskip("yarl")

from session_fsm.wire import WireConfig, host_allowed  # noqa: E402
from tests.test_host_check import DOMAINS, HOSTS, KS, allowed_target  # noqa: E402


def yarl_host(url: str) -> str | None:
    """The host aiohttp would connect to for ``url`` (None: it would not send at all)."""
    try:
        parsed = yarl.URL(url)
    except Exception:
        return None
    host = parsed.raw_host
    return None if host is None else host.strip("[]").lower()


@given(
    scheme=st.sampled_from(["https", "http", "HTTPS", "Http", "ftp"]),
    host=HOSTS,
    tail=st.sampled_from(["/apim", "", "/apim/session/1.0/session/init", "?q=1", "#f"]),
    loopback=st.booleans(),
)
@example(scheme="https", host="evil.com\\." + KS, tail="/apim", loopback=True)
@example(scheme="https", host="evil.com\\@tradeapi." + KS, tail="/apim", loopback=True)
@example(scheme="https", host="127.0.0.1:9\\@tradeapi." + KS, tail="/apim", loopback=False)
@example(scheme="http", host="127.0.0.2:80\\@127.0.0.1", tail="/apim", loopback=True)
@example(scheme="https", host="TradeApi." + KS + ".", tail="/apim", loopback=False)  # approved
@example(scheme="http", host="[::1]:9", tail="/apim", loopback=True)  # approved
def test_every_approved_url_is_one_aiohttp_sends_to_an_allowed_host(
    scheme: str, host: str, tail: str, loopback: bool
) -> None:
    url = f"{scheme}://{host}{tail}"
    config = WireConfig(allowed_domains=DOMAINS, allow_loopback=loopback)
    if not host_allowed(url, config):
        return
    target = yarl_host(url)
    assert target is not None, url  # approved URLs are sendable
    assert allowed_target(target, scheme.lower(), loopback), (url, target)
