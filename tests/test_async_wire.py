"""The async wire (:class:`session_fsm.aio.wire.AsyncWire`) against the sandbox over loopback
HTTP: the four calls, typed errors, retries, the deadline, the host check at send time, the
environment read once, secrets. Concurrency, the event loop and forks:
``test_async_wire_concurrency.py``.

Runs on anyio's pytest plugin (anyio comes with httpx, which the ``async`` extra installs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from session_fsm import (
    KSError,
    LoginRejected,
    MalformedAnswer,
    NetworkError,
    RateLimited,
    RequestTimeout,
    RetryPolicy,
    Secret,
    ServiceUnavailable,
    UnsafeRedirect,
    WireConfig,
    contract,
)
from session_fsm.aio.wire import AsyncResponse, AsyncWire
from session_fsm.errors import Call
from session_fsm.models import ResLogin, ResLogout, ResSession2FA, ResSessionInit
from session_fsm.sandbox import Sandbox
from session_fsm.wire import Identity
from tests.loopback_listeners import dripping, listening
from tests.secret_hunt import hunt
from tests.test_wire import FAULTS, PATHS, details, login_body, who

pytestmark = pytest.mark.anyio

NO_RETRY = RetryPolicy(total=0)
ORDERS = contract.ORDERS_REPORT[1]



@pytest.fixture
async def wire() -> AsyncIterator[AsyncWire]:
    w = AsyncWire(WireConfig(timeout=(1.0, 0.4), retry=NO_RETRY))
    yield w
    await w.close()


async def authenticate(wire: AsyncWire, sb: Sandbox) -> ResSession2FA:
    ott = (await wire.login_with_user_id(sb.url, who(), login_body())).one_time_token
    return await wire.generate_session2_fa(sb.url, who(), ott, details())


# --- the four calls --------------------------------------------------------------------------


async def test_four_calls_and_a_trading_call(wire: AsyncWire, sb: Sandbox) -> None:
    init = await wire.session_init(sb.url, who())
    assert isinstance(init, ResSessionInit)
    assert init.redirect is not None and init.redirect.host == sb.url
    login = await wire.login_with_user_id(sb.url, who(), login_body())
    assert isinstance(login, ResLogin) and login.one_time_token
    fa = await wire.generate_session2_fa(sb.url, who(), login.one_time_token, details())
    assert isinstance(fa, ResSession2FA) and fa.session_token and fa.user_id == "demo-user"
    r = await wire.trading_request("GET", sb.url + ORDERS, who(), fa.session_token)
    assert isinstance(r, AsyncResponse) and r.status == 200 and r.error(Call.TRADING) is None
    assert "Success" in r.json()
    out = await wire.session_logout(sb.url, who(), fa.session_token)
    assert isinstance(out, ResLogout)
    assert sb.control.stats()["calls"] == {
        "GET /session/1.0/session/init": 1,
        "POST /session/1.0/session/login/userid": 1,
        "POST /session/1.0/session/2FA/accesscode": 1,
        "GET /reports/1.0/orders": 1,
        "DELETE /session/1.0/session/logout": 1,
    }
    after = await wire.trading_request("GET", sb.url + ORDERS, who(), fa.session_token)
    assert after.status == 401  # the logout really ended the session


async def run_call(wire: AsyncWire, sb: Sandbox, call: str, fault: dict[str, Any]) -> Any:
    """Bring the server to where ``call`` makes sense, arm the fault, make the call."""

    def arm() -> None:
        sb.control.fault(PATHS[call], **fault)

    if call == "init":
        arm()
        return await wire.session_init(sb.url, who())
    if call == "login":
        arm()
        return await wire.login_with_user_id(sb.url, who(), login_body())
    ott = (await wire.login_with_user_id(sb.url, who(), login_body())).one_time_token
    if call == "twofa":
        arm()
        return await wire.generate_session2_fa(sb.url, who(), ott, details())
    token = (await wire.generate_session2_fa(sb.url, who(), ott, details())).session_token
    arm()
    if call == "logout":
        return await wire.session_logout(sb.url, who(), token)
    r = await wire.trading_request("GET", sb.url + PATHS["trading"], who(), token)
    err = r.error(Call.TRADING)
    if err is not None:
        raise err
    return r


@pytest.mark.parametrize(
    ("call", "fault", "error"),
    FAULTS,
    ids=[f"{c}-{'-'.join(map(str, f.values()))}" for c, f, _ in FAULTS],
)
async def test_each_error_class_as_the_sync_wire_raises_it(
    wire: AsyncWire, sb: Sandbox, call: str, fault: dict[str, Any], error: type[KSError]
) -> None:
    with pytest.raises(error) as info:
        await run_call(wire, sb, call, fault)
    exc = info.value
    assert type(exc) is error
    if "status" in fault:
        assert exc.status == fault["status"]
    if fault.get("code"):
        assert exc.fault_code == fault["code"]
    if error is RateLimited:
        assert isinstance(exc, RateLimited) and exc.retry_after == 7
    if error is MalformedAnswer and fault.get("missing_field"):
        assert isinstance(exc, MalformedAnswer) and exc.field == "sessionToken"
    assert exc.hint and exc.hint in str(exc)


async def test_transport_failures_say_the_same_as_the_sync_wire(wire: AsyncWire) -> None:
    from session_fsm import Wire

    host = "http://127.0.0.1:9/apim"  # nothing listens there
    sync = Wire(WireConfig(timeout=(1.0, 0.4), retry=NO_RETRY))
    with pytest.raises(NetworkError) as expected:
        await asyncio.to_thread(sync.session_init, host, who())
    with pytest.raises(NetworkError) as info:
        await wire.session_init(host, who())
    assert str(info.value) == str(expected.value)
    assert "127.0.0.1:9: connection refused" in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None


async def test_a_slow_answer_is_a_read_timeout(wire: AsyncWire, sb: Sandbox) -> None:
    sb.control.fault(PATHS["init"], delay=0.8)
    with pytest.raises(RequestTimeout, match=r"no answer within 0\.4s \(read timeout\)"):
        await wire.session_init(sb.url, who())


async def test_an_answer_over_max_answer_bytes_is_malformed(sb: Sandbox) -> None:
    async with AsyncWire(WireConfig(max_answer_bytes=64, retry=NO_RETRY)) as w:
        with pytest.raises(MalformedAnswer, match="larger than max_answer_bytes=64"):
            await w.session_init(sb.url, who())


async def test_a_token_http_cannot_carry_is_refused_by_name(wire: AsyncWire, sb: Sandbox) -> None:
    bad = Identity("demo-user", "demo-consumer-key", "127.0.0.1", "tests", Secret("a\r\nb"))
    with pytest.raises(KSError, match="Authorization header's token") as info:
        await wire.session_init(sb.url, bad)
    assert "a\r\nb" not in str(info.value)
    assert sb.control.stats()["calls"] == {}


# --- retries ---------------------------------------------------------------------------------


async def test_session_calls_retry_on_503_trading_post_does_not(sb: Sandbox) -> None:
    slept: list[float] = []
    policy = RetryPolicy(total=2, backoff_factor=0, sleeper=slept.append)
    async with AsyncWire(WireConfig(retry=policy)) as w:
        sb.control.fault(PATHS["login"], status=503, retry_after=3, count=1)
        ott = (await w.login_with_user_id(sb.url, who(), login_body())).one_time_token
        assert slept == [3.0]
        token = (await w.generate_session2_fa(sb.url, who(), ott, details())).session_token
        sb.control.fault(contract.ORDER_NORMAL[1], status=503, count=1)
        url = sb.url + contract.ORDER_NORMAL[1]
        r = await w.trading_request("POST", url, who(), token, json={})
        assert r.status == 503
        assert sb.control.stats()["calls"]["POST /orders/1.0/order/normal"] == 1
        sb.control.fault(ORDERS, status=502, count=1)
        r = await w.trading_request("GET", sb.url + ORDERS, who(), token)
        assert r.status == 200 and sb.control.stats()["calls"]["GET /reports/1.0/orders"] == 2


async def test_a_post_on_a_trading_path_is_never_retried_on_5xx(sb: Sandbox) -> None:
    slept: list[float] = []
    policy = RetryPolicy(total=2, backoff_factor=0, sleeper=slept.append)
    async with AsyncWire(WireConfig(retry=policy)) as w:
        token = (await authenticate(w, sb)).session_token
        sb.control.fault(contract.ORDER_NORMAL[1], status=500, count=1)
        r = await w.trading_request("POST", sb.url + contract.ORDER_NORMAL[1], who(), token)
        assert r.status == 500 and slept == []


async def test_retry_after_is_capped_and_awaited(sb: Sandbox) -> None:
    slept: list[float] = []

    async def sleeper(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(total=2, backoff_factor=0, retry_after_cap=1.5, sleeper=sleeper)  # type: ignore[arg-type]
    async with AsyncWire(WireConfig(retry=policy)) as w:
        token = (await authenticate(w, sb)).session_token
        sb.control.fault(ORDERS, status=429, retry_after=7, count=1)
        r = await w.trading_request("GET", sb.url + ORDERS, who(), token)
        assert r.status == 200 and slept == [1.5]


async def test_retries_used_up_return_the_last_answer(sb: Sandbox) -> None:
    slept: list[float] = []
    policy = RetryPolicy(total=2, backoff_factor=0, sleeper=slept.append)
    async with AsyncWire(WireConfig(retry=policy)) as w:
        token = (await authenticate(w, sb)).session_token
        sb.control.fault(ORDERS, status=503, count=5)
        r = await w.trading_request("GET", sb.url + ORDERS, who(), token)
        # Two retries; a wait of 0 s (no backoff, no jitter drawn) is not slept, as on the
        # sync side (CappedRetry.sleep): at most two waits.
        assert r.status == 503 and len(slept) <= 2 and all(w > 0 for w in slept)
        assert isinstance(r.error(Call.TRADING), ServiceUnavailable)
        assert sb.control.stats()["calls"]["GET /reports/1.0/orders"] == 3


async def test_a_dropped_connection_is_retried_for_a_get(sb: Sandbox) -> None:
    policy = RetryPolicy(total=2, backoff_factor=0, sleeper=lambda s: None)
    async with AsyncWire(WireConfig(retry=policy)) as w:
        token = (await authenticate(w, sb)).session_token
        sb.control.fault(ORDERS, drop=True, count=1)
        r = await w.trading_request("GET", sb.url + ORDERS, who(), token)
        assert r.status == 200


# --- the deadline ----------------------------------------------------------------------------


async def test_a_dripped_answer_ends_at_the_deadline() -> None:
    deadline = 0.6
    with dripping("body") as drip:
        async with AsyncWire(WireConfig(timeout=(1.0, 1.0), deadline=deadline)) as w:
            started = time.monotonic()
            with pytest.raises(RequestTimeout, match=r"deadline of 0\.6s"):
                await w.session_init(drip.url, who())
            with pytest.raises(RequestTimeout, match=r"deadline of 0\.6s"):
                await w.send("GET", drip.url + ORDERS)
            took = time.monotonic() - started
        assert 2 * deadline <= took < 2 * deadline + 1.5
        assert drip.connections == 2  # a call past its deadline is not retried
        assert 0 < drip.sent < 80


async def test_a_retry_wait_past_the_deadline_is_not_taken(sb: Sandbox) -> None:
    slept: list[float] = []
    policy = RetryPolicy(total=3, backoff_factor=0, sleeper=slept.append)
    async with AsyncWire(WireConfig(retry=policy, deadline=5.0)) as w:
        token = (await authenticate(w, sb)).session_token
        sb.control.fault(ORDERS, status=429, retry_after=7, count=4)
        r = await w.trading_request("GET", sb.url + ORDERS, who(), token)
        assert r.status == 429 and slept == []  # answered at once, no wait
        err = r.error(Call.TRADING)
        assert isinstance(err, RateLimited) and err.retry_after == 7


# --- the host check --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2:{evil}/apim",
        "https://127.0.0.2:{evil}/apim",
        "http://127.0.0.2:{evil}\\@127.0.0.1/apim",
    ],
)
async def test_a_refused_host_is_never_connected_to(url: str, wire: AsyncWire) -> None:
    with listening() as evil:
        target = url.format(evil=evil.port)
        with pytest.raises(UnsafeRedirect):
            await wire.session_init(target, who())
        with pytest.raises(UnsafeRedirect):
            await wire.login_with_user_id(target, who(), login_body())
        with pytest.raises(UnsafeRedirect):
            await wire.send("GET", target + ORDERS, headers={"sessionToken": "x"})
    assert evil.connections == 0 and evil.received == b""


# --- the environment -------------------------------------------------------------------------


def _no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


async def test_the_environment_is_read_once_per_pool(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY (a listener that drops every connection) is read when the pool is made
    and kept until close(), as the sync wire does."""
    _no_proxy_variables(monkeypatch)
    with listening() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.2:{proxy.port}")
        async with AsyncWire(WireConfig(retry=NO_RETRY, timeout=(1.0, 1.0))) as w:
            with pytest.raises(NetworkError):
                await w.session_init(sb.url, who())
            assert proxy.connections == 1 and sb.control.stats()["calls"] == {}
            monkeypatch.delenv("HTTP_PROXY")
            with pytest.raises(NetworkError):  # still the proxy: the environment was read once
                await w.session_init(sb.url, who())
            assert proxy.connections == 2
            await w.close()  # the next pool reads the environment again
            assert isinstance(await w.session_init(sb.url, who()), ResSessionInit)
        assert proxy.connections == 2


