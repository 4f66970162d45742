"""``httpx.Auth`` for bots on httpx: ``httpx.AsyncClient(auth=session.auth)``.

The auth adds the session's headers (one snapshot: host check, Bearer and session token of
one generation) and, on an expired session (401, or 403 "Invalid session") or a rejected
Bearer token, runs the core's flow: renewal with single flight, then one replay by the replay
rule of :meth:`AsyncKSSession.request <session_fsm.aio.session.AsyncKSSession.request>`. The
replay is a request the flow yields back to httpx, so httpx sends it on its own client.
Answers are returned, never raised (as with every httpx auth): the replay's, or the original
one when the session could not be renewed (what happened is in the session's history).

httpx may resume an auth flow in another task than the one that began it; the session's lock
is an ``asyncio.Lock``, which any task may release, so single flight holds across tasks.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx

from ..answers import answer_of
from ..core import effects as fx
from ..core import relogin
from ..core.engine import SessionCore
from ..core.relogin import Outgoing, where
from ..core.snapshot import Snapshot
from ..errors import Call, KSError
from ..hosts import check_url
from .driver import AsyncDriver


class HttpxAuth(httpx.Auth):
    """The ``httpx.Auth`` of an :class:`~session_fsm.aio.session.AsyncKSSession` (see the
    module docstring). Use it with ``httpx.AsyncClient``."""

    def __init__(self, core: SessionCore, driver: AsyncDriver) -> None:
        self._core = core
        self._driver = driver

    def __repr__(self) -> str:
        return f"HttpxAuth(session={self._core.session_id})"

    def sync_auth_flow(self, request: httpx.Request) -> Any:
        raise RuntimeError(
            "the auth of an AsyncKSSession needs httpx.AsyncClient; with httpx.Client use a "
            "KSSession"
        )

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        core, driver = self._core, self._driver
        snap = core.usable()
        if snap is None:
            snap = await driver.run(relogin.ready(core))
        _apply(request, snap, core)
        response = yield request
        if response.status_code not in (401, 403):
            return
        await response.aread()  # the fault code says what to do
        method = request.method.upper()
        url = str(request.url)
        streamed = not isinstance(request.stream, httpx.ByteStream)
        out = Outgoing(None, method, where(method, _below(url, snap)), streamed, url)
        flow = relogin.answered(core, out, fx.Reply(response.status_code, response), snap,
                                map_errors=False)  # fmt: skip
        held: list[fx.Held] = []
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    done, effect = fx.advance(flow, value, error)
                except KSError:  # the flow returns its errors: an auth returns the answer
                    return
                if done:
                    return
                error = None
                try:
                    if type(effect) is fx.Send:  # the replay: httpx sends it
                        again = _replay(request, snap, effect, core)
                        answer = yield again
                        await answer.aread()
                        value = fx.Reply(answer.status_code, answer)
                    elif type(effect) is fx.ReadAnswer:
                        value = _answer(effect.reply.handle, driver.wire.config.max_answer_bytes)
                    elif type(effect) is fx.Discard:
                        value = None  # the body was read: nothing to give back
                    else:
                        value = await driver.perform(effect, held, None)
                except GeneratorExit:  # httpx closed this auth flow at the replay (a Send):
                    raise  # the core's flow holds nothing there
                except BaseException as exc:  # cancellation too: the flow's finally clauses run
                    value, error = None, exc
        finally:
            for _, release in reversed(held):
                await release()


def _below(url: str, snap: Snapshot) -> str:
    return url[len(snap.host) :] if url.startswith(snap.host) else url


def _apply(request: httpx.Request, snap: Snapshot, core: SessionCore) -> None:
    check_url(str(request.url), *core.allowed)  # what is sent
    token, who = snap.session_token, snap.who
    assert token is not None and who is not None  # ready() gives Authenticated snapshots
    request.headers.update(who.trading_headers(token))


def _replay(
    first: httpx.Request, sent_with: Snapshot, effect: fx.Send, core: SessionCore
) -> httpx.Request:
    url = str(first.url)
    if sent_with.host != effect.snap.host and url.startswith(sent_with.host):
        url = effect.snap.host + url[len(sent_with.host) :]
    again = httpx.Request(first.method, url, headers=first.headers, content=first.content)
    who, token = effect.who, effect.snap.session_token
    assert token is not None
    check_url(url, *core.allowed)
    again.headers.update(who.trading_headers(token))
    return again


def _answer(response: httpx.Response, cap: int) -> Any:
    retry_after = response.headers.get("Retry-After")
    return answer_of(Call.TRADING, response.status_code, retry_after, response.content, cap)
