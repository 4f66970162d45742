"""A token store in a JSON file: atomic replace, mode 0600, cross-process locks (filelock).

The file maps store keys to sessions. Writes go to a temporary file in the same folder, are
flushed and fsynced, then renamed over the old one, so a reader sees the old file or the new,
never half of one. A corrupt, truncated or foreign file is reported once as a warning (without
its contents) and treated as empty. The re-login lock is a second lock file; the OS releases it
when a process dies, so a crashed holder never blocks the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .logs import emit, get_logger
from .stores import StoredSession


class FileStore:
    """Store sessions in ``path`` (created with mode 0600 on first save)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._write_lock = FileLock(str(self.path) + ".lock")
        self._relogin_lock = FileLock(str(self.path) + ".relogin.lock")
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"FileStore({str(self.path)!r})"

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            self._warn("unreadable", type(exc).__name__)
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            self._warn("corrupt", "not JSON (truncated or foreign)")
            return {}
        if not isinstance(data, dict) or data.get("format") != "session_fsm/1":
            self._warn("foreign", "not a session_fsm token file")
            return {}
        sessions = data.get("sessions")
        return sessions if isinstance(sessions, dict) else {}

    def _warn(self, kind: str, why: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            emit(get_logger(), "warning", "token_store_ignored", path=str(self.path), why=why)

    def _write(self, sessions: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": "session_fsm/1", "sessions": sessions}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def load(self, key: str) -> StoredSession | None:
        entry = self._read().get(key)
        if entry is None:
            return None
        try:
            return StoredSession.from_json(entry)
        except ValueError:
            self._warn("bad-entry", "an entry is not a stored session")
            return None

    def save(self, key: str, session: StoredSession) -> None:
        with self._write_lock:
            sessions = self._read()
            sessions[key] = session.to_json()
            self._write(sessions)

    def delete(self, key: str) -> None:
        with self._write_lock:
            sessions = self._read()
            if sessions.pop(key, None) is not None:
                self._write(sessions)

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        try:
            self._relogin_lock.acquire(timeout=timeout)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            self._relogin_lock.release()
