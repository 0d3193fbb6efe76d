"""Find the files of a folder that can be indexed, and say why the others cannot."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DEFAULT_IGNORE_DIRS = frozenset({
    ".git", ".hg", ".svn", ".bzr", "CVS", "node_modules", "__pycache__", ".venv", "venv", "env",
    ".tox", ".nox", "build", "dist", "target", ".mypy_cache", ".pytest_cache", ".ruff_cache",
    "site-packages", ".idea", ".vscode", ".cache", ".eggs", "bower_components",
})
DEFAULT_MAX_BYTES = 50 * 1024 * 1024

TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".rst", ".tex", ".csv", ".tsv", ".log", ".org", ".adoc"})
MARKUP_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
CODE_SUFFIXES = frozenset({
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".scala", ".c", ".h",
    ".cpp", ".hpp", ".cc", ".cxx", ".cs", ".go", ".rs", ".rb", ".php", ".swift", ".lua", ".r", ".jl",
    ".sh", ".bash", ".zsh", ".ps1", ".sql", ".css", ".scss", ".toml", ".yaml", ".yml", ".json", ".ini",
    ".cfg", ".conf", ".xml", ".vue", ".svelte", ".dart", ".m", ".pl", ".ex", ".exs", ".erl", ".hs", ".clj",
})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | MARKUP_SUFFIXES | CODE_SUFFIXES | {".pdf", ".docx"}
# Common text files that carry no suffix.
SUPPORTED_NAMES = frozenset({"readme", "license", "licence", "copying", "authors", "changelog", "changes",
                             "news", "todo", "makefile", "dockerfile", "notice", "contributing"})


@dataclass(frozen=True)
class FoundFile:
    path: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str
    # Refused by rule (outside the folder, too large, not a regular file), not by a passing
    # problem: whatever was indexed of it before goes too.
    policy: bool = False


class Refused(Exception):
    """A file refused by rule when it is opened; str(error) is the reason recorded for it."""


def inside(path: str, real_root: str) -> bool:
    return path == real_root or path.startswith(real_root.rstrip(os.sep) + os.sep)


def _fd_path(fd: int, opened: str) -> str:
    """The real path of an open file: the kernel's name for it where it tells (Linux, macOS),
    else the resolved name it was opened by, if that still names the same file."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
    try:
        import fcntl

        return os.fsdecode(fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024)).rstrip(b"\0"))
    except (AttributeError, OSError, ImportError):
        pass
    st, real = os.fstat(fd), os.path.realpath(opened)
    same = os.stat(real)
    return real if (st.st_dev, st.st_ino) == (same.st_dev, same.st_ino) else ""


def read_inside(path: Path, real_root: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a file found by discover(), checked again on the open file itself: the
    path may have been swapped since the scan (for a symlink to a secret, a FIFO that would
    block the open forever, a huge file). Raises Refused(reason) for a file the rules refuse,
    FileNotFoundError for one gone, OSError for one unreadable.

    The last component is opened without following a symlink (a symlink inside the folder is
    resolved first, and its target checked), without blocking (a FIFO opens at once), and the
    open descriptor is checked: a regular file, within the size limit, really inside the folder."""
    target = os.path.realpath(path)
    if not inside(target, real_root):
        raise Refused("symlink points outside the folder")
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a symlink after it was resolved
            raise Refused("symlink swapped in while syncing") from exc
        if exc.errno == errno.ENXIO:  # a socket
            raise Refused("not a regular file (pipe, socket or device)") from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("not a regular file (pipe, socket or device)")
        if st.st_size > max_bytes:
            raise Refused(f"too large: {_mb(st.st_size)} > {_mb(max_bytes)} limit (max_bytes)")
        if not inside(_fd_path(fd, target), real_root):
            raise Refused("symlink points outside the folder")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:  # grew while being read
            raise Refused(f"too large: over the {_mb(max_bytes)} limit (max_bytes)")
        return data
    finally:
        os.close(fd)


def is_supported(path: Path) -> bool:
    name = path.name.lower()
    suffix = path.suffix.lower()
    return suffix in SUPPORTED_SUFFIXES or (not suffix and name in SUPPORTED_NAMES)


def _decodable(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as lone surrogates
        return False


def printable(path: Path) -> Path:
    """A path holding undecodable bytes, as text that SQLite can store and a user can read
    (each bad byte as \\xNN): a skipped file must be recorded under a name, or the sync fails."""
    return Path(os.fsencode(path).decode("utf-8", "backslashreplace"))


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def discover(root: Path, *, ignore_dirs=DEFAULT_IGNORE_DIRS, max_bytes: int = DEFAULT_MAX_BYTES,
             include_hidden: bool = False) -> Iterator[FoundFile | SkippedFile]:
    """Yield the supported files under `root` in sorted order, and the ones that cannot be read.

    Directory symlinks are never followed (no loops, no escaping the folder); a file symlink is
    followed only when its target is inside `root`.
    """
    root = Path(os.path.abspath(root))
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    real_root = os.path.realpath(root)
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield SkippedFile(folder, f"folder unreadable: {exc.strerror or exc}")
            continue
        subdirs = []
        for entry in entries:
            name = entry.name
            path = Path(entry.path)
            if name.startswith(".") and not include_hidden:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if name in ignore_dirs:
                        continue
                    if not _decodable(name):  # every path under it would be undecodable too
                        yield SkippedFile(printable(path), "folder name is not valid text (undecodable bytes): "
                                                           "its files are skipped")
                        continue
                    subdirs.append(path)
                    continue
                if not is_supported(path):
                    continue
                if not _decodable(name):
                    yield SkippedFile(printable(path), "file name is not valid text (undecodable bytes)")
                    continue
                if entry.is_symlink():
                    try:
                        target = os.path.realpath(path, strict=True)
                    except OSError as exc:
                        yield SkippedFile(path, "symlink loop" if exc.errno == errno.ELOOP else "dangling symlink",
                                          policy=True)
                        continue
                    if not inside(target, real_root):
                        yield SkippedFile(path, "symlink points outside the folder", policy=True)
                        continue
                st = os.stat(path)  # follows a (checked) symlink
            except OSError as exc:
                yield SkippedFile(path, f"cannot stat: {exc.strerror or exc}")
                continue
            if not stat.S_ISREG(st.st_mode):
                yield SkippedFile(path, "not a regular file (pipe, socket or device)", policy=True)
            elif st.st_size > max_bytes:
                yield SkippedFile(path, f"too large: {_mb(st.st_size)} > {_mb(max_bytes)} limit (max_bytes)", policy=True)
            else:
                yield FoundFile(path, st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subdirs))
