"""A token store in a JSON file: atomic replace, mode 0600, cross-process locks (filelock).

The file maps store keys to sessions. Writes go to a temporary file in the same folder (created
0600), are flushed and fsynced, then renamed over the old one, so a reader sees the old file or
the new, never half of one, and the mode is 0600 whatever the umask or the old file's mode.
A corrupt, truncated or foreign file is reported once as a warning (never with its contents)
and treated as empty; the next save replaces it. The re-login lock of each key is an OS lock
(``flock``) on a lock file beside it: the OS releases it when a process dies, so a crashed
holder never blocks the others.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .logs import emit, get_logger
from .models import too_deep
from .stores import StoredCooldown, StoredSession, StoreError, cooldown_key

#: Marks a file as ours, so a foreign JSON file is recognised and not misread.
FORMAT = "session_fsm/1"
#: How long a save waits for another process's save (each holds the lock for milliseconds).
WRITE_LOCK_TIMEOUT = 10.0


class FileStore:
    """Store sessions in ``path`` (created with mode 0600 on first save, folder 0700)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._write_lock = FileLock(str(self.path) + ".lock", mode=0o600)
        self._relogin_locks: dict[str, FileLock] = {}
        self._guard = threading.Lock()
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"FileStore({str(self.path)!r})"

    # --- reading -------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        """The sessions in the file; {} (after one warning per kind) when it is not ours.

        StoreError when the path is not a regular file (a FIFO, a device, a folder, a symlink).
        """
        try:
            raw = self._read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            self._warn("unreadable", f"cannot read the file ({type(exc).__name__})")
            return {}
        return self._parse(raw)

    def _read_bytes(self) -> bytes:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, for ever,
        # with the session's lock held. O_NOFOLLOW: a symlink planted at the path is not read.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise self._not_a_file("a symbolic link") from None
            raise
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise self._not_a_file(_kind(mode))
            with os.fdopen(fd, "rb", closefd=False) as f:
                return f.read()
        finally:
            os.close(fd)

    def _not_a_file(self, kind: str) -> StoreError:
        return StoreError(
            f"token file {self.path} is {kind}, not a regular file; refusing to read it",
            hint="remove it, or point the file store at a regular file",
        )

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            if too_deep(raw):  # refused, not decoded into the recursion limit
                raise ValueError("nested too deeply")
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # also UnicodeDecodeError; nested too deeply
            self._warn("corrupt", "not JSON (truncated, corrupt or foreign)")
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            self._warn("foreign", "not a session_fsm token file")
            return {}
        sessions = data.get("sessions")
        if not isinstance(sessions, dict):
            self._warn("foreign", "not a session_fsm token file")
            return {}
        return sessions

    def _warn(self, kind: str, why: str) -> None:
        # Once per kind and store: a bad file is read on every load and must not flood the log.
        with self._guard:
            if kind in self._warned:
                return
            self._warned.add(kind)
        emit(get_logger(), "warning", "token_store_ignored", store="file", path=str(self.path),
             why=why, action="treated as empty; the next save replaces it")  # fmt: skip

    def load(self, key: str) -> StoredSession | None:
        """The session stored under ``key``, or None (also for a bad file or entry)."""
        entry = self._read().get(key)
        if entry is None:
            return None
        try:
            return StoredSession.from_json(entry)
        except ValueError as exc:
            self._warn("bad-entry", f"an entry is not a stored session ({exc})")
            return None

    # --- writing -------------------------------------------------------------------------------

    def _write(self, sessions: dict[str, Any]) -> None:
        folder = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        try:
            os.fchmod(fd, 0o600)  # mkstemp makes 0600 already; say so in case that changes
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": FORMAT, "sessions": sessions}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(folder)  # the rename itself survives a power cut

    @contextlib.contextmanager
    def _writing(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under the write lock; the yielded dict is written back."""
        try:
            # Before the lock: filelock would create a missing folder with the default mode.
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _lock_file_usable(Path(self._write_lock.lock_file))
            with self._write_lock.acquire(timeout=WRITE_LOCK_TIMEOUT):
                sessions = self._read()
                before = dict(sessions)
                try:
                    yield sessions
                    if sessions != before:  # a delete of nothing leaves the file alone
                        self._write(sessions)
                except BaseException:
                    # The frames an error passes through (the caller's, this one, _write's)
                    # hold these dicts: emptied, they show no session token.
                    sessions.clear()
                    before.clear()
                    raise
        except Timeout:
            raise StoreError(f"token file {self.path} stayed locked by another process") from None
        except OSError as exc:  # (its frames hold the sessions written, tokens and all)
            StoreError(f"cannot write token file {self.path}: {_os_error(exc)}").unchained()

    def save(self, key: str, session: StoredSession) -> None:
        """Store ``session`` under ``key`` (atomic replace of the whole file)."""
        with self._writing() as sessions:
            sessions[key] = session.to_json()

    def delete(self, key: str) -> None:
        """Forget ``key``'s session (the file is rewritten only if it held one)."""
        with self._writing() as sessions:
            sessions.pop(key, None)

    # --- the login cool-down (a separate entry, ``<key>:cooldown``, beside the session) ----------

    def load_cooldown(self, key: str) -> StoredCooldown | None:
        """The login cool-down kept for ``key``, or None (also for a bad entry)."""
        entry = self._read().get(cooldown_key(key))
        if entry is None:
            return None
        try:
            return StoredCooldown.from_json(entry)
        except ValueError as exc:
            self._warn("bad-cooldown", f"a cool-down entry is not readable ({exc})")
            return None

    def save_cooldown(self, key: str, cooldown: StoredCooldown) -> None:
        """Keep a login cool-down for ``key`` (atomic replace of the whole file)."""
        with self._writing() as sessions:
            sessions[cooldown_key(key)] = cooldown.to_json()

    def clear_cooldown(self, key: str) -> None:
        """Forget ``key``'s login cool-down."""
        with self._writing() as sessions:
            sessions.pop(cooldown_key(key), None)

    # --- the re-login lock -----------------------------------------------------------------------

    def lock_path(self, key: str) -> Path:
        """The file of ``key``'s re-login lock (one per key: users never wait on each other)."""
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        return self.path.with_name(f"{self.path.name}.{digest}.relogin.lock")

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        """Hold ``key``'s re-login lock; yields False if not acquired within ``timeout``."""
        with self._guard:
            lock = self._relogin_locks.get(key)
            if lock is None:
                lock = self._relogin_locks[key] = FileLock(str(self.lock_path(key)), mode=0o600)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            why = "it is a file, not a folder" if self.path.parent.is_file() else _os_error(exc)
            raise StoreError(
                f"cannot create the token file's folder {self.path.parent}: {why}",
                hint=_WHERE_HINT,
            ) from None
        _lock_file_usable(Path(lock.lock_file))  # at once: filelock would wait out the timeout
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            yield False
            return
        except OSError as exc:
            raise StoreError(f"cannot lock {lock.lock_file}: {_os_error(exc)}") from None
        try:
            yield True
        finally:
            lock.release()


_WHERE_HINT = "give the store a path in a folder this process can write (file:PATH)"


def _os_error(exc: OSError) -> str:
    """``No such file or directory (ENOENT)``: the OS's words, never a file's contents."""
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return f"{exc.strerror} ({name})" if exc.strerror else name


def _lock_file_usable(path: Path) -> None:
    """StoreError naming ``path`` and the OS error unless the lock file can be opened (made if
    missing). filelock retries such a failure until its timeout, as if another process held
    the lock; this says at once what is wrong."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(
            f"cannot create the lock file {path}: {_os_error(exc)}", hint=_WHERE_HINT
        ) from None
    os.close(fd)


def _kind(mode: int) -> str:
    """What a non-regular file is, for the message."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
