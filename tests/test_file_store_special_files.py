"""The file store refuses a token path that is not a regular file (a FIFO, a symlink, a folder)
with a StoreError naming the path, instead of blocking for ever on a FIFO with the lock held."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from session_fsm import KSSession
from session_fsm.file_store import FileStore
from session_fsm.stores import StoreError
from tests.conftest import make_credentials

KEY = "session_fsm:http://127.0.0.1:1/apim:demo-user"
#: Far above what a refusal takes; only a blocked open gets near it.
WAIT = 10.0


def finishes(fn: Callable[[], Any], fifo: Path | None = None) -> BaseException | Any:
    """Run ``fn`` in a thread; its result or exception. If it is still running after WAIT s,
    a writer opens ``fifo`` (so a reader blocked on it is released) and the test fails."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # handed to the test
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(WAIT)
    if t.is_alive():
        if fifo is not None:  # unblock the reader so no thread is left hanging
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        t.join(WAIT)
        pytest.fail(f"still blocked after {WAIT}s")
    return out[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.json"
    os.mkfifo(path, 0o600)
    return path


def test_load_from_a_fifo_is_refused_at_once_naming_the_path(fifo: Path) -> None:
    result = finishes(lambda: FileStore(fifo).load(KEY), fifo)
    assert isinstance(result, StoreError), result
    assert str(fifo) in str(result) and "FIFO" in str(result)


def test_save_over_a_fifo_is_refused_too(fifo: Path) -> None:
    from session_fsm import StoredSession
    from session_fsm.secret import Secret

    record = StoredSession("http://127.0.0.1:1/apim", "demo-user", Secret("t" * 12), 1, 1.0)
    result = finishes(lambda: FileStore(fifo).save(KEY, record), fifo)
    assert isinstance(result, StoreError) and str(fifo) in str(result)


def test_a_session_on_a_fifo_store_fails_instead_of_hanging(fifo: Path) -> None:
    session = KSSession(make_credentials(), host="http://127.0.0.1:1/apim", store=f"file:{fifo}")
    result = finishes(session.resume, fifo)
    assert isinstance(result, StoreError) and str(fifo) in str(result)
    # The session lock was released on the way out: connect() gets it and is refused the same
    # way when it reads the store under the re-login lock (nothing is sent).
    assert isinstance(finishes(session.connect, fifo), StoreError)


def test_a_symlink_at_the_token_path_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.json"
    real.write_text('{"format": "session_fsm/1", "sessions": {}}')
    link = tmp_path / "tokens.json"
    link.symlink_to(real)
    with pytest.raises(StoreError, match="symbolic link") as info:
        FileStore(link).load(KEY)
    assert str(link) in str(info.value)


def test_a_folder_at_the_token_path_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "tokens.json"
    folder.mkdir()
    with pytest.raises(StoreError, match="folder") as info:
        FileStore(folder).load(KEY)
    assert str(folder) in str(info.value)


def test_a_regular_file_still_reads_and_a_missing_one_is_empty(tmp_path: Path) -> None:
    from session_fsm import StoredSession
    from session_fsm.secret import Secret

    store = FileStore(tmp_path / "tokens.json")
    assert store.load(KEY) is None
    record = StoredSession("http://127.0.0.1:1/apim", "demo-user", Secret("t" * 12), 3, 1.0)
    store.save(KEY, record)
    assert FileStore(tmp_path / "tokens.json").load(KEY) == record
