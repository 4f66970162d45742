"""The async hot path's per-generation request template: what an authorised trading request of
one session generation sends, worked out once instead of on every request.

:class:`~session_fsm.aio.session.AsyncKSSession` keeps one :class:`TradingTemplate` per
(host, session token, identity) and sends each trading request with it through
:meth:`AsyncWire.send_trading <session_fsm.aio.wire.AsyncWire.send_trading>`, which runs the
wire's one retry loop (allow-list check, deadline, retry policy: nothing of it is skipped).
What the template saves is per-request work whose result cannot change within a generation:
the plain headers (``who.plain_headers()``, kept as the case-insensitive multidict aiohttp
sends, its names as ``istr``: aiohttp copies the headers of a request into a new multidict
twice, and a name that is an ``istr`` is not case-folded again each time), the URL of each path,
and the check that the Bearer and session tokens can go into an HTTP header, made at the first
send (the same check, error and place as :meth:`CallAuth.reveal
<session_fsm.answers.CallAuth.reveal>`'s) and not repeated. The tokens stay
:class:`~session_fsm.secret.Secret`\\ s; they are revealed into each attempt's own headers only,
as before.
"""

from __future__ import annotations

import aiohttp
from multidict import CIMultiDict, istr

from .. import contract as c
from ..answers import CallAuth
from ..core.calls import Identity
from ..secret import Secret

#: The names of a trading request's secret headers (``istr``: see the module's text).
_AUTHORIZATION, _SESSION_TOKEN = istr(c.H_AUTHORIZATION), istr(c.H_SESSION_TOKEN)

#: How many paths' URLs a template keeps (a bot calls a handful of paths; order ids vary the
#: rest) before starting afresh.
_URLS_MAX = 256


class TradingAuth(CallAuth):
    """``CallAuth`` of a trading request (Bearer and session token, no body) whose token check,
    once passed, is not made again: the tokens of one generation do not change."""

    __slots__ = ("_checked", "_token")

    def __init__(self, who: Identity, session_token: Secret) -> None:
        super().__init__(who, {c.H_SESSION_TOKEN: session_token})
        self._token = session_token
        self._checked = False

    def reveal(self) -> tuple[dict[str, str], bytes | None]:
        """The Bearer and session token headers, revealed (checked at the first call: a
        token HTTP cannot carry raises ConfigurationError naming the header, every time)."""
        if not self._checked:
            headers, _ = super().reveal()  # the check, and its error, of every other call
            self._checked = True
            return headers, None
        return {
            _AUTHORIZATION: "Bearer " + self.who.access_token.reveal(),
            _SESSION_TOKEN: self._token.reveal(),
        }, None


class TradingTemplate:
    """The trading requests of one session generation: its host, plain headers and auth."""

    __slots__ = ("auth", "headers", "host", "pool", "sender", "snap", "token", "urls", "who")

    def __init__(self, host: str, who: Identity, session_token: Secret) -> None:
        self.host = host
        self.who = who
        self.token = session_token
        #: The plain headers every trading request sends (``trading_call``'s), never mutated.
        self.headers: CIMultiDict[str] = CIMultiDict(
            (istr(name), value) for name, value in who.plain_headers().items()
        )
        self.auth = TradingAuth(who, session_token)
        #: The URL of each path sent so far (see :meth:`url`; the wire reads it first).
        self.urls: dict[str, str] = {}
        #: The snapshot the session last used this template for (its own bookkeeping).
        self.snap: object = None
        #: The wire's pool this template last sent through, and its session that sends
        #: ``headers`` by default (see :meth:`AsyncWire.send_trading
        #: <session_fsm.aio.wire.AsyncWire.send_trading>`).
        self.pool: aiohttp.ClientSession | None = None
        self.sender: aiohttp.ClientSession | None = None

    def url(self, path: str) -> str:
        """``host + path``: one string per path, so its hash (the allow-list's memo, the
        proxy's, yarl's URL cache) is computed once."""
        urls = self.urls
        url = urls.get(path)
        if url is None:
            if len(urls) >= _URLS_MAX:
                urls.clear()
            url = urls[path] = self.host + path
        return url

    def __repr__(self) -> str:
        return f"TradingTemplate(host={self.host!r})"


__all__ = ["TradingAuth", "TradingTemplate"]
