"""Replay a transition log: the path a session took, as a diagram and a numbered timeline.

Reads the JSON lines the library's events become under ``configure_logging(json=True)`` (one
``"event": "transition"`` object per attempted transition, see
:meth:`~session_fsm.snapshot.TransitionRecord.as_event`). Other lines are skipped and reported
by line number and reason only: a skipped line is never echoed, since it may hold anything.
Printed fields of accepted lines are checked against the table's states and a strict pattern
for names, so the timeline shows nothing a log line smuggled in.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from .core.snapshot import FAILED, OK, REFUSED
from .diagrams import render
from .drawing import Attempts, Counts
from .errors import ConfigurationError
from .models import too_deep
from .table import State

#: Fields a transition event must have; each names a state, a trigger or an outcome.
REQUIRED = ("trigger", "src", "dst", "outcome")
OUTCOMES = (OK, REFUSED, FAILED)
_STATES = {s.value: s for s in State}
#: Triggers, error class names and reasons are code-made names: anything else is not printed.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_REASON = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ .:-]{0,79}")
_SESSION = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_CALL = re.compile(r"[A-Z]{3,7} /[A-Za-z0-9_./{}-]{0,120}")
#: At most this many line ranges are listed per skip reason.
MAX_RANGES = 12


@dataclass(frozen=True)
class Step:
    """One attempted transition read from the log."""

    line: int
    time: datetime | None
    trigger: str
    src: State
    dst: State
    outcome: str
    status: int | None = None
    fault_code: int | None = None
    error: str | None = None
    reason: str | None = None
    session: str | None = None
    call: str | None = None

    @property
    def moved(self) -> bool:
        """True when the edge was taken: it succeeded, or it changed the state anyway."""
        return self.outcome == OK or self.src != self.dst


@dataclass(frozen=True)
class Trace:
    """What a log held: the steps in order, and the lines skipped (line number, reason)."""

    steps: tuple[Step, ...]
    skipped: tuple[tuple[int, str], ...] = field(default=())
    #: Lines that were not JSON but read like a console rendering of a transition event.
    console_lines: int = 0

    def sessions(self) -> list[str | None]:
        """The session ids in the log, in order of first appearance (None: no id)."""
        return list(dict.fromkeys(s.session for s in self.steps))

    def of_session(self, session: str) -> Trace:
        """Only the steps of ``session``."""
        return Trace(tuple(s for s in self.steps if s.session == session), self.skipped,
                     self.console_lines)  # fmt: skip

    def counts(self) -> Counts:
        """How often each edge was taken: (src, dst, trigger) -> n, in first-seen order."""
        return dict(Counter((s.src, s.dst, s.trigger) for s in self.steps if s.moved))

    def attempts(self) -> Attempts:
        """Attempts that left the state unchanged: (state, trigger, outcome) -> n."""
        return dict(Counter((s.src, s.trigger, s.outcome) for s in self.steps if not s.moved))


class Skip(Exception):
    """A line is not a usable transition event; the message is the reason (never its text)."""


def parse_line(line: str, number: int) -> Step | None:
    """The step in one log line; None for a blank line; raises :class:`Skip` otherwise."""
    if not line.strip():
        return None
    try:
        if too_deep(line):  # refused, not decoded into the recursion limit
            raise ValueError("nested too deeply")
        obj = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise Skip("not JSON") from None
    if not isinstance(obj, dict):
        raise Skip("not a JSON object")
    if obj.get("event") != "transition":
        raise Skip("not a transition event")
    for name in REQUIRED:
        if name not in obj or obj[name] is None:
            raise Skip(f"missing field {name}")
    src, dst = _state(obj, "src"), _state(obj, "dst")
    trigger = obj["trigger"]
    if not isinstance(trigger, str) or not _NAME.fullmatch(trigger):
        raise Skip("bad field trigger")
    if obj["outcome"] not in OUTCOMES:
        raise Skip("bad field outcome")
    status = obj.get("status")
    if status is not None and (type(status) is not int or not 100 <= status <= 599):
        raise Skip("bad field status")
    return Step(
        line=number,
        time=_time(obj.get("timestamp")),
        trigger=trigger,
        src=src,
        dst=dst,
        outcome=obj["outcome"],
        status=status,
        fault_code=_int(obj.get("fault_code")),
        error=_safe(obj.get("error"), _NAME),
        reason=_safe(obj.get("reason"), _REASON),
        session=_safe(obj.get("session_id"), _SESSION),
        call=_safe(obj.get("call"), _CALL),
    )


def _state(obj: dict[str, Any], key: str) -> State:
    state = _STATES.get(obj[key]) if isinstance(obj[key], str) else None
    if state is None:
        raise Skip(f"unknown state in {key}")
    return state


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _safe(value: Any, pattern: re.Pattern[str]) -> str | None:
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def _time(value: Any) -> datetime | None:
    """structlog's ISO timestamp (``...Z``), or None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def parse(lines: Iterable[str]) -> Trace:
    """Read every line; keep the transition events, note the others with their reason."""
    steps: list[Step] = []
    skipped: list[tuple[int, str]] = []
    console = 0
    for number, line in enumerate(lines, 1):
        try:
            step = parse_line(line, number)
        except Skip as why:
            skipped.append((number, str(why)))
            if str(why) == "not JSON" and _CONSOLE_LINE.search(line):
                console += 1
            continue
        if step is not None:
            steps.append(step)
    return Trace(tuple(steps), tuple(skipped), console)


