"""``session-fsm demo``: a trading bot's day against an embedded sandbox, shown as it happens.

The demo starts the sandbox in this process and drives a real :class:`~session_fsm.KSSession`
(or, with ``--async``, an :class:`~session_fsm.AsyncKSSession` in an event loop) over loopback
HTTP: connect (init, login, authenticate), a few trading calls and a limit order
resting on the book, a session the server expires (the next call, a modify of that order,
re-logs in by itself and is replayed), a 429 with ``Retry-After`` that urllib3 waits out, a
cancel of the order and the report that shows it cancelled, and logout. It ends with the path
taken (ASCII and mermaid, drawn from ``session.history``) and a summary. Every line goes
through structlog with the library's redaction: the console renderer on a terminal (colours
only on a TTY), JSON lines with ``--json``. No password, access code or token is ever printed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from .console_log import tidy_for_console as tidy_for_console  # (its former home)
from .console_log import use_colour
from .core.snapshot import OK, TransitionRecord
from .credentials import Credentials
from .diagrams import mermaid
from .errors import KSError
from .logs import configure_logging
from .retry import RetryPolicy
from .sandbox import DEMO_ACCOUNT, Sandbox, SandboxConfig, run_sandbox
from .sync.session import KSSession
from .table import State

if TYPE_CHECKING:
    from .aio.session import AsyncKSSession

#: Instruments the demo bot watches (TCS, INFY on NSE in the KS instrument master).
_WATCHLIST = "11536-1594"
#: A limit order below the last price (3130): it rests on the book until modified or cancelled.
_ORDER = {
    "instrumentToken": 11536,
    "transactionType": "BUY",
    "quantity": 1,
    "price": 3100.0,
    "validity": "GFD",
    "variety": "REGULAR",
    "disclosedQuantity": 0,
    "triggerPrice": 0,
    "tag": "session-fsm-demo",
}


class _Show:
    """Where the demo writes: headings and blocks as text, or everything as JSON lines."""

    def __init__(self, json_lines: bool, out: TextIO) -> None:
        self.json = json_lines
        self.out = out
        self.log = structlog.get_logger("session_fsm.demo")
        self._step = 0

    def heading(self, title: str) -> None:
        """Start a numbered step of the bot's day."""
        self._step += 1
        if self.json:
            self.log.info("demo_step", step=self._step, title=title)
        else:
            bold = ("\033[1m", "\033[0m") if use_colour(self.out) else ("", "")
            self.text(f"\n{bold[0]}== {self._step}. {title}{bold[1]}")

    def text(self, text: str) -> None:
        """Plain text (console mode only)."""
        if not self.json:
            self.out.write(text + "\n")
            self.out.flush()


#: One step of the bot's day: ("connect",), ("logout",) or ("call", method, path, kwargs).
Step = tuple[Any, ...]
#: The bot's day, written once for both drivers: it yields steps and is sent their results.
Day = Generator[Step, Any, None]


