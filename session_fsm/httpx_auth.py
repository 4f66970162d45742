"""One httpx auth flow for both sessions: ``httpx.Client(auth=session.auth)`` and
``httpx.AsyncClient(auth=session.auth)``, with a :class:`~session_fsm.KSSession` or an
:class:`~session_fsm.AsyncKSSession`.

The flow adds the session's headers (one snapshot: host check, Bearer and session token of one
generation) and, on an expired session (401, or 403 "Invalid session") or a rejected Bearer
token, runs the core's flow (:func:`session_fsm.core.relogin.answered`): renewal with single
flight, then one replay by the replay rule of ``session.request``. The replay is a request the
flow yields back to httpx, so httpx sends it on its own client. Answers are returned, never
raised (as with every httpx auth): the replay's, or the original one when the session could not
be renewed; when no usable session can be had before sending, the request goes without the
session's headers and the server's answer is returned (see
:func:`session_fsm.core.relogin.ready_or_none`). What happened is in the session's history.

:meth:`FlowAuth.steps` is that one flow. It yields three kinds of step, which httpx's two entry
points (``sync_auth_flow``, ``async_auth_flow``) perform, as httpx's own ``Auth`` does with its
body reads: an ``httpx.Request`` (send it; its answer comes back), an ``httpx.Response`` (read
its body) and a flow of the core (run it to its end on the session's driver: :meth:`FlowAuth.run`
and :meth:`FlowAuth.arun`, which each session's auth defines).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator, Generator
from typing import Any, TypeVar

import httpx

from .answers import CHUNK, SECRET_HEADERS, CappedBody, answer_of
from .core import effects as fx
from .core import relogin
from .core.calls import Identity
from .core.engine import SessionCore
from .core.relogin import Outgoing, where
from .core.snapshot import Snapshot
from .errors import Call, KSError
from .hosts import check_url, refusal
from .secret import Secret

T = TypeVar("T")
#: What :meth:`FlowAuth.steps` yields: a request to send, an answer to read, a core flow to run.
Step = httpx.Request | httpx.Response | fx.Flow[Any]
SyncFlow = Generator[httpx.Request, httpx.Response, None]
AsyncFlow = AsyncGenerator[httpx.Request, httpx.Response]


class FlowAuth(httpx.Auth):
    """The ``httpx.Auth`` of a session (see the module docstring): a subclass gives the core
    and says how the core's flows run, blocking (:meth:`run`) and awaited (:meth:`arun`)."""

    _core: SessionCore

    def run(self, flow: fx.Flow[T]) -> T:
        """Run ``flow`` to its end for ``httpx.Client``."""
        raise NotImplementedError

    async def arun(self, flow: fx.Flow[T]) -> T:
        """Run ``flow`` to its end for ``httpx.AsyncClient``."""
        raise NotImplementedError

    def sync_auth_flow(self, request: httpx.Request) -> SyncFlow:
        steps = self.steps(request)
        step: Step | None = next(steps)
        while step is not None:
            if isinstance(step, httpx.Request):
                result = yield _guarded(step, self._core.allowed, sync=True)
            else:
                result = self._perform(step)
            step = _resume(steps, result)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncFlow:
        steps = self.steps(request)
        step: Step | None = next(steps)
        while step is not None:
            if isinstance(step, httpx.Request):
                result = yield _guarded(step, self._core.allowed, sync=False)
            else:
                result = await self._aperform(step)
            step = _resume(steps, result)

    def _perform(self, step: httpx.Response | fx.Flow[Any]) -> Any:
        if not isinstance(step, httpx.Response):
            return self.run(step)
        if not hasattr(step, "_content"):  # (not read already)
            body = _Inflating(step, self._core.config.max_answer_bytes)
            chunks = step.iter_bytes(CHUNK) if body.httpx_decodes else step.iter_raw(CHUNK)
            if not body.read(chunks):
                step.close()
            _keep(step, body)
        return None

    async def _aperform(self, step: httpx.Response | fx.Flow[Any]) -> Any:
        if not isinstance(step, httpx.Response):
            return await self.arun(step)
        if not hasattr(step, "_content"):
            body = _Inflating(step, self._core.config.max_answer_bytes)
            chunks = step.aiter_bytes(CHUNK) if body.httpx_decodes else step.aiter_raw(CHUNK)
            async for chunk in chunks:
                if not body.add(chunk):
                    await step.aclose()
                    break
            _keep(step, body)
        return None

    def steps(self, request: httpx.Request) -> Generator[Step, Any, None]:
        """The one flow of this auth for ``request`` (see the module docstring)."""
        core = self._core
        method, url = request.method.upper(), str(request.url)
        check_url(url, *core.allowed)  # what is sent
        streamed = not isinstance(request.stream, httpx.ByteStream)
        snap: Snapshot | None = core.usable()  # readers never block
        if snap is None:
            out = Outgoing(method, where(method, url), streamed, url)
            snap = yield relogin.ready_or_none(core, out)
            if snap is None:  # no usable session now (recorded, logged): the server answers
                yield request  # the request without session headers
                return
        _apply(request, snap.session_token, snap.who)
        response = yield request
        if response.status_code not in (401, 403) or _off_list(response, core):
            return  # (a 401 from a host off the list, which got no token, says nothing of it)
        yield response  # read its body: the fault code says what to do
        out = Outgoing(method, where(method, _below(url, snap)), streamed, url)
        flow = relogin.answered(core, out, fx.Reply(response.status_code, response), snap,
                                map_errors=False)  # fmt: skip
        value: Any = None
        while True:
            send = yield _to_replay(flow, value, core.config.max_answer_bytes)
            if send is None:
                return
            try:
                answer = yield _replay(request, snap, send, core)
            except GeneratorExit:  # the client did not send the replay (an error, a close):
                flow.close()  # the core's flow, at its Send, holds nothing
                raise
            if _off_list(answer, core):  # redirected off the list: not the API's answer
                flow.close()
                return
            yield answer
            value = fx.Reply(answer.status_code, answer)


