"""Extraction on a budget: a file may cost this much time and memory, no more.

The PDF and DOCX parsers can be made to work without end by a small file: a 224 KB PDF whose
1,000 pages share one 70 MB stream costs seconds a page; a 1.5 MB .docx holding 190 MB of tiny
paragraphs grew python-docx past 4 GB. Neither can be stopped from inside (a parser call is
not interruptible), so they run in a worker process (one per sync, started at its first PDF
or DOCX, started again after a file it could not finish): its address space is capped
(RLIMIT_AS) and the library kills it when a file takes longer than its time budget. Such a
file is recorded as failed with the budget it broke, and the sync goes on (a new worker starts
for the next file). Plain text and HTML are parsed in the library's process: their cost is
linear in their size, which the size limit bounds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

from ..errors import ExtractError
from .discover import content_name
from .extract import Extracted, Heading, extract

# Seconds one file may take to extract; a long but real PDF (hundreds of pages) takes seconds.
EXTRACT_SECONDS = 120.0
# Address space of the worker: a 50 MB (the size limit) PDF or DOCX extracts well within it.
EXTRACT_MEMORY_BYTES = 2 * 1024 ** 3
# The parsers that run in the worker.
ISOLATED_SUFFIXES = frozenset({".pdf", ".docx"})
# How the desktop bundle (a frozen program: no `python -m`) is asked to be the worker.
WORKER_FLAG = "--edge-dse-extract-worker"


def _mib(n: float) -> str:
    return f"{n / 1024 / 1024:.0f} MB"


def worker_command() -> list[str]:
    # A plain child process, not multiprocessing: its spawn re-runs the caller's __main__, which
    # breaks any script that uses the Library without an `if __name__ == "__main__"` guard.
    if getattr(sys, "frozen", False):
        return [sys.executable, WORKER_FLAG]
    return [sys.executable, "-m", "edge_dse.ingest.budget"]


def serve(memory_bytes: int) -> None:
    """The worker, on stdin/stdout: extract each (name, bytes) it is sent; answer
    ("ok", text, headings) or ("error", reason)."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    except (ImportError, ValueError, OSError):  # no such limit here: the time budget still holds
        pass
    # The answers get their own descriptor; whatever a parser prints goes to stderr.
    answers = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    requests = Connection(0, writable=False)
    while True:
        try:
            name, data = requests.recv()
        except EOFError:  # the library closed the pipe
            return
        try:
            result = extract(Path(name), data)
            answer = ("ok", result.text, [(h.offset, h.level, h.title) for h in result.headings])
        except (ExtractError, MemoryError) as exc:  # a parser's MemoryError comes wrapped in an ExtractError
            over = isinstance(exc, MemoryError) or isinstance(exc.__cause__, MemoryError)
            answer = ("error", f"over the memory budget: needs more than {_mib(memory_bytes)} to extract" if over
                      else str(exc))
        del data
        answers.send(answer)


class BudgetedExtractor:
    """extract() with a time and memory budget per file (see the module docstring). Close it
    (or use it as a context manager) to stop its worker."""

    def __init__(self, seconds: float = EXTRACT_SECONDS, memory_bytes: int = EXTRACT_MEMORY_BYTES) -> None:
        self.seconds = seconds
        self.memory_bytes = memory_bytes
        self._worker = None  # (process, requests, answers), started at the first PDF or DOCX

    def __call__(self, path: Path, data: bytes) -> Extracted:
        if content_name(Path(path)).suffix.lower() not in ISOLATED_SUFFIXES:
            return extract(path, data)
        if os.name == "nt":  # no pipe Connection on a plain child's pipes there: extracted in-process
            return extract(path, data)
        _, requests, answers = self._start()
        try:
            requests.send((str(path), data))
            answered = answers.poll(self.seconds)
            answer = answers.recv() if answered else None
        except (EOFError, OSError):  # the worker died: killed by the OS for its memory, or crashed
            self._kill()
            raise ExtractError(f"over the memory budget: the extractor died (limit {_mib(self.memory_bytes)})") from None
        if answer is None:
            self._kill()
            raise ExtractError(f"over the time budget: extraction took more than {self.seconds:g} s")
        if answer[0] == "error":
            raise ExtractError(answer[1])
        return Extracted(answer[1], [Heading(*h) for h in answer[2]])

    def _start(self):
        if self._worker is None or self._worker[0].poll() is not None:
            self.close()
            # edge_dse importable in the worker even when the caller found it on its own sys.path.
            package_parent = str(Path(__file__).resolve().parents[2])
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
            proc = subprocess.Popen([*worker_command(), str(self.memory_bytes)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, close_fds=True, env=env)
            # The Connections own the pipes' descriptors from here on.
            requests = Connection(os.dup(proc.stdin.fileno()), readable=False)
            answers = Connection(os.dup(proc.stdout.fileno()), writable=False)
            proc.stdin.close()
            proc.stdout.close()
            self._worker = (proc, requests, answers)
        return self._worker

    def _kill(self) -> None:
        if self._worker is not None:
            self._worker[0].kill()
        self.close()

    def close(self) -> None:
        if self._worker is None:
            return
        proc, requests, answers = self._worker
        self._worker = None
        requests.close()  # an idle worker exits on its own
        answers.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # busy on a file over budget: the only way to stop a parser mid-call
            proc.kill()
            proc.wait()

    def __enter__(self) -> "BudgetedExtractor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
