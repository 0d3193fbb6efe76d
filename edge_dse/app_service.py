"""What the web UI (edge_dse/app.py) calls, without gradio: searching with and without the
teacher, changing the library, opening a hit, reading the model cards, checking the host.

Kept apart from the page so it can be tested without a browser and reused by other front ends.

Threads: gradio runs each event in a worker thread and lets different events run at once, so a
search works while a sync runs. Searches go through one read-only Library (it reloads the HNSW
cache when a writer saved a newer one); each add/sync/remove opens its own writing Library,
which takes the cross-process writer lock, so another `edge-dse` process writing the same
library gives a one-line message instead of a clash.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from . import config, models
from .errors import EdgeDSEError
from .library import MAX_QUERY_CHARS, Hit, Library
from .modes import DEFAULT_MODE

if TYPE_CHECKING:
    from .rerank import Progress, Reranker

MAX_K = 50
# Characters of the file shown on each side of an opened chunk.
CONTEXT_CHARS = 1500


# -- pure helpers ------------------------------------------------------------------------------
def movement(hit: Hit, k: int) -> str:
    """How far a reranked hit moved from its rank in the first column: ↑n, ↓n, =, or "new" when
    the first column ranked it below the k it showed."""
    if hit.first_rank is not None and hit.first_rank > k:
        return "new"
    return hit.moved()


def agreement(first: Sequence[Hit], teacher: Sequence[Hit], k: int) -> tuple[float, float | None]:
    """(overlap@k, Kendall tau) of two top-k lists. Tau is computed over the chunks both lists
    hold (None when fewer than two are shared): 1 = same order, -1 = reversed."""
    s = [h.chunk_id for h in first[:k]]
    t_pos = {h.chunk_id: i for i, h in enumerate(teacher[:k])}
    shared = [c for c in s if c in t_pos]  # in the first list's order
    overlap = len(shared) / k if k else 0.0
    if len(shared) < 2:
        return overlap, None
    concordant = discordant = 0
    for i in range(len(shared)):
        for j in range(i + 1, len(shared)):
            if t_pos[shared[i]] < t_pos[shared[j]]:
                concordant += 1
            else:
                discordant += 1
    return overlap, (concordant - discordant) / (concordant + discordant)


TIMING_LABELS = [("model_load_ms", "model load"), ("encode_ms", "encode"), ("ann_ms", "ANN"),
                 ("keyword_ms", "keyword"), ("fetch_ms", "fetch"), ("teacher_load_ms", "teacher load"),
                 ("rerank_ms", "rerank")]


def format_timings(timings: dict[str, float]) -> str:
    """One line, stages in pipeline order: 'encode 3.1 ms · ANN 0.4 ms · ... · total 4.0 ms'."""
    parts = [f"{label} {timings[key]:.1f} ms" for key, label in TIMING_LABELS if key in timings]
    total = sum(timings.get(key, 0.0) for key, _ in TIMING_LABELS)
    return " · ".join(parts + [f"total {total:.1f} ms"])


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool, trusted_hosts: Sequence[str] = ()) -> str:
    """"" for a loopback host; a warning to print for another one the user allowed; raises for
    another one not allowed (the page has no login: anyone reaching it reads the indexed files),
    and for names other machines would use (`trusted_hosts`) without allow_remote."""
    if trusted_hosts and not allow_remote:
        raise EdgeDSEError(f"--trusted-host {trusted_hosts[0]} lets other machines reach the page: "
                           "add --allow-remote if you mean it")
    if is_loopback(host):
        return ""
    if not allow_remote:
        raise EdgeDSEError(f"refusing to listen on {host}: anyone who can reach it could search and read your "
                           "files; use the default 127.0.0.1, or add --allow-remote if you mean it")
    return (f"warning: listening on {host}: anyone who can reach this address can search and read your "
            "indexed files (there is no login)")


# -- model cards -------------------------------------------------------------------------------
@dataclass
class Card:
    folder: Path
    card: dict
    markdown: str  # card.md, "" when the folder has none
    roles: list[str] = field(default_factory=list)  # "search encoder", "teacher (reranker)"
    label: str = ""  # models.label: "baseline (default encoder)"
    duty: str = ""  # models.role_text: what a model in that role does

    def summary(self) -> str:
        """The card's key facts in one Markdown line (whatever the card holds)."""
        c = self.card
        mb = sum(f.get("bytes", 0) for f in (c.get("files") or {}).values() if isinstance(f, dict)) / 1e6
        facts = [f"kind {c['kind']}" if c.get("kind") else "",
                 f"{c['dim']}-d" if c.get("dim") and c.get("kind") != "cross-encoder" else "",  # one logit, not a vector
                 f"{c['pooling']} pooling" if c.get("pooling") else "",
                 f"max {c['max_length']} tokens" if c.get("max_length") else "",
                 f"{mb:.1f} MB of files" if mb else ""]
        return " · ".join(f for f in facts if f)


