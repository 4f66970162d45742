"""Why a bot running in several processes needs a shared token store: the broker allows one
session per user, so each process's own login ends the other's session.

Two real processes (``spawn``, see :mod:`tests.mp_worker`) take turns on the sandbox. Each
with a store of its own, every turn meets a dead session and logs in again, which kills the
other's: they keep logging each other out. With one shared file store the second adopts the
first's session and nobody logs in again. With ``single_session`` off (a broker that allows
several sessions) separate stores cost one login each and no more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from session_fsm.sandbox import Sandbox
from tests.mp_worker import CTX, ORDERS, Fleet

# A and B take turns: A connects, B connects, then each reads the order book twice in turn.
A_SCRIPT = [("connect",), ("set", "a1"), ("wait", "b1"), ("get", ORDERS), ("set", "a2"),
            ("wait", "b2"), ("get", ORDERS), ("set", "a3")]  # fmt: skip
B_SCRIPT = [("wait", "a1"), ("connect",), ("set", "b1"), ("wait", "a2"), ("get", ORDERS),
            ("set", "b2"), ("wait", "a3"), ("get", ORDERS)]  # fmt: skip


def logins_in(reports: list[dict[str, Any]]) -> int:
    return sum(t == "authenticate" and o == "ok" for r in reports for t, o, _ in r["records"])


@pytest.mark.parametrize(
    ("stores", "single_session", "sessions"),
    [("separate", True, 6), ("shared", True, 1), ("separate", False, 2)],
)
def test_processes_log_each_other_out_without_a_shared_store(
    sb: Sandbox, children: Fleet, tmp_path: Path, stores: str, single_session: bool,
    sessions: int,
) -> None:  # fmt: skip
    sb.control.settings(single_session=single_session)
    shared = f"file:{tmp_path / 'tokens.json'}"
    own = [f"file:{tmp_path / f'tokens-{name}.json'}" for name in "ab"]
    sync = {name: CTX.Event() for name in ("a1", "a2", "a3", "b1", "b2")}
    a = children.start(shared if stores == "shared" else own[0], A_SCRIPT, sync)
    b = children.start(shared if stores == "shared" else own[1], B_SCRIPT, sync)
    got_a = children.reports(a, len(A_SCRIPT))
    got_b = children.reports(b, len(B_SCRIPT))
    assert children.join(a) == 0 and children.join(b) == 0

    stats = sb.control.stats()
    assert stats["sessions"] == stats["logins"] == sessions
    assert logins_in(got_a) + logins_in(got_b) == sessions
    gets = [r for r in got_a + got_b if r["step"] == "get"]
    relogged = [r for r in gets if any(t == "session_expired" for t, _, _ in r["records"])]
    # Separate stores, one session per user: every read met a dead session (4 of 4).
    assert len(relogged) == (4 if sessions == 6 else 0)
    if stores == "shared":  # B adopted A's session from the store instead of logging in
        assert [t for t, o, _ in got_b[1]["records"] if o == "ok"] == ["restore"]