def _guarded(
    request: httpx.Request, allowed: tuple[tuple[str, ...], bool], *, sync: bool
) -> httpx.Request:
    """``request`` with a send-time check of every hop it leads to.

    With ``follow_redirects=True`` httpx builds each hop from the last request's headers and
    drops only ``Authorization`` when the origin changes: the session token would go to any
    host a ``Location`` names. httpx gives an auth no say in its redirects, so the check rides
    on httpcore's ``trace`` extension, which the hops inherit: just before a request's headers
    are written, a hop to a URL off the allow-list loses the session's secret headers (it is
    sent without them, as ``requests`` with ``session.auth`` sends such a hop). A ``trace``
    callback the application set is called after ours; a request sent again keeps one guard
    (not one per send, which would nest until Python's recursion limit). A transport that does
    not run httpcore's trace (a custom or mock transport) gets no check: keep
    ``follow_redirects`` off there."""
    theirs = request.extensions.get("trace")
    if isinstance(theirs, _Guard):  # guarded already (sent again): guard what it guarded
        theirs = theirs.theirs
    guard = _Guard if sync else _AsyncGuard
    checked = (request.url.raw_scheme, request.url.raw_host, request.url.port)
    request.extensions["trace"] = guard(allowed, theirs, checked)
    return request


#: A URL's scheme, host and port as httpcore has them (bytes, bytes, int or None).
_Origin = tuple[bytes, bytes, int | None]


class _Guard:
    """httpcore's ``trace`` callback of a guarded request on a sync client (see
    :func:`_guarded`): the check, then the application's own callback, if any, whose result
    goes back to httpcore (which refuses a coroutine there, as without the guard)."""

    __slots__ = ("allowed", "checked", "theirs")

    def __init__(
        self, allowed: tuple[tuple[str, ...], bool], theirs: Any, checked: _Origin
    ) -> None:
        self.allowed = allowed
        self.theirs = theirs
        self.checked = checked  # the origin of the request itself, checked before it was sent

    def __call__(self, name: str, info: dict[str, Any]) -> Any:
        if name.endswith(".send_request_headers.started"):
            _strip_off_list(info.get("request"), self.allowed, self.checked)
        return None if self.theirs is None else self.theirs(name, info)