# How this app uses a model (beside its role, which models.py derives).
ENCODER_ROLE, TEACHER_ROLE = "search encoder of this library", "teacher (reranker)"


def read_cards(model: str | os.PathLike | None, teacher: str | os.PathLike | None,
               library_model_id: str | None = None) -> list[Card]:
    """Every model card under assets/ plus the model and teacher in use (when they live
    elsewhere), each marked with the role it plays in this app. The search encoder is the one
    whose id the library recorded when there is a library (it keeps the model that built it),
    else the one a new library would get."""
    from .rerank import resolve_teacher_dir

    def card_of(folder: Path) -> dict:
        try:
            return models.read_card(folder)
        except EdgeDSEError as exc:
            return {"id": folder.name, "error": str(exc)}

    folders = {p.resolve(): card_of(p) for p in sorted(config.assets_dir().glob("*")) if models.has_card(p)}
    roles: dict[Path, list[str]] = {}
    for role, resolve in ((ENCODER_ROLE, lambda: config.resolve_model_dir(model)),
                          (TEACHER_ROLE, lambda: resolve_teacher_dir(teacher))):
        try:
            path = resolve().resolve()
        except (FileNotFoundError, EdgeDSEError):
            continue
        if role == ENCODER_ROLE and library_model_id:
            path = next((p for p, c in folders.items() if c.get("id") == library_model_id), path)
        if models.has_card(path):
            roles.setdefault(path, []).append(role)
            folders.setdefault(path, card_of(path))

    def labelled(folder: Path, card: dict) -> Card:
        # The teacher in use is the teacher whatever its kind (a bi-encoder can stand in).
        as_teacher = models.TEACHER if TEACHER_ROLE in roles.get(folder, []) else None
        try:
            mc = models.ModelCard.from_dict(card, folder, role=as_teacher)
            label, duty = models.label(mc), models.role_text(mc.role)
        except EdgeDSEError:
            label, duty = folder.name, ""
        md = folder / "card.md"
        return Card(folder, card, md.read_text(encoding="utf-8") if md.is_file() else "", roles.get(folder, []),
                    label, duty)

    return [labelled(folder, card) for folder, card in folders.items()]


# -- the service behind the page -------------------------------------------------------------------
@dataclass
class SearchResult:
    first: list[Hit]  # the first column: the hits in the search's own order (the encoder, BM25 or both)
    teacher: list[Hit] | None  # None: no rerank asked for, or it could not run (teacher_note says why)
    timings: dict[str, float]
    note: str = ""  # about the query or the first column's results
    teacher_note: str = ""  # why there is no teacher column
    encoder: str = ""  # id of the bi-encoder that ranked the first column ("" in keyword mode: BM25 did)
    ranked_by: str = ""  # who ranked the first column, for people: "baseline (default encoder)"
    ranked_by_short: str = ""  # the same in a word, where a hit says where it came from: "baseline"
    reranked_by: str = ""  # who ordered the teacher column: "teacher (reranker)" ("" without one)
    reranked_by_short: str = ""



class TeacherLoad:
    """The teacher (a Reranker), loaded once in a background thread. The UI starts the load when
    it opens, so the first rerank does not pay for it; a rerank asked for before the load is done
    waits for that load instead of starting another. A load that failed is reported to the
    searches that waited on it, and the next rerank tries again (a teacher fixed meanwhile)."""

    def __init__(self, teacher: str | os.PathLike | None, threads: int | None) -> None:
        self.teacher, self.threads = teacher, threads
        self.loads = 0  # loads started
        self._lock = threading.Lock()
        self._done: threading.Event | None = None  # of the load under way or the last one
        self._result: dict = {}  # the last load's "reranker" or "error"

    @property
    def done(self) -> threading.Event | None:
        """The Event of the load under way or the last one (None: none started); starts nothing."""
        return self._done

    def start(self) -> threading.Event:
        """Start loading unless a load is under way or done; the Event is set when it ends."""
        return self._current()[0]

    def _current(self) -> tuple[threading.Event, dict]:
        """The load under way or done (started here when there is none): its Event and result."""
        with self._lock:
            if self._done is None:
                self._done, self._result = threading.Event(), {}
                self.loads += 1
                threading.Thread(target=self._load, args=(self._done, self._result), name="teacher-load",
                                 daemon=True).start()
            return self._done, self._result

    def _load(self, done: threading.Event, result: dict) -> None:
        from .rerank import Reranker

        try:
            result["reranker"] = Reranker(self.teacher, threads=self.threads)
        except BaseException as exc:  # handed to the waiting search: a waiter must never hang
            result["error"] = exc
        finally:
            done.set()

    def get(self) -> tuple["Reranker", float]:
        """The loaded teacher (starting or waiting for its load), and the ms this call waited."""
        done, result = self._current()
        waited_ms = 0.0
        if not done.is_set():
            t0 = time.perf_counter()
            done.wait()
            waited_ms = (time.perf_counter() - t0) * 1000
        if "error" in result:
            with self._lock:
                if self._done is done:
                    self._done = None  # the next rerank loads again
            raise result["error"]
        return result["reranker"], waited_ms