#: A transition as ``configure_logging()`` renders it on a console (``transition  init: ...``).
_CONSOLE_LINE = re.compile(r"\btransition\b.*(->|trigger=)")


def read_trace(path: Path, stdin: TextIO | None = None) -> Trace:
    """:func:`parse` a log file, or standard input for ``-`` (UTF-8; undecodable bytes only
    spoil their own line)."""
    if str(path) == "-":
        stream = stdin or sys.stdin
        return parse(stream)
    with path.open(encoding="utf-8", errors="replace") as f:
        return parse(f)


def _ranges(numbers: list[int]) -> Iterator[str]:
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        yield str(start) if start == prev else f"{start}-{prev}"
        if n is not None:
            start = prev = n


def skipped_report(trace: Trace, name: str) -> list[str]:
    """One line per skip reason: how many lines, and which (ranges, capped)."""
    by_reason: dict[str, list[int]] = {}
    for number, why in trace.skipped:
        by_reason.setdefault(why, []).append(number)
    out = []
    for why, numbers in by_reason.items():
        ranges = list(_ranges(numbers))
        shown = ", ".join(ranges[:MAX_RANGES])
        more = f", and {len(ranges) - MAX_RANGES} more ranges" if len(ranges) > MAX_RANGES else ""
        plural = "line" if len(numbers) == 1 else "lines"
        out.append(f"{name}: skipped {len(numbers)} {plural}, {why}: {plural} {shown}{more}")
    return out


def _clock(t: datetime | None) -> str:
    if t is None:
        return "-"
    t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def timeline(trace: Trace) -> str:
    """The numbered timeline: time, trigger, from -> to, outcome, status (and why).

    A log of several sessions (several processes, or restarts) gets one block per session, in
    order of first appearance, each headed ``session ID: N transitions``."""
    sessions = trace.sessions()
    if len(sessions) <= 1:
        return _table(trace.steps)
    blocks = []
    for sid in sessions:
        steps = [s for s in trace.steps if s.session == sid]
        plural = "transition" if len(steps) == 1 else "transitions"
        blocks.append(f"session {sid or '?'}: {len(steps)} {plural}\n" + _table(steps))
    return "\n".join(blocks)


def _table(steps: Iterable[Step]) -> str:
    rows = []
    for i, s in enumerate(steps, 1):
        fault = f"fault {s.fault_code}" if s.fault_code is not None else None
        why = ", ".join(x for x in (s.error, fault, s.call, s.reason) if x)
        rows.append([
            f"{i}.",
            _clock(s.time),
            s.trigger,
            f"{s.src.value} -> {s.dst.value}",
            s.outcome,
            "-" if s.status is None else str(s.status),
            why,
        ])  # fmt: skip
    head = ["#", "time (UTC)", "trigger", "from -> to", "outcome", "status", "why"]
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *rows]
    ]
    return "\n".join(lines) + "\n"


def diagram(trace: Trace, fmt: str) -> bytes:
    """The path of ``trace`` in ``fmt``: taken edges with counts, final state highlighted."""
    first, final = trace.steps[0], trace.steps[-1]
    return render(
        fmt,
        counts=trace.counts(),
        attempts=trace.attempts(),
        highlight=final.dst,
        start=first.src,
    )


def run_trace(
    logfile: Path,
    fmt: str,
    output: Path | None,
    *,
    session: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """``session-fsm trace``: timeline to stdout, diagram to ``output`` (or stdout, fenced).

    ``logfile`` ``-`` reads standard input; ``session`` keeps one session's steps. Skipped lines
    are reported on stderr. Returns 0, or 1 when the log held no transition event (of
    ``session``); a console log (not JSON) is named as such, with what to do. SVG and PNG need
    ``-o FILE`` (ConfigurationError otherwise); an unreadable file is OSError.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if output is None and fmt in ("svg", "png"):
        raise ConfigurationError(f"{fmt} output needs -o FILE", hint=f"add -o trace.{fmt}")
    name = "standard input" if str(logfile) == "-" else str(logfile)
    trace = read_trace(logfile, stdin)
    for line in skipped_report(trace, name):
        err.write(line + "\n")
    if not trace.steps:
        if trace.console_lines:
            err.write(f"session-fsm trace: error: {name} is a console log, not JSON lines: "
                      "log JSON with configure_logging(json=True) and trace that\n")  # fmt: skip
        else:
            err.write(f"session-fsm trace: error: no transition events in {name}\n")
        return 1
    if session is not None:
        known = [s for s in trace.sessions() if s]
        trace = trace.of_session(session)
        if not trace.steps:
            listed = ", ".join(known[:10]) or "none"
            err.write(f"session-fsm trace: error: no transition events of session "
                      f"{_safe(session, _SESSION) or '(bad id)'} in {name}; sessions in it: "
                      f"{listed}\n")  # fmt: skip
            return 1
    picture = diagram(trace, fmt)
    out.write(timeline(trace))
    if output is None:
        out.write(f"\n```{fmt}\n{picture.decode()}```\n")
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(picture)
        out.write(f"\n{fmt} diagram of {len(trace.steps)} transitions written to {output}\n")
    out.flush()
    return 0