SYNC_PROXY_LEAK = pytest.mark.xfail(
    strict=True,
    reason="requests' HTTPAdapter keys its proxy managers by the proxy URL, password included",
)


@pytest.mark.parametrize("flavour", [pytest.param("sync", marks=SYNC_PROXY_LEAK), "async"])
async def test_a_proxy_password_is_not_reachable_from_an_error(
    flavour: str, sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error's frames reach the wire, and the wire its environment settings: the proxy
    URL's password is kept there as a Secret (it was a plain string before)."""
    from session_fsm import Wire

    _no_proxy_variables(monkeypatch)
    config = WireConfig(retry=NO_RETRY, timeout=(1.0, 1.0))
    sync, w = Wire(config), AsyncWire(config)
    try:
        with listening() as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"http://user:proxy-pw-77@127.0.0.2:{proxy.port}")
            with pytest.raises(NetworkError) as info:
                if flavour == "sync":
                    await asyncio.to_thread(sync.session_init, sb.url, who())
                else:
                    await w.session_init(sb.url, who())
            assert proxy.connections == 1
        assert hunt(info.value, ["proxy-pw-77"]) == []
    finally:
        await w.close()
        sync.close()


# --- secrets ---------------------------------------------------------------------------------


PASSWORD = "hunt-pass-Zq81"
BEARER = "hunt-bearer-Xv55"