class Service:
    """What the page calls: one read-only Library for searches, a writing one per change."""

    def __init__(self, library: str | os.PathLike | None = None, *, teacher: str | os.PathLike | None = None,
                 model: str | os.PathLike | None = None, threads: int | None = None, wait: float = 0.0) -> None:
        self.path = Path(library).expanduser() if library is not None else config.default_library_dir()
        self.model = model
        self.teacher = teacher
        self.threads = threads
        self.wait = wait  # seconds a change waits for another process writing the library
        self._reader: Library | None = None
        self._read_lock = threading.Lock()  # one search at a time through the shared reader
        self._write_lock = threading.Lock()  # one add/sync/remove at a time in this process
        self._teacher_problem = self._check_teacher()
        self.teacher_load = TeacherLoad(teacher, threads)

    def preload_teacher(self) -> threading.Event | None:
        """Load the teacher in the background now (the UI does at start-up) so that the first
        rerank need not; returns the Event set when that load ends (None: there is no teacher)."""
        return None if self.teacher_problem else self.teacher_load.start()

    def _check_teacher(self) -> str:
        """Why reranking is unavailable ("" when a teacher folder is there). Checked without
        loading the model, so the page opens fast; a broken teacher still reports on first use."""
        from .rerank import resolve_teacher_dir

        try:
            path = resolve_teacher_dir(self.teacher)
        except EdgeDSEError as exc:
            return str(exc)
        if not models.has_card(path):
            return f"{path} holds no {models.CARD_FILE}: pass a teacher folder made by `edge-dse distill` (--teacher PATH)"
        return ""

    @property
    def teacher_problem(self) -> str:
        # Looked at again while there is a problem: a teacher installed meanwhile is picked up.
        if self._teacher_problem:
            self._teacher_problem = self._check_teacher()
        return self._teacher_problem

    # -- reading --------------------------------------------------------------------------------
    def reader(self) -> Library:
        if self._reader is None:
            if not Library.exists(self.path):
                raise EdgeDSEError(f"the library at {self.path} is empty: add a folder in the Library tab")
            self._reader = Library(self.path, model=self.model, readonly=True, progress=False, threads=self.threads)
        return self._reader

    def search(self, query: str, k: int = 10, mode: str = DEFAULT_MODE, rerank: bool = False,
               on_progress: "Progress | None" = None) -> SearchResult:
        """The encoder's top k and, with rerank, the teacher's order of the encoder's top hits (as
        many as its card's depth, at least k, so a hit below the cut can come up).
        `on_progress(done, total)` hears of each batch the teacher scores."""
        query = query or ""
        note = ""
        if len(query) > MAX_QUERY_CHARS:
            note = f"the query was {len(query):,} characters: only its first {MAX_QUERY_CHARS:,} were used"
            query = query[:MAX_QUERY_CHARS]
        if not query.strip():
            raise EdgeDSEError("type a query first (what you are looking for, in your own words)")
        k = max(1, min(int(k), MAX_K))
        teacher_note = f"reranking is off: {self.teacher_problem}" if rerank and self.teacher_problem else ""
        reranker, timings = None, {}
        if rerank and not teacher_note:
            try:  # waited for outside the read lock: searches without the teacher go on meanwhile
                reranker, waited_ms = self.teacher_load.get()
            except EdgeDSEError as exc:  # a broken teacher: the encoder's results still show
                teacher_note = f"the teacher failed: {exc}"
            else:
                if waited_ms:  # this search waited for the load: part of its cost
                    timings["teacher_load_ms"] = waited_ms
        with self._read_lock:
            lib = self.reader()
            hits = lib.search(query, k=max(k, reranker.default_depth) if reranker else k, mode=mode)
            timings.update(hits.timings)
            teacher_hits = None
            if reranker and hits:
                try:
                    reranked = lib.rerank(query, hits, teacher=reranker, on_progress=on_progress)
                except EdgeDSEError as exc:
                    teacher_note = f"the teacher failed: {exc}"
                else:
                    timings.update(reranked.timings)
                    teacher_hits = list(reranked[:k])
            if not hits:
                empty = not lib.status()["chunks"]
                note = note or ("the library has no indexed files yet: add a folder in the Library tab" if empty
                                else "no results: try other words, or the keyword or hybrid mode")
        timings.pop("total_ms", None)  # the search's own total; format_timings adds all stages
        return SearchResult(list(hits[:k]), teacher_hits, timings, note, teacher_note,
                            "" if mode == "keyword" else lib.encoder.id, *lib.ranked_by(mode),
                            models.label(reranker.model) if teacher_hits is not None else "",
                            models.label(reranker.model, short=True) if teacher_hits is not None else "")

    def cards(self) -> list[Card]:
        try:
            info = self.status()
        except EdgeDSEError:
            info = None
        return read_cards(self.model, self.teacher, info["model"]["model_id"] if info else None)

    def status(self, errors_limit: int | None = None) -> dict | None:
        if not Library.exists(self.path):
            return None
        with self._read_lock:
            return self.reader().status(errors_limit)

    def open_chunk(self, path: str, start: int, end: int) -> tuple[str, str, str, int, int]:
        """(text before, the chunk, text after, chunk start, chunk end) of an indexed file.

        Only a file of this library inside one of its folders is read: the page (or a crafted
        API call) could otherwise make it read any file the user can."""
        from .ingest.budget import BudgetedExtractor
        from .ingest.discover import Refused, read_inside

        with self._read_lock:
            lib = self.reader()
            folders = [Path(f).resolve() for f in lib.catalog.folders()]
            known = lib.catalog.file_state(str(path)) is not None
            max_bytes = lib.max_file_bytes
        # A path the library does not hold (a NUL in it included) is refused before it is looked at.
        target = Path(path).resolve() if known else None  # follows "..", and symlinks out of the folder
        root = next((f for f in folders if target and target.is_relative_to(f)), None)
        if root is None:
            raise EdgeDSEError(f"refused to open {path}: it is not a file in this library's folders "
                               "(open hits from the search results)")
        try:
            # Checked on the open file, and read only up to the indexer's size limit: a file
            # swapped or grown since it was indexed is not read whole.
            data = read_inside(target, str(root), max_bytes)
        except FileNotFoundError:
            raise EdgeDSEError(f"{path} is gone since it was indexed: sync the library (Library tab)") from None
        except Refused as exc:
            raise EdgeDSEError(f"refused to open {path}: {exc}") from None
        except OSError as exc:
            raise EdgeDSEError(f"cannot read {path}: {exc.strerror or exc}") from None
        with BudgetedExtractor() as extract:  # a PDF or DOCX costs the page no more than it costs a sync
            text = extract(target, data).text
        start, end = max(0, int(start)), min(len(text), int(end))
        if start >= end:
            raise EdgeDSEError(f"{path} changed since it was indexed: sync the library (Library tab)")
        a, b = max(0, start - CONTEXT_CHARS), min(len(text), end + CONTEXT_CHARS)
        return text[a:start], text[start:end], text[end:b], start, end

    # -- writing --------------------------------------------------------------------------------
    def _writing(self, action: Callable[[Library], object]):
        if not self._write_lock.acquire(blocking=False):
            raise EdgeDSEError("another add, sync or remove is running: wait for it to finish")
        try:
            # progress=True: the library reports through tqdm, which gradio's Progress tracks.
            with Library(self.path, model=self.model, progress=True, threads=self.threads, wait=self.wait) as lib:
                return action(lib)
        finally:
            self._write_lock.release()

    def add(self, folder: str) -> str:
        folder = (folder or "").strip()
        if not folder:
            raise EdgeDSEError("type the path of a folder to add")
        return _report_text(f"added {folder}", self._writing(lambda lib: lib.add(folder)))

    def sync(self) -> str:
        return _report_text("synced", self._writing(lambda lib: lib.sync()))

    def remove(self, folder: str) -> str:
        if not folder:
            raise EdgeDSEError("pick a folder to remove")
        n = self._writing(lambda lib: lib.remove(folder))
        return f"removed {folder}: {n} files"

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _report_text(what: str, report) -> str:
    text = f"{what}: {report.summary()}"
    if report.errors:
        text += f" ({len(report.errors)} failed: see the failed files below)"
    return text
