"""An exclusive hold on a file for one run, released when its process ends however it ends.

A SQLite journal (and the folder ``hailuo batch`` writes its results to) is one run's at a
time. The hold is an operating-system lock on a lock file beside it (``NAME.lock``), so a
killed process holds nothing: the kernel drops the lock with the process, and the next run
takes it over (the file itself stays, and is rewritten). The lock file names its holder
(host, process id, since when) for the error a second run gets.

Where it works:

- POSIX (Linux, macOS, the BSDs): ``flock``, whose locks belong to an open file, so two holds
  in one process exclude each other as two processes do. On a network file system (NFS)
  Linux emulates it with byte-range locks, which a process's own holds do not exclude:
  those are caught by the process's own register of holds, kept here too.
- Windows: ``msvcrt.locking`` on one byte far past the holder's details (Windows locks are
  mandatory: a locked byte cannot even be read). Not exercised by the test suite, which runs
  on Linux.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from ._exceptions import JournalError, JournalInUseError

__all__ = ["FileHold", "hold_file"]

if sys.platform == "win32":  # pragma: no cover - not where the tests run
    import msvcrt
else:
    import fcntl

# The byte Windows locks: past any holder's details, so they stay readable.
_WINDOWS_LOCKED_BYTE = 1 << 20
_MAX_HOLDER_BYTES = 4096

# The holds this process has, by lock file: what flock on NFS (or no OS lock) cannot see.
_held: dict[str, str] = {}
_held_guard = threading.Lock()


class FileHold:
    """One run's hold on a file; :meth:`release` (or the process's end) lets it go."""

    def __init__(self, lock_path: Path, fd: int, key: str) -> None:
        self.lock_path = lock_path
        self._fd: int | None = fd
        self._key = key

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd is not None

    def release(self) -> None:
        """Let the file go (safe to call twice)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with _held_guard:
            _held.pop(self._key, None)
        # Closing the file drops the lock (flock and msvcrt alike).
        os.close(fd)


def hold_file(path: str | os.PathLike[str], *, what: str = "the journal") -> FileHold:
    """Hold ``path`` for this run, through the lock file ``path + ".lock"``.

    Raises :class:`JournalInUseError` (naming the holder) when another run holds it, in
    this process or another; :class:`JournalError` when the lock file cannot be made.
    """
    target = Path(path)
    lock_path = target.with_name(target.name + ".lock")
    shown = os.fspath(target)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise JournalError(f"cannot make the lock file {os.fspath(lock_path)}: {exc}") from exc
    key = os.path.realpath(lock_path)
    with _held_guard:
        holder = _held.get(key)
        if holder is None:
            if _lock(fd):
                _held[key] = _write_holder(fd)
                return FileHold(lock_path, fd, key)
            holder = _read_holder(fd)
    os.close(fd)
    raise JournalInUseError(shown, holder, what=what)


def _lock(fd: int) -> bool:
    """Take the OS lock without waiting; False when someone else has it."""
    try:
        if sys.platform == "win32":  # pragma: no cover - not where the tests run
            os.lseek(fd, _WINDOWS_LOCKED_BYTE, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _write_holder(fd: int) -> str:
    """Write who holds the file into the lock file; return it as people read it."""
    since = datetime.now(timezone.utc)
    details = {"host": socket.gethostname(), "pid": os.getpid(), "since": since.isoformat()}
    data = json.dumps(details).encode()
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
    except OSError:
        pass  # the details are a courtesy: the lock is what keeps others out
    return _describe(details)


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        details = json.loads(os.read(fd, _MAX_HOLDER_BYTES) or b"null")
    except (OSError, ValueError):
        details = None
    if not isinstance(details, dict):
        return "a process that has not written its details yet"
    return _describe(details)


def _describe(details: dict[str, object]) -> str:
    since = details.get("since")
    when = ""
    if isinstance(since, str):
        try:
            when = datetime.fromisoformat(since).strftime(", since %Y-%m-%d %H:%M:%S UTC")
        except ValueError:
            when = ""
    return f"host {details.get('host', '?')}, pid {details.get('pid', '?')}{when}"