async def test_errors_and_answers_hold_no_secret(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hunt of test_error_secrets, also entering aiohttp's objects should any be reached."""
    import tests.secret_hunt

    entered = tests.secret_hunt.ENTERED | {"aiohttp", "multidict", "yarl", "asyncio"}
    monkeypatch.setattr(tests.secret_hunt, "ENTERED", entered)
    bearer_who = Identity("demo-user", "demo-consumer-key", "127.0.0.1", "tests", Secret(BEARER))
    async with AsyncWire(WireConfig(retry=NO_RETRY, timeout=(1.0, 0.4))) as w:
        found: list[str] = []
        with pytest.raises(KSError) as info:  # the sandbox knows another Bearer
            await w.login_with_user_id(sb.url, bearer_who, login_body(PASSWORD))
        found += hunt(info.value, [PASSWORD, BEARER])
        with pytest.raises(LoginRejected) as info:
            await w.login_with_user_id(sb.url, who(), login_body(PASSWORD))
        found += hunt(info.value, [PASSWORD, "demo-access-token"])
        token = (await authenticate(w, sb)).session_token
        for fault in ({"drop": True}, {"delay": 0.8}, {"status": 400}, {"status": 500}):
            sb.control.fault(ORDERS, **fault)
            try:
                r = await w.trading_request("GET", sb.url + ORDERS, who(), token)
                err = r.error(Call.TRADING)
                assert err is not None
                raise err
            except KSError as exc:
                found += hunt(exc, [token.reveal(), "demo-access-token"])
        sb.control.fault(PATHS["twofa"], missing_field=True)
        ott = (await w.login_with_user_id(sb.url, who(), login_body())).one_time_token
        with pytest.raises(MalformedAnswer) as info:
            await w.generate_session2_fa(sb.url, who(), ott, details())
        found += hunt(info.value, [ott.reveal(), "1234", "demo-access-token"])
        r = await w.trading_request("GET", sb.url + ORDERS, who(), token)
        assert token.reveal() not in repr(r) and "demo-access-token" not in repr(w)
        assert not hasattr(r, "request") and not hasattr(r, "request_info")
    assert found == []
