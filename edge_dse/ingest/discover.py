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
class OtherType:
    """A file not indexed for its type (an image, an archive, a binary with no suffix): not
    an error, but counted, so a user is told what was left out."""

    path: Path
    kind: str  # ".png", ".tar.gz", "no suffix (not text)"


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str
    # Refused by rule (outside the folder, too large, not a regular file), not by a passing
    # problem: whatever was indexed of it before goes too.
    policy: bool = False


# How a file is opened to be read: not through a symlink (the last component), not waiting on a
# FIFO's writer, not leaked into child processes; see read_inside.
OPEN_CHECKED = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                | getattr(os, "O_CLOEXEC", 0))


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
        fd = os.open(target, OPEN_CHECKED)
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


def content_name(path: Path) -> Path:
    """The name a file's content goes by: a gzip-compressed file's without its ".gz"."""
    return path.with_suffix("") if path.suffix.lower() == ".gz" else path


def _sniffable(path: Path) -> bool:
    """A name that says nothing of its content, whose content is looked at: no suffix
    (`copyright`, `INSTALL`), or a known name with a tag (`README.Debian`, `NEWS.old`)."""
    return not path.suffix or path.name.lower().split(".")[0] in SUPPORTED_NAMES


def is_supported(path: Path) -> bool:
    """Whether a name alone says the file is indexed (see kind_of for names that do not)."""
    inner = content_name(path)
    if inner.suffix.lower() == ".gz":  # one layer of gzip, no more
        return False
    return inner.suffix.lower() in SUPPORTED_SUFFIXES or (not inner.suffix and inner.name.lower() in SUPPORTED_NAMES)


def skipped_kind(path: Path) -> str | None:
    """None for a file whose name says it is indexed; "?" for one whose content decides
    (sniff it); else the kind it is skipped as, for counting: its suffix (".png", ".tar.gz")."""
    if is_supported(path):
        return None
    inner = content_name(path)
    if _sniffable(inner):
        return "?"
    return "".join(s.lower() for s in path.suffixes[-2:]) if inner is not path else path.suffix.lower()


def _sniff_text(path: Path) -> bool:
    """Whether a file (once gunzipped) starts like text: its first 8 KB hold no NUL and few
    control characters. Opened without blocking or following a link (see read_inside)."""
    from .extract import looks_binary

    try:
        fd = os.open(path, OPEN_CHECKED)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            if path.suffix.lower() == ".gz":
                import gzip
                import zlib

                try:
                    head = gzip.GzipFile(fileobj=fh).read(8192)
                except (OSError, EOFError, zlib.error):
                    return False
            else:
                head = fh.read(8192)
    finally:
        os.close(fd)
    return bool(head.strip()) and not looks_binary(head)


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
    """Yield the supported files under `root` in sorted order, the ones that cannot be read,
    and those of other types (OtherType). A file whose name does not tell its type (no suffix)
    is indexed when it starts like text.

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
                kind = skipped_kind(path)
                if kind not in (None, "?"):
                    yield OtherType(path, kind)
                    continue
                if not _decodable(name):
                    yield SkippedFile(printable(path), "file name is not valid text (undecodable bytes)")
                    continue
                if entry.is_symlink():
                    if kind == "?" and not os.path.isfile(path):
                        continue  # a link with no suffix to a folder (never followed) or to nothing: not a file
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
            elif kind == "?" and not _sniff_text(Path(os.path.realpath(path))):  # a symlink's target is checked above
                yield OtherType(path, f"{content_name(path).suffix.lower() or 'no suffix'} (not text)")
            else:
                yield FoundFile(path, st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subdirs))
