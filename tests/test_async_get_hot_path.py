"""The async session's hot path (issue 16's GET target) keeps what it cuts: a request through
the template's sibling session sends the very headers the wire's general path sends, and the
cookies the pool keeps; the siblings close with their pool; the allow-list verdict is kept only
for the WireConfig it was given under and never for a refusal; the template is remade for a
snapshot with other tokens; a forked child knows its own process id. Over loopback HTTP: a
recording aiohttp server in the test's event loop, and the sandbox."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from aiohttp import web

from session_fsm import RetryPolicy, Secret, UnsafeRedirect, WireConfig, contract
from session_fsm.aio import pool as pool_module
from session_fsm.aio.template import TradingTemplate
from session_fsm.aio.wire import AsyncWire
from session_fsm.sandbox import Sandbox
from tests.loopback_listeners import listening
from tests.test_wire import who

pytestmark = pytest.mark.anyio

ORDERS = contract.ORDERS_REPORT[1]
NO_RETRY = RetryPolicy(total=0)


class Recorder:
    """What a loopback HTTP server received: each request's headers, in order."""

    def __init__(self) -> None:
        self.seen: list[list[tuple[str, str]]] = []
        self.url = ""


@pytest.fixture
async def server() -> AsyncIterator[Recorder]:
    """An aiohttp server on 127.0.0.1 that records every request's headers and sets a cookie
    with its first answer."""
    rec = Recorder()

    async def handle(request: web.Request) -> web.Response:
        rec.seen.append(list(request.headers.items()))
        response = web.json_response({"Success": {"status": "Success"}})
        if len(rec.seen) == 1:
            response.set_cookie("lb", "node-7")
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://localhost:{port}/apim"  # (aiohttp keeps no cookie of an IP address)
    yield rec
    await runner.cleanup()


def _lower(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers)


async def test_the_hot_path_sends_the_general_paths_headers_and_the_pools_cookies(
    server: Recorder,
) -> None:
    token = Secret("session-token-1")
    template = TradingTemplate(server.url, who(), token)
    async with AsyncWire(WireConfig(retry=NO_RETRY)) as wire:
        first = await wire.trading_request("GET", server.url + ORDERS, who(), token)
        assert first.status == 200  # the answer set the cookie, in the pool's jar
        hot = await wire.send_trading(template, "GET", ORDERS, {})
        general = await wire.trading_request("GET", server.url + ORDERS, who(), token)
        assert hot.status == general.status == 200 and hot.json() == general.json()
        assert template.sender is not None and template.sender is not (
            wire._current and wire._current.http
        )
    _, sent_hot, sent_general = server.seen
    assert _lower(sent_hot) == _lower(sent_general)
    names = {k.lower(): v for k, v in sent_hot}
    assert names["cookie"] == "lb=node-7"  # the sibling sends the pool's cookies
    assert names["sessiontoken"] == "session-token-1"
    assert names["authorization"] == "Bearer " + who().access_token.reveal()
    assert names["consumerkey"] == who().consumer_key and names["accept"] == "application/json"


async def test_headers_of_the_callers_own_are_merged_as_on_the_general_path(
    server: Recorder,
) -> None:
    token = Secret("session-token-2")
    template = TradingTemplate(server.url, who(), token)
    extra = {"X-Request-Tag": "t-1", "Accept": "application/json; q=1"}
    async with AsyncWire(WireConfig(retry=NO_RETRY)) as wire:
        await wire.send_trading(template, "GET", ORDERS, {"headers": extra})
        await wire.trading_request("GET", server.url + ORDERS, who(), token, extra)
    hot, general = ([h for h in seen if h[0].lower() != "cookie"] for seen in server.seen)
    assert _lower(hot) == _lower(general)  # (the first answer's cookie aside)
    assert ("x-request-tag", "t-1") in _lower(hot)


async def test_siblings_close_with_their_pool_and_a_new_pool_gets_its_own(
    server: Recorder,
) -> None:
    template = TradingTemplate(server.url, who(), Secret("session-token-3"))
    wire = AsyncWire(WireConfig(retry=NO_RETRY))
    await wire.send_trading(template, "GET", ORDERS, {})
    assert wire._current is not None
    first, pool = template.sender, wire._current.http
    assert first is not None and not first.closed
    await wire.close()
    assert first.closed and pool.closed and wire._current is None
    await wire.send_trading(template, "GET", ORDERS, {})  # a new pool, a new sibling
    assert wire._current is not None
    assert template.sender is not first and template.pool is wire._current.http
    second = template.sender
    await wire.close()
    assert second is not None and second.closed  # (an unclosed one would warn when collected)


async def test_one_sibling_per_identity() -> None:
    wire = AsyncWire()
    # no request: the siblings are asked for directly, on a pool made for this loop
    pool = await wire._pool()
    a = TradingTemplate("http://127.0.0.1:1/apim", who(), Secret("a"))
    b = TradingTemplate("http://127.0.0.1:1/apim", who(), Secret("b"))  # same identity
    other = dataclasses.replace(who(), consumer_key="another-consumer-key")
    c = TradingTemplate("http://127.0.0.1:1/apim", other, Secret("c"))
    assert pool.sibling(a) is pool.sibling(b)
    assert pool.sibling(c) is not pool.sibling(a)
    assert len(pool.siblings) == 2
    await wire.close()


async def test_a_refusal_is_not_kept_and_stands_on_every_send() -> None:
    with listening() as attacker:  # 127.0.0.2: loopback, but not an allowed host
        url = f"http://127.0.0.2:{attacker.port}/apim"
        template = TradingTemplate(url, who(), Secret("tok"))
        async with AsyncWire(WireConfig(retry=NO_RETRY)) as wire:
            for _ in range(3):
                with pytest.raises(UnsafeRedirect, match=r"127\.0\.0\.2"):
                    await wire.send_trading(template, "GET", ORDERS, {})
            assert wire._passed == {}
        assert attacker.connections == 0


async def test_the_verdict_is_asked_again_under_another_wire_config(server: Recorder) -> None:
    template = TradingTemplate(server.url, who(), Secret("tok"))
    async with AsyncWire(WireConfig(retry=NO_RETRY)) as wire:
        assert (await wire.send_trading(template, "GET", ORDERS, {})).status == 200
        assert wire._passed[server.url + ORDERS] is wire.config
        wire.config = dataclasses.replace(wire.config, allow_loopback=False)
        with pytest.raises(UnsafeRedirect, match="loopback"):
            await wire.send_trading(template, "GET", ORDERS, {})
    assert len(server.seen) == 1


async def test_the_session_remakes_its_template_for_new_tokens_only(
    sb: Sandbox, new_async: Any
) -> None:
    s = new_async()
    await s.connect()
    await s.get(ORDERS)
    template = s._template
    assert template is not None and template.snap is s._core.snap
    s._core.snap = s._core.snap.evolve(refresh_retry_at=None)  # another snapshot, same tokens
    await s.get(ORDERS)
    assert s._template is template and template.snap is s._core.snap
    sb.control.expire()  # a re-login: a new session token, so a new template
    assert (await s.get(ORDERS)).status_code == 200  # (replayed by the core's flow)
    assert (await s.get(ORDERS)).status_code == 200  # the hot path again
    assert s._template is not template and s._template is not None
    assert s._template.token is s._core.snap.session_token


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_knows_its_own_process_id() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0 if pool_module.PROCESS[0] == os.getpid() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pool_module.PROCESS[0] == os.getpid()