class _Bot:
    """The demo's bot: one session (threaded or asyncio), its trading calls, what it counted."""

    def __init__(self, show: _Show, session_url: str, use_async: bool = False) -> None:
        self.show = show
        self.retries = 0
        self.calls = 0
        self.alerts = 0
        creds = Credentials(
            userid=DEMO_ACCOUNT.userid,
            consumer_key=SandboxConfig().consumer_key,
            access_token=SandboxConfig().access_token,
            password=DEMO_ACCOUNT.password,
            access_code=DEMO_ACCOUNT.access_code,
            app_id="session-fsm-demo",
        )
        # The sleeper is the wait between retries: wrapping it makes the wait visible.
        self.session: KSSession | AsyncKSSession
        if use_async:
            from .aio.session import AsyncKSSession

            policy = RetryPolicy(total=3, sleeper=self._async_wait)
            self.session = AsyncKSSession(creds, host=session_url, retry=policy,
                                          timeout=(2.0, 5.0))  # fmt: skip
        else:
            policy = RetryPolicy(total=3, sleeper=self._wait)
            self.session = KSSession(creds, host=session_url, retry=policy, timeout=(2.0, 5.0))
        self.session.on_transition(self._alert)

    def _waiting(self, seconds: float) -> None:
        self.retries += 1
        self.show.log.info("retry_wait", seconds=round(seconds, 2))

    def _wait(self, seconds: float) -> None:
        self._waiting(seconds)
        time.sleep(seconds)

    def _async_wait(self, seconds: float) -> Any:  # an awaitable (RetryPolicy types None)
        """The async wire awaits what its sleeper returns: no wait blocks the loop."""
        self._waiting(seconds)
        return asyncio.sleep(seconds)

    def _alert(self, session: Any, record: TransitionRecord) -> None:
        """What a real bot hooks to its alerting (chat, pager): any transition that failed."""
        if record.outcome != OK:
            self.alerts += 1
            self.show.log.warning(
                "alert", trigger=record.trigger, outcome=record.outcome, error=record.error
            )

    def run(self, day: Day) -> None:
        """Play ``day`` on the threaded session."""
        session = self.session
        assert isinstance(session, KSSession)
        result: Any = None
        while (step := _next(day, result)) is not None:
            if step[0] != "call":
                result = getattr(session, step[0])()
                continue
            _, method, path, kwargs = step
            t0 = time.perf_counter()
            result = self._called(method, path, t0, session.request(method, path, **kwargs))

    async def run_async(self, day: Day) -> None:
        """Play ``day`` on the asyncio session."""
        session = self.session
        assert not isinstance(session, KSSession)
        result: Any = None
        while (step := _next(day, result)) is not None:
            if step[0] != "call":
                result = await getattr(session, step[0])()
                continue
            _, method, path, kwargs = step
            t0 = time.perf_counter()
            response = await session.request(method, path, **kwargs)
            result = self._called(method, path, t0, response)

    def _called(self, method: str, path: str, t0: float, response: Any) -> Any:
        """Log one trading call (status, time, a one-line gist of the answer); its payload."""
        self.calls += 1
        body = response.json()
        payload = body.get("Success", body.get("success")) if isinstance(body, dict) else body
        # urllib3 keeps the statuses it retried on the final response (none: no retry; the
        # async wire's answers do not carry them).
        retry = getattr(getattr(response, "raw", None), "retries", None)
        retried = [h.status for h in getattr(retry, "history", ()) if h.status]
        self.show.log.info(
            "trading_call",
            method=method,
            path=path,
            status=response.status_code,
            ms=round((time.perf_counter() - t0) * 1000, 1),
            answer=_gist(payload),
            retried_after=retried or None,
        )
        return payload


def _next(day: Day, result: Any) -> Step | None:
    """The day's next step, given the last one's result; None at its end."""
    try:
        return day.send(result)
    except StopIteration:
        return None


def _gist(payload: Any) -> str:
    """A short, secret-free summary of a trading answer."""
    if isinstance(payload, list):
        names = [
            f"{p.get('instrumentName')}@{p.get('lastPrice')}"
            if "lastPrice" in p
            else f"{p.get('orderId')} {p.get('status', '')}".strip()
            for p in payload
            if isinstance(p, dict)
        ]
        return f"{len(payload)} item(s): {', '.join(names)}" if names else "0 items"
    if isinstance(payload, dict) and len(payload) == 1:  # {"NSE": {"orderId", "message"...}}
        inner = next(iter(payload.values()))
        if isinstance(inner, dict) and "orderId" in inner:
            return str(inner.get("message", f"order {inner['orderId']}"))
    return type(payload).__name__


def _order_id(payload: Any) -> Any:
    """The order id of a place answer, as the public client's ``get_order_id`` reads it."""
    inner = next(iter(payload.values()))
    return inner["orderId"]


def path_taken(history: Sequence[TransitionRecord]) -> list[TransitionRecord]:
    """The transitions that happened (outcome ok), oldest first."""
    return [r for r in history if r.outcome == OK]


def ascii_path(records: Sequence[TransitionRecord]) -> str:
    """``Uninitialised --init--> Initialised ...``, one line per arrival at Authenticated."""
    if not records:
        return "(no transitions)"
    lines: list[str] = []
    line = records[0].src.value
    for r in records:
        line += f" --{r.trigger}--> {r.dst.value}"
        if r.dst is State.AUTHENTICATED:
            lines.append(line)
            line = "   "
    if line.strip():
        lines.append(line)
    return "\n".join(lines)


def path_mermaid(records: Sequence[TransitionRecord]) -> str:
    """Mermaid of the arrows taken, each labelled with how often."""
    counts = Counter((r.src, r.dst, r.trigger) for r in records)
    return mermaid(counts=dict(counts))


def configure_output(json_lines: bool, out: TextIO, level: int = logging.INFO) -> None:
    """:func:`~session_fsm.configure_logging` (whose console lines are already tidied by
    :func:`~session_fsm.console_log.tidy_for_console`). Used by the demo and the CLI."""
    configure_logging(json=json_lines, stream=out, level=level)