class _AsyncGuard(_Guard):
    """:class:`_Guard` on an async client: what it returns httpcore awaits (the application's
    coroutine, which httpcore checks is one, or a coroutine that does nothing)."""

    __slots__ = ()

    def __call__(self, name: str, info: dict[str, Any]) -> Any:
        if name.endswith(".send_request_headers.started"):
            _strip_off_list(info.get("request"), self.allowed, self.checked)
        return _nothing() if self.theirs is None else self.theirs(name, info)


async def _nothing() -> None:
    pass


_SECRET_NAMES: frozenset[bytes] = frozenset(n.lower().encode() for n in SECRET_HEADERS)


def _strip_off_list(
    request: Any, allowed: tuple[tuple[str, ...], bool], checked: _Origin | None = None
) -> None:
    """Drop the secret headers of httpcore's ``request`` (in place, before they are written)
    when its URL may not receive credentials. A forward proxy's request names the URL in full
    as its target. A request to the ``checked`` origin (what the auth checked before sending:
    every request that is not a redirect's hop) passes at once."""
    url = getattr(request, "url", None)
    headers = getattr(request, "headers", None)
    if url is None or not isinstance(headers, list):
        return
    try:
        target = bytes(url.target)
        if target[:1] == b"/" and (url.scheme, url.host, url.port) == checked:
            return
        if target.startswith((b"http://", b"https://")):
            where_to = target.decode("ascii")
        else:
            host = url.host.decode("ascii")
            host = f"[{host}]" if ":" in host else host  # an IPv6 address
            port = "" if url.port is None else f":{url.port}"
            where_to = f"{url.scheme.decode('ascii')}://{host}{port}/"
        refused = refusal(where_to, *allowed) is not None
    except Exception:  # a URL we cannot read: what it is sent to is unknown
        refused = True
    if refused:
        headers[:] = [(k, v) for k, v in headers if bytes(k).lower() not in _SECRET_NAMES]


def _off_list(response: httpx.Response, core: SessionCore) -> bool:
    """Whether ``response`` came from a hop off the allow-list (a redirect led there): that
    host got none of the session's headers, so its 401 or fault says nothing of them."""
    return refusal(str(response.request.url), *core.allowed) is not None


def _resume(steps: Generator[Step, Any, None], result: Any) -> Step | None:
    """The next step of ``steps`` given the last one's ``result`` (None: the flow ended)."""
    try:
        return steps.send(result)
    except StopIteration:
        return None


def _to_replay(flow: fx.Flow[Any], value: Any, cap: int) -> fx.Flow[fx.Send | None]:
    """Resume the core's ``flow`` with ``value`` (the reply to its last Send) until it asks
    for a replay (its Send) or ends (None). Its other effects go to the driver, except the
    reading of an httpx answer, read already, which is done here."""
    steps = fx.Steps(flow, value)
    while True:
        try:
            effect = next(steps)
        except (StopIteration, KSError):  # ended; the flow returns its errors: an auth
            return None  # returns the answer
        if type(effect) is fx.Send:
            send: fx.Send = effect
            return send
        try:
            if type(effect) is fx.ReadAnswer:
                steps.value = _answer(effect.reply.handle, cap)
            elif type(effect) is fx.Discard:
                steps.value = None  # the body was read: nothing to give back
            else:
                steps.value = yield effect
        except GeneratorExit:
            raise
        except BaseException as exc:  # cancellation too: the flow's finally clauses run
            steps.value, steps.error = None, exc


def _below(url: str, snap: Snapshot) -> str:
    return url[len(snap.host) :] if url.startswith(snap.host) else url


def _apply(request: httpx.Request, token: Secret | None, who: Identity | None) -> None:
    assert token is not None and who is not None  # requests go with Authenticated snapshots
    request.headers.update(who.trading_headers(token))


