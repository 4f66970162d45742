"""A session's core is made at its first use (061bdf2): guards of what that must not change.

Threads meeting a new session's first use on different paths (a reader, a callback's
registration, the store, ``session.auth``) all get the one core kept, and every callback
registered on the way is called; a new, never used session refuses pickling without its
secrets in the error, as a used one does. (All passed on 061bdf2: guards, not fixes.)
"""

from __future__ import annotations

import contextlib
import pickle
import threading
from typing import Any

import pytest

from session_fsm import Credentials, KSSession
from tests.answer_server import answer_server
from tests.conftest import FAST_RETRY, make_credentials

THREADS = 8


class _Meeting(Credentials):
    """Credentials whose ``identity`` (read as a core is made) waits, while :attr:`gate` is
    set, for the other threads making one: every thread is then inside the making at once,
    and only keeping the first core made can give them one."""

    gate: threading.Barrier | None = None

    @property
    def identity(self) -> Any:
        gate = _Meeting.gate
        if gate is not None:  # (a thread that came when the core was made does not wait)
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait()
        return super().identity


def _first_use(s: KSSession, i: int, called: list[int]) -> object:
    """One thread's first use of ``s`` (which depends on ``i``); returns the core it saw."""
    kind = i % 4
    if kind == 0:
        _ = s.state
    elif kind == 1:
        s.on_transition(lambda session, record, i=i: called.append(i))
    elif kind == 2:
        _ = s.store
    else:
        _ = s.auth
    return s._core


@pytest.mark.parametrize("trial", range(5))
def test_threads_meeting_a_new_sessions_first_use_share_one_core(trial: int) -> None:
    called: list[int] = []
    seen: list[object] = []
    base: Any = make_credentials()
    credentials = _Meeting(**{k: getattr(base, k) for k in ("userid", "consumer_key",
                              "access_token", "password", "access_code", "app_id")})  # fmt: skip
    with answer_server() as server, KSSession(credentials, host=server.url, retry=FAST_RETRY,
                                              timeout=(2.0, 5.0)) as s:  # fmt: skip
        gate = threading.Barrier(THREADS)
        _Meeting.gate = threading.Barrier(THREADS, timeout=1.0)

        def run(i: int) -> None:
            gate.wait()
            seen.append(_first_use(s, i, called))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            _Meeting.gate = None
        assert len({id(core) for core in seen}) == 1 and seen[0] is s._core
        s.connect()
        registered = [i for i in range(THREADS) if i % 4 == 1]
        assert sorted(set(called)) == registered  # every one registered, each called
        assert len(called) == len(registered) * len(s.history)


@pytest.mark.parametrize("used", [False, True])
def test_a_session_refuses_pickling_without_its_secrets_used_or_not(used: bool) -> None:
    password, bearer = "pw-3f9c1d7e55", "bearer-0a8e6b42c9d1"
    s = KSSession(make_credentials(password=password, access_token=bearer))
    if used:
        _ = s.snapshot()
    assert ("_core" in vars(s)) is used
    with pytest.raises(TypeError) as caught:
        pickle.dumps(s)
    text: Any = f"{caught.value!r} {caught.value}"
    assert password not in text and bearer not in text
    assert password not in repr(s) and bearer not in repr(s)
