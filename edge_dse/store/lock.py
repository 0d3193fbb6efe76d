"""One writer at a time, across processes (docs/invariants.md, 2).

The lock is an OS file lock (flock on POSIX, msvcrt.locking on Windows) on a small file in the
library folder. The OS drops it when the holder's file descriptor closes, including when the
process dies, even by SIGKILL: a crashed writer never leaves a stale lock behind, so there is
no pid-liveness guessing. The holder writes its pid and start time into the file only so that
the error a second writer gets can name who holds it.

The file itself is never deleted: unlinking a lock file races with a process that has just
opened the old one (two holders of two different inodes).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import EdgeDSEError, LibraryLockedError

POLL_S = 0.05  # how often a waiting acquire() retries; small beside any real write

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    # msvcrt locks a byte range, and a locked range cannot be read by others: lock one byte
    # far past the pid record, so waiting processes can still read who holds it.
    _LOCK_OFFSET = 1 << 20

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class WriterLock:
    """An exclusive, cross-process writer lock on `path` (e.g. library/write.lock).

    Re-entrant within one WriterLock object: acquire() while already holding it only counts,
    and the lock is released by the matching last release(). (A Library can then check "is the
    lock free?" with acquire/release even while it is itself writing.) Two WriterLock objects
    on the same file exclude each other, even in one process.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self, timeout: float = 0.0) -> None:
        """Take the lock, waiting up to `timeout` seconds (0: try once). Raises
        LibraryLockedError, naming the holder, when it cannot be had in time."""
        if self._depth:
            self._depth += 1
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
        except PermissionError as exc:
            raise EdgeDSEError(f"cannot write the library at {self.path.parent}: permission denied on "
                               f"{exc.filename or self.path}: give yourself write access to the folder and its files") from None
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    raise self._locked_error()
                time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._depth = fd, 1
        self._write_owner(fd)

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth:
            return
        fd, self._fd = self._fd, None
        assert fd is not None
        try:
            os.ftruncate(fd, 0)  # nobody holds it now: leave no stale owner behind
            _unlock(fd)
        finally:
            os.close(fd)  # closing alone releases it too; unlock first makes it explicit

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    # -- who holds it -----------------------------------------------------------------------
    @staticmethod
    def _write_owner(fd: int) -> None:
        record = json.dumps({"pid": os.getpid(), "since": time.time(), "host": socket.gethostname()})
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record.encode())

    def owner(self) -> dict:
        """What the holder wrote: {"pid", "since", "host"}, or {} while unknown (the holder
        has just taken the lock and not written yet, or nobody holds it)."""
        try:
            data = json.loads(self.path.read_bytes()[:4096] or b"{}")
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _locked_error(self) -> LibraryLockedError:
        info = self.owner()
        pid = info.get("pid", "unknown")
        since = info.get("since")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "unknown time"
        return LibraryLockedError(
            f"library {self.path.parent} is being written by another process (pid {pid}, since {when}): "
            f"wait for it to finish, or retry with --wait SECONDS"
        )

    def __repr__(self) -> str:
        return f"WriterLock({str(self.path)!r}, held={self.held})"
