"""Issue 14, item 3: a process forked after connect() never reads the other's answers, and
never waits on a lock a parent thread held at the fork.

Real ``os.fork()`` against the sandbox over loopback. The quotes endpoint answers with the
instrument token it was asked for, so each answer says which request it belongs to.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from session_fsm import KSSession
from session_fsm.contract import QUOTES_LTP_PREFIX
from session_fsm.sandbox import Sandbox
from session_fsm.sandbox.market import INSTRUMENTS
from tests.loopback_listeners import wait_until

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

ROUNDS = 150
ORDERS = "/reports/1.0/orders"
LOGIN = "/session/1.0/session/login/userid"


#: The sandbox's instruments, split between the two processes: an answer for the other process,
#: or for another of this process's requests, names a token this request did not ask for.
TOKENS = sorted(INSTRUMENTS)
PARENT_TOKENS, CHILD_TOKENS = TOKENS[: len(TOKENS) // 2], TOKENS[len(TOKENS) // 2 :]


def ask(s: KSSession, tokens: list[int], rounds: int) -> dict[str, Any]:
    """``rounds`` quotes, cycling over ``tokens``: how many came back for another request."""
    crossed, errors = 0, []
    for i in range(rounds):
        token = tokens[i % len(tokens)]
        try:
            answer = s.get(f"{QUOTES_LTP_PREFIX}{token}").json()["Success"]
            crossed += [q["instrumentToken"] for q in answer] != [token]
        except Exception as exc:  # a crossed answer may also show as a broken one
            errors.append(type(exc).__name__)
    return {"crossed": crossed, "errors": errors}


def in_child(work: Callable[[], dict[str, Any]]) -> tuple[int, int]:
    """Fork; run ``work`` in the child, which writes its JSON result to a pipe and exits.
    Returns (child pid, read end of the pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(r)
            os.write(w, json.dumps(work()).encode())
            code = 0
        except BaseException as exc:
            os.write(w, json.dumps({"child_error": type(exc).__name__, "text": str(exc)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def collect(pid: int, r: int, timeout: float) -> Any:
    """The child's result, or None when it did not finish within ``timeout`` (then killed)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        return None
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    return json.loads(data) if data else None


def test_forked_processes_never_read_each_others_answers(
    new_session: Callable[..., KSSession], sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    assert s.get(f"{QUOTES_LTP_PREFIX}{TOKENS[0]}").status_code == 200  # a pooled connection
    opened = sb.connections_opened
    pid, r = in_child(lambda: ask(s, CHILD_TOKENS, ROUNDS))
    parent = ask(s, PARENT_TOKENS, ROUNDS)  # at the same time as the child
    child = collect(pid, r, timeout=60)
    assert child is not None, "the child did not finish"
    assert parent == {"crossed": 0, "errors": []}
    assert child == {"crossed": 0, "errors": []}
    assert sb.connections_opened > opened  # the child made its own connection


def test_a_child_forked_during_a_parent_threads_login_is_not_stuck(
    new_session: Callable[..., KSSession], sb: Sandbox
) -> None:
    # A parent thread is inside connect() (holding the session's lock and the store's lock,
    # waiting for a slow login answer) when the main thread forks. The child's copies of
    # those locks are held by a thread that does not exist in the child.
    s = new_session(relogin_timeout=20.0)
    sb.control.fault(LOGIN, delay=2.0)
    holder = threading.Thread(target=s.connect)
    holder.start()
    assert wait_until(lambda: sb.control.stats()["calls"].get(f"POST {LOGIN}", 0) == 1)

    def child_work() -> dict[str, Any]:
        started = time.monotonic()
        s.connect()
        return {"status": s.get(ORDERS).status_code, "seconds": time.monotonic() - started}

    pid, r = in_child(child_work)
    child = collect(pid, r, timeout=15)
    holder.join(10)
    assert child is not None, "the child hung on a lock it inherited held"
    assert child.get("status") == 200, child
    assert child["seconds"] < 10  # not a lock wait that merely gave up
    assert s.state.value == "Authenticated"  # the parent's own login went on undisturbed
