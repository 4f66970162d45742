"""The async hot path's per-generation request template: what an authorised trading request of
one session generation sends, worked out once instead of on every request.

:class:`~session_fsm.aio.session.AsyncKSSession` keeps one :class:`TradingTemplate` per
(host, session token, identity) and sends each trading request with it through
:meth:`AsyncWire.send_trading <session_fsm.aio.wire.AsyncWire.send_trading>`, which runs the
wire's one retry loop (allow-list check, deadline, retry policy: nothing of it is skipped).
What the template saves is per-request work whose result cannot change within a generation:
the plain headers (``who.plain_headers()``), and the check that the Bearer and session tokens
can go into an HTTP header, made at the first send (the same check, error and place as
:meth:`CallAuth.reveal <session_fsm.answers.CallAuth.reveal>`'s) and not repeated. The tokens
stay :class:`~session_fsm.secret.Secret`\\ s; they are revealed into each attempt's own headers
only, as before.
"""

from __future__ import annotations

from .. import contract as c
from ..answers import CallAuth
from ..core.calls import Identity
from ..secret import Secret


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
            c.H_AUTHORIZATION: "Bearer " + self.who.access_token.reveal(),
            c.H_SESSION_TOKEN: self._token.reveal(),
        }, None


class TradingTemplate:
    """The trading requests of one session generation: its host, plain headers and auth."""

    __slots__ = ("auth", "headers", "host", "token", "who")

    def __init__(self, host: str, who: Identity, session_token: Secret) -> None:
        self.host = host
        self.who = who
        self.token = session_token
        #: The plain headers every trading request sends (``trading_call``'s), never mutated.
        self.headers = who.plain_headers()
        self.auth = TradingAuth(who, session_token)

    def __repr__(self) -> str:
        return f"TradingTemplate(host={self.host!r})"


__all__ = ["TradingAuth", "TradingTemplate"]
