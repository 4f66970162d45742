"""One try of one request on the async wire: send it through the pool, read the answer (capped
for a session call), and turn aiohttp's failures into :class:`~session_fsm.aio.response.Failure`
values (the retry loop, :meth:`~session_fsm.aio.wire.AsyncWire._send`, decides what follows).

The call's secrets are revealed here and only here, into the request sent, and every local that
held them is cleared before the try ends, whatever ends it: no error raised from a frame of
this module carries a token in its locals."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, MutableMapping
from typing import Any

import aiohttp
from multidict import CIMultiDict

from ..answers import CallAuth, _too_large, unsendable
from ..errors import Call
from ..wire import WireConfig
from .pool import Pool
from .response import AsyncResponse, Failure, failure, read_body


async def attempt(
    http: aiohttp.ClientSession,
    pool: Pool,
    config: WireConfig,
    method: str,
    url: str,
    headers: Mapping[str, str] | None,
    auth: CallAuth | None,
    call: Call,
    cap: int | None,
    timeout: aiohttp.ClientTimeout,
    deadline: float,
    options: dict[str, Any],
) -> AsyncResponse | Failure:
    """One try. Raises nothing it can avoid (only ConfigurationError for a token HTTP
    cannot carry, and cancellation): every failure is returned, so no frame that held
    the revealed headers, or aiohttp's request (which keeps a copy), is on a traceback."""
    sent: MutableMapping[str, str] = CIMultiDict(headers) if headers else {}
    kwargs = options.copy() if options else {}
    r: Any = None
    secret: dict[str, str] | None = None
    body: bytes | None = None
    proxy: str | None = None
    try:
        if auth is not None:
            secret, body = auth.reveal()
            sent.update(secret)
            if body is not None:
                kwargs["data"] = body
        found = pool.proxy(url)
        if found is not None:
            proxy = found.reveal()
        try:
            # Awaited, not ``async with``: the answer is released in ``finally`` below (as
            # the context manager's exit releases it), without its two frames per call.
            r = await http.request(
                method,
                url,
                headers=sent,
                allow_redirects=False,
                proxy=proxy,
                timeout=timeout,
                **kwargs,
            )
            content = await r.read() if cap is None else await read_body(r, cap)
            if content is None:
                return Failure(_too_large(call, r.status, cap or 0), None)
            return AsyncResponse(method, url, r.status, r.reason or "", r.headers, content)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return failure(method, url, exc, config, deadline)
        except ValueError:  # a header value HTTP cannot carry; its text may hold the value
            return Failure(unsendable(method, url), None)
    finally:  # whatever ends the try (cancellation too): no local keeps a secret
        if r is not None:
            r.release()
        sent.clear()
        kwargs.clear()
        r = secret = body = proxy = None