def run_demo(json_lines: bool = False, out: TextIO | None = None, use_async: bool = False) -> int:
    """Play the demo bot's day on an embedded sandbox; return the exit code (0 on success).

    ``json_lines`` prints JSON lines instead of the console rendering. ``out`` defaults to
    standard output. ``use_async`` plays it on an :class:`~session_fsm.AsyncKSSession` in an
    event loop (needs the ``async`` extra). structlog's configuration is restored afterwards.
    """
    stream = out or sys.stdout
    saved = structlog.get_config()
    configure_output(json_lines, stream)
    try:
        return _play(_Show(json_lines, stream), use_async)
    finally:
        structlog.configure(**saved)


def _day(show: _Show, sb: Sandbox) -> Day:
    """The bot's day, step by step (the same for both drivers)."""
    show.heading("connect: walk the table from Uninitialised to Authenticated")
    yield ("connect",)

    show.heading("trading: quotes, positions, a limit order resting on the book")
    yield ("call", "GET", f"/quotes/v1.0/ltp/instruments/{_WATCHLIST}", {})
    yield ("call", "GET", "/positions/1.0/positions/todays", {})
    order_id = _order_id((yield ("call", "POST", "/orders/1.0/order/normal", {"json": _ORDER})))

    show.heading("the server expires the session; the next call (a modify of the order) "
                 "re-logs in by itself and is replayed")  # fmt: skip
    show.log.info("sandbox_expired_sessions", count=sb.control.expire())
    modify = {"orderId": str(order_id), "price": 3110.0, "validity": "GFD"}
    yield ("call", "PUT", "/orders/1.0/orders", {"json": modify})

    show.heading("rate limited: 429 with Retry-After: 1 is waited out, then retried")
    sb.control.fault("/positions/1.0/positions/todays", method="GET", status=429,
                     retry_after=1)  # fmt: skip
    yield ("call", "GET", "/positions/1.0/positions/todays", {})

    show.heading("the bot changes its mind: cancel the order; the report shows it")
    yield ("call", "DELETE", f"/orders/1.0/orders/{order_id}", {})
    yield ("call", "GET", "/reports/1.0/orders", {})

    show.heading("logout: the session token is invalidated and forgotten")
    yield ("logout",)


def _play(show: _Show, use_async: bool = False) -> int:
    started = time.perf_counter()
    with run_sandbox(SandboxConfig(fill="never")) as sb:  # limit orders rest on the book
        bot = _Bot(show, sb.url, use_async)
        s = bot.session
        if show.json:
            show.log.info("demo_start", sandbox=sb.url, userid=s.credentials.userid,
                          session=type(s).__name__)  # fmt: skip
        show.text(f"session_fsm demo: a trading bot's day on an embedded sandbox at {sb.url}")
        show.text(f"(a real {type(s).__name__} over loopback HTTP; no secret is ever printed)")
        try:
            if use_async:
                asyncio.run(_async_day(bot, _day(show, sb)))
            else:
                try:
                    bot.run(_day(show, sb))
                finally:
                    s.close()
        except KSError as exc:
            show.log.error("demo_failed", error=type(exc).__name__, message=str(exc))
            return 1
        stats = sb.control.stats()
    return _finish(show, bot, stats, time.perf_counter() - started)


async def _async_day(bot: _Bot, day: Day) -> None:
    session = bot.session
    assert not isinstance(session, KSSession)
    async with session:  # leaving closes the pooled connections
        await bot.run_async(day)


def _finish(show: _Show, bot: _Bot, stats: dict[str, Any], elapsed: float) -> int:
    records = path_taken(bot.session.history)
    relogins = sum(1 for r in records if r.trigger == "session_expired")
    summary = {
        "trading_calls": bot.calls,
        "http_calls_served": sum(stats["calls"].values()),
        "logins": stats["logins"],
        "relogins": relogins,
        "retries": bot.retries,
        "alerts": bot.alerts,
        "final_state": bot.session.state.value,
        "seconds": round(elapsed, 2),
    }
    diagram = path_mermaid(records)
    if show.json:
        show.log.info(
            "demo_summary",
            path=[[r.src.value, r.trigger, r.dst.value] for r in records],
            mermaid=diagram,
            **summary,
        )
    else:
        show.heading("the path taken")
        show.text(ascii_path(records))
        show.text("\nmermaid (paste into https://mermaid.live or a GitHub README):")
        show.text(diagram.rstrip())
        show.text("\nsummary: " + "  ".join(f"{k}={v}" for k, v in summary.items()))
    ok = bot.session.state is State.LOGGED_OUT and relogins >= 1
    return 0 if ok else 1
