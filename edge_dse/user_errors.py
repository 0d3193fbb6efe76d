"""Errors met mid-way that the user can fix, turned into one line that names the fix (a full
disk, a damaged catalog) instead of a raw sqlite3/OS error: a traceback on the command line."""

from __future__ import annotations

import errno
import functools

from .errors import EdgeDSEError


def _sqlite_code(exc: BaseException) -> int:
    """The primary SQLite result code of an error (Python >= 3.11 gives the extended one)."""
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


def disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return _sqlite_code(exc) == 13 or "disk is full" in str(exc)  # SQLITE_FULL


def damaged(exc: BaseException) -> bool:
    """SQLite errors that mean the catalog file is damaged. quick_check on open sees broken page
    structure, not bytes damaged inside a record: those show only when a query reads them."""
    if _sqlite_code(exc) in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
        return True
    return any(s in str(exc) for s in ("malformed", "not a database", "Could not decode to UTF-8"))


def user_errors(method):
    """Decorates a method of a Library (an object with `path`, its folder, and `catalog`): a full
    disk or a damaged catalog met in it raises a one-line EdgeDSEError that names the fix."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        import sqlite3

        from .store.catalog import corrupt_error

        try:
            return method(self, *args, **kwargs)
        except (sqlite3.DatabaseError, OSError) as exc:
            if disk_full(exc):
                raise EdgeDSEError(
                    f"disk full while writing library {self.path}: free some space and run the command again "
                    f"(everything committed so far is kept; `edge-dse sync` goes on where it stopped)"
                ) from exc
            if isinstance(exc, sqlite3.DatabaseError) and damaged(exc):
                # One short line: a decode error quotes the damaged text, newlines and all.
                raise corrupt_error(self.catalog.path, " ".join(str(exc).split())[:120]) from exc
            raise

    return wrapper