def _replay(
    first: httpx.Request, sent_with: Snapshot, effect: fx.Send, core: SessionCore
) -> httpx.Request:
    url = str(first.url)
    if sent_with.host != effect.snap.host and url.startswith(sent_with.host):
        url = effect.snap.host + url[len(sent_with.host) :]
    check_url(url, *core.allowed)
    again = httpx.Request(first.method, url, headers=first.headers, content=first.content,
                          extensions=first.extensions)  # its timeout, the app's trace
    _apply(again, effect.snap.session_token, effect.who)
    return again


def _httpx_decodes() -> frozenset[str]:
    """The Content-Encodings httpx decodes (others it leaves as they are): httpx's own list,
    or, should a newer httpx move it, its long-standing ones."""
    try:
        from httpx._decoders import SUPPORTED_DECODERS
    except ImportError:  # pragma: no cover
        return frozenset({"identity", "gzip", "deflate"})
    return frozenset(SUPPORTED_DECODERS)


_HTTPX_DECODES = _httpx_decodes()


class _Inflating(CappedBody):
    """The body of an answer the flow reads, decoded here from its raw bytes when its encodings
    are ``gzip`` and ``deflate`` (any number of them, stacked) so that no layer inflates more
    than a chunk at a time: httpx's own decoders inflate each network read whole (64 KiB of a
    gzip bomb: 64 MiB; 2 KB of ``gzip, gzip``: 1 GiB). An encoding httpx does not decode is
    skipped, as httpx does; ``br`` or ``zstd`` (decoded when their libraries are installed)
    leaves the body to httpx (:attr:`httpx_decodes`)."""

    __slots__ = ("first", "httpx_decodes", "layers", "request")

    def __init__(self, response: httpx.Response, cap: int) -> None:
        super().__init__(cap, None)
        self.request = response.request
        names = [
            name.strip().lower()
            for name in response.headers.get_list("Content-Encoding", split_commas=True)
        ]
        names = [name for name in names if name in _HTTPX_DECODES and name != "identity"]
        self.httpx_decodes = any(name not in ("gzip", "deflate") for name in names)
        names = [] if self.httpx_decodes else names[::-1]  # the last applied is undone first
        #: One zlib decompressor per layer; ``first``: a deflate layer not yet read, which is
        #: zlib-wrapped or else raw deflate (as httpx reads it).
        self.layers: list[Any] = [
            zlib.decompressobj(zlib.MAX_WBITS | 16 if name == "gzip" else zlib.MAX_WBITS)
            for name in names
        ]
        self.first = [name == "deflate" for name in names]

    def add(self, chunk: bytes) -> bool:
        return self._feed(0, chunk)

    def _feed(self, layer: int, data: bytes) -> bool:
        """Inflate ``data`` through ``layer`` and the ones after it, a chunk at a time."""
        if layer == len(self.layers):
            return CappedBody.add(self, data)
        while data:
            inflate = self.layers[layer]
            try:
                out = inflate.decompress(data, CHUNK)
            except zlib.error as exc:
                if not self.first[layer]:
                    raise httpx.DecodingError(str(exc), request=self.request) from None
                self.layers[layer] = zlib.decompressobj(-zlib.MAX_WBITS)
                self.first[layer] = False
                continue
            self.first[layer] = False
            rest = inflate.unconsumed_tail
            if out and not self._feed(layer + 1, out):
                return False
            if not out and len(rest) == len(data):  # (no progress: nothing more to inflate)
                break
            data = rest
        return True

    def take(self) -> bytes:
        for layer, inflate in enumerate(self.layers):  # the end: what zlib still holds
            if self.over:
                break
            self._feed(layer + 1, inflate.flush())
        return super().take()


def _keep(response: httpx.Response, body: CappedBody) -> None:
    """What was read of an answer the flow looks at becomes its ``content``, as
    ``Response.read()`` keeps it: never more than the cap and one chunk (a hostile answer's
    endless or inflated body is not read whole, nor inflated more than a chunk at a time; over
    the cap the connection was closed, and the answer is refused as too large).
    ``Content-Length`` is not trusted for this."""
    response._content = body.take()


def _answer(response: httpx.Response, cap: int) -> Any:
    retry_after = response.headers.get("Retry-After")
    return answer_of(Call.TRADING, response.status_code, retry_after, response.content, cap)
