"""A library: folders of documents, kept in a SQLite catalog with an HNSW index beside it.

Layout of a library folder:
    catalog.db   SQLite (WAL): folders, files and their state, chunks with text and vectors.
                 The source of truth: the HNSW file is derived from it.
    ann.*        the HNSW index: a cache derived from the catalog, tagged with the catalog
                 generation it reflects; rebuilt when missing, stale or unreadable.
    write.lock   held by the one process that writes (invariant 2).

Syncing is incremental: a file whose size and mtime are unchanged is skipped; one whose bytes
hash the same is only re-stamped; a renamed or copied file reuses the vectors of the content
it had; only new content is extracted, chunked and embedded. Files are embedded in groups of
EMBED_GROUP_CHUNKS chunks and then each is committed in its own transaction, so a crash loses only
the group in flight; the next sync redoes just that. A file of more chunks than a group is
committed a group at a time, and a sync stopped in it goes on from its first chunk not committed.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import time
import unicodedata
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from . import config, models, modes
from .encoder import MIN_MAX_LENGTH, Encoder, chunk_tokens, max_length_for, passage_text
from .errors import EdgeDSEError, IndexSpecMismatchError, ModelMismatchError
from .index_spec import IndexSpec, rebuild_flags
from .models import ModelCard
from .modes import DEFAULT_MODE, MODES

if TYPE_CHECKING:
    import numpy as np

    from .cluster import RayCluster, RayIndexer
    from .rerank import Progress, Reranker

    from .store import AnnIndex, Catalog

# The catalog's file in a library folder (see the layout above).
CATALOG_FILE = "catalog.db"
# Chunks embedded together: large enough to keep batches full across many small files.
EMBED_GROUP_CHUNKS = 256
# During a long sync the HNSW cache is brought up to date and saved after every this many
# chunks committed, not only at the end: a reader scores the chunks the saved cache lacks one
# by one, which took 0.5-0.9 s and 600 MB a search during a long first sync.
ANN_SAVE_CHUNKS = 20_000
# Failed files recorded in one transaction.
FAILURES_PER_COMMIT = 1000
# Meta key that marks a reindex under way: the id of the model it re-embeds with and the
# IndexSpec it records (a run with other settings starts over instead of going on).
REINDEX_KEY = "reindex_to"
# A rerank of at most this many hits shows no progress bar: the teacher scores them in a batch
# or two, and a bar would only flicker.
RERANK_BAR_MIN_HITS = 8
# A query longer than this is cut before encoding/keyword search: the encoder truncates at its
# max length anyway, and tokenising megabytes of text would only waste time.
MAX_QUERY_CHARS = 20_000


@dataclass
class Hit:
    """One search result: a chunk of a file."""

    rank: int
    score: float
    path: str
    text: str
    start: int  # character offsets of the chunk in the file's extracted text
    end: int
    heading: str
    chunk_id: int
    student_rank: int | None = None  # after a teacher rerank: the rank the student gave it

    def to_dict(self) -> dict:
        return asdict(self)

    def moved(self) -> str:
        """After a rerank, how far it moved from the student's rank: ↑n, ↓n or = ("" before)."""
        if self.student_rank is None:
            return ""
        step = self.student_rank - self.rank
        return f"↑{step}" if step > 0 else f"↓{-step}" if step < 0 else "="


class Hits(list):
    """A list of Hit that also carries how long each stage of the search took (ms)."""

    def __init__(self, hits: Iterable[Hit] = (), timings: dict | None = None, mode: str = "vector"):
        super().__init__(hits)
        self.timings: dict[str, float] = timings or {}
        self.mode = mode


@dataclass
class SyncReport:
    """What a sync did. `errors` lists the files that failed in this sync, with reasons."""

    folders: list[str] = field(default_factory=list)
    seen: int = 0
    added: int = 0
    updated: int = 0
    reused: int = 0  # renamed/copied files whose vectors were reused
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    chunks: int = 0  # chunks embedded in this sync
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # files of other types, not indexed, by kind

    def summary(self) -> str:
        return (
            f"{self.seen} files seen: {self.added} added, {self.updated} updated, {self.reused} moved/copied, "
            f"{self.unchanged} unchanged, {self.removed} removed, {self.failed} failed; "
            f"{self.chunks} chunks embedded in {self.seconds:.1f} s" + (f"; {skipped_text(self.skipped)}" if self.skipped else "")
        )


def skipped_text(skipped: dict[str, int], most: int = 6) -> str:
    """'12 files of other types not indexed: .png 9, .zip 2, no suffix (not text) 1'."""
    kinds = sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{kind} {n}" for kind, n in kinds[:most])
    more = f", {len(kinds) - most} more kinds" if len(kinds) > most else ""
    n = sum(skipped.values())
    return f"{n} file{'' if n == 1 else 's'} of other types not indexed: {shown}{more}"


def _sqlite_code(exc: BaseException) -> int:
    """The primary SQLite result code of an error (Python >= 3.11 gives the extended one)."""
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return _sqlite_code(exc) == 13 or "disk is full" in str(exc)  # SQLITE_FULL


def _damaged(exc: BaseException) -> bool:
    """SQLite errors that mean the catalog file is damaged. quick_check on open sees broken page
    structure, not bytes damaged inside a record: those show only when a query reads them."""
    if _sqlite_code(exc) in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
        return True
    return any(s in str(exc) for s in ("malformed", "not a database", "Could not decode to UTF-8"))


def _user_errors(method):
    """Turn a full disk or a damaged catalog met mid-way into a one-line EdgeDSEError that names
    the fix, instead of a raw sqlite3/OS error (a traceback on the command line)."""

    @functools.wraps(method)
    def wrapper(self: "Library", *args, **kwargs):
        import sqlite3

        from .store.catalog import corrupt_error

        try:
            return method(self, *args, **kwargs)
        except (sqlite3.DatabaseError, OSError) as exc:
            if _disk_full(exc):
                raise EdgeDSEError(
                    f"disk full while writing library {self.path}: free some space and run the command again "
                    f"(everything committed so far is kept; `edge-dse sync` goes on where it stopped)"
                ) from exc
            if isinstance(exc, sqlite3.DatabaseError) and _damaged(exc):
                # One short line: a decode error quotes the damaged text, newlines and all.
                raise corrupt_error(self.catalog.path, " ".join(str(exc).split())[:120]) from exc
            raise

    return wrapper


def _model_card(model: str | os.PathLike | Encoder | None) -> ModelCard:
    if isinstance(model, Encoder):
        return model.model
    return ModelCard.load(config.resolve_model_dir(model))


class Library:
    """A searchable library of local folders.

    Args:
        path: the library folder (default: $EDGE_DSE_HOME or the user data dir).
        model: a shipped model name, a model folder or an Encoder (default: the shipped model).
            A library records the model that built it; opening it with another one raises
            ModelMismatchError naming the fix (`edge-dse reindex`).
        readonly: open for searching only (no folder is created, nothing is written).
        wait: seconds to wait for another writer to finish before giving up (writes only).
        progress: show progress bars on long work.
        max_length: the encoder's window in tokens (at most the model's, the default); chunks are
            cut to fit it. With an Encoder as the model, its own max length.
        ignore_dirs, max_bytes, include_hidden: what discovery skips (see ingest.discover).
        hnsw_m, hnsw_ef_construction: how the HNSW graph is built (see store.ann.AnnIndex).
            These settings, and the chunk size max_length gives, make the library's IndexSpec
            (`spec`): recorded when it is created or reindexed. One left out is the recorded one;
            one given that differs from it raises IndexSpecMismatchError naming the fix
            (`edge-dse reindex`).
        extract_seconds, extract_memory: the budget of one PDF or DOCX (see ingest.budget): a
            file over it is recorded as failed, with the budget it broke.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        model: str | os.PathLike | Encoder | None = None,
        readonly: bool = False,
        wait: float = 0.0,
        threads: int | None = None,
        progress: bool = True,
        max_length: int | None = None,
        ignore_dirs: Iterable[str] | None = None,
        max_bytes: int | None = None,
        include_hidden: bool | None = None,
        hnsw_m: int | None = None,
        hnsw_ef_construction: int | None = None,
        allow_model_change: bool = False,
        extract_seconds: float | None = None,
        extract_memory: int | None = None,
    ) -> None:
        from .store import Catalog, WriterLock

        self.path = Path(path).expanduser() if path is not None else config.default_library_dir()
        self.readonly = readonly
        self.wait = wait
        self.progress = progress
        self.threads = threads
        self._max_length = max_length
        # The IndexSpec fields given explicitly (the chunk size is worked out with the model's card).
        given = {"ignore_dirs": tuple(sorted(set(ignore_dirs))) if ignore_dirs is not None else None,
                 "max_file_bytes": max_bytes, "include_hidden": include_hidden, "hnsw_m": hnsw_m,
                 "hnsw_ef_construction": hnsw_ef_construction}
        self._spec_given = {name: value for name, value in given.items() if value is not None}
        self._spec: IndexSpec | None = None
        self.extract_seconds = extract_seconds
        self.extract_memory = extract_memory
        if readonly and not Library.exists(self.path):
            raise EdgeDSEError(f"no library at {self.path}: create one with `edge-dse index FOLDER`")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:
            raise EdgeDSEError(f"cannot create the library at {self.path}: permission denied on {exc.filename}: "
                               "pick a folder you can write with --library DIR (or $EDGE_DSE_HOME)") from None
        self.catalog: Catalog = Catalog(self.path / CATALOG_FILE, readonly=readonly)
        self._lock = WriterLock(self.path / "write.lock")
        if model is None and not allow_model_change:  # reindex moves a library to the default
            model = self._shipped_model_that_built_it()
        self._model_arg = model
        self._model: ModelCard | None = None
        self._encoder: Encoder | None = model if isinstance(model, Encoder) else None
        self._ann: AnnIndex | None = None
        self._rerankers: dict[str, "Reranker"] = {}
        self._failures: list[tuple] = []  # failed files waiting to be recorded (_fail)
        self.ann_save_chunks = ANN_SAVE_CHUNKS
        self._chunks_at_save = 0  # report.chunks when the HNSW cache was last saved in this sync
        if not allow_model_change:
            self._check_model()
            self._check_spec()

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        """Whether a library was created in folder `path` (its catalog is there), without
        opening it: a caller can say "no library yet" instead of creating an empty one."""
        return (Path(path) / CATALOG_FILE).is_file()

    @property
    def model(self) -> ModelCard:
        """The checked card of the model this Library embeds with (read on first use: `status`
        needs none); its role and name label the hits it ranks (models.label)."""
        if self._model is None:
            self._model = _model_card(self._model_arg)
        return self._model

    def ranked_by(self, mode: str = DEFAULT_MODE) -> tuple[str, str]:
        """(label, short label) of what ranks this Library's hits in a search mode, for the CLI and
        the UI: its encoder, named by models.label from its role ("baseline (default encoder)";
        short "baseline"), BM25, or both."""
        if mode == "keyword":
            return "keyword search (BM25)", "BM25"
        long, short = models.label(self.model), models.label(self.model, short=True)
        return (f"{long} + BM25", f"{short} + BM25") if mode == "hybrid" else (long, short)

    @property
    def model_card(self) -> dict:
        """The card, as written, of the model this Library embeds with."""
        return self.model.data

    # -- model identity (invariant 4) ---------------------------------------------------------
    def _shipped_model_that_built_it(self) -> str | None:
        """With no model named, an existing library opens with the shipped model that built it
        (a library made with the baseline keeps working when the student becomes the default);
        None, the default, for a new library or one built with a model from elsewhere."""
        name, stored = self.catalog.get_meta("model_name"), self.catalog.get_meta("model_id")
        if not name or not stored or name == config.default_model_name():
            return None
        folder = config.assets_dir() / name
        try:
            if models.has_card(folder) and models.read_card(folder).get("id") == stored:
                return name
        except EdgeDSEError:
            pass
        return None

    def _check_model(self) -> None:
        stored = self.catalog.get_meta("model_id")
        card = self.model_card
        if stored is None:
            if not self.readonly:
                self._record_model()
            return
        stored_dim = self.catalog.get_meta("model_dim")
        if stored != card["id"] or str(stored_dim) != str(card["dim"]):
            raise ModelMismatchError(
                f"library {self.path} was built with model {stored!r} (dim {stored_dim}), not "
                f"{card['id']!r} (dim {card['dim']}): open it with that model, or re-embed it with "
                f"`edge-dse reindex --library {self.path}{self._model_option()}`"
            )

    def _model_option(self) -> str:
        """The --model option that names this Library's model on the command line ("" = default)."""
        if self._model_arg is None:
            return ""
        arg = self._model_arg.path if isinstance(self._model_arg, Encoder) else self._model_arg
        is_folder = os.path.isdir(arg)
        return f" --model {os.path.abspath(arg) if is_folder else arg}"

    def _record_model(self) -> None:
        card = self.model_card
        spec = self.spec  # worked out before the model's rows change: it reads them
        with self.catalog.transaction():
            self.catalog.set_meta("model_id", card["id"])
            self.catalog.set_meta("model_dim", str(card["dim"]))
            self.catalog.set_meta("model_pooling", card.get("pooling", "mean"))
            self.catalog.set_meta("model_name", card.get("name", ""))
            # The settings the stored text and graph depend on, chunk size included (Encoder.chunking):
            # recorded with the model, so a change of either re-chunks on `reindex`, and status says
            # how the text was cut.
            for key, value in spec.meta().items():
                self.catalog.set_meta(key, value)

    # -- settings (IndexSpec) ------------------------------------------------------------------
    @property
    def spec(self) -> IndexSpec:
        """The settings this Library stores with: each one given, else the one the library
        records, else the default. A recorded chunk size counts only for the model that cut the
        chunks: a reindex to another model cuts for its window unless told otherwise."""
        if self._spec is None:
            recorded = IndexSpec.recorded(self.catalog.get_meta)
            if self.catalog.get_meta("model_id") != self.model.id:
                recorded.pop("chunk_tokens", None)
            given = dict(self._spec_given)
            if (tokens := self._given_chunk_tokens()) is not None:
                given["chunk_tokens"] = tokens
            self._spec = replace(IndexSpec.default(chunk_tokens(self.model.max_length)), **{**recorded, **given})
        return self._spec

    def _given_chunk_tokens(self) -> int | None:
        """The chunk size given: an Encoder's window, or max_length (checked against the model)."""
        if isinstance(self._model_arg, Encoder):
            if self._max_length is not None and self._max_length != self._model_arg.max_length:
                raise EdgeDSEError(f"max_length {self._max_length} differs from the Encoder's {self._model_arg.max_length}: "
                                   "give it to the Encoder (Encoder(..., max_length=N)), or pass the model's name")
            return self._model_arg.chunk_tokens
        if self._max_length is None:
            return None
        largest = self.model.max_length
        if not MIN_MAX_LENGTH <= self._max_length <= largest:
            raise EdgeDSEError(f"a max length of {self._max_length} tokens does not fit model {self.model.id}: "
                               f"give --max-length (max_length) from {MIN_MAX_LENGTH} to {largest}")
        return chunk_tokens(self._max_length)

    def _check_spec(self) -> None:
        """Refuse settings given that differ from the recorded ones; record those the library
        lacks (one made before they were recorded adopts the current ones)."""
        recorded = IndexSpec.recorded(self.catalog.get_meta)
        differences = self.spec.differences(recorded)
        if differences:
            flags = rebuild_flags(self.spec, {d.split(" ", 1)[0] for d in differences},
                                  max_length=max_length_for(self.spec.chunk_tokens))
            raise IndexSpecMismatchError(
                f"library {self.path} was built with other settings ({'; '.join(differences)}): open it "
                f"without them to use its own, or rebuild it with them with "
                f"`edge-dse reindex --library {self.path}{self._model_option()}{flags}`")
        # A library from before chunks were counted in tokens was cut by characters: no chunk size
        # is recorded for it until a reindex cuts it again (status tells the two apart).
        missing = {key: value for key, value in self.spec.meta().items()
                   if key not in recorded and key != "chunk_tokens"}
        if missing and not self.readonly:
            with self.catalog.transaction():
                for key, value in missing.items():
                    self.catalog.set_meta(key, value)

    @property
    def encoder(self) -> Encoder:
        """The encoder, loaded on first use (keyword search never needs it), with the window of
        this library's chunks."""
        if self._encoder is None:
            self._encoder = Encoder(self.model, threads=self.threads, max_length=max_length_for(self.spec.chunk_tokens))
        return self._encoder

    # -- writing ------------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        if self.readonly:
            raise EdgeDSEError(f"library {self.path} is open read-only: open it without readonly to change it")
        self._lock.acquire(timeout=self.wait)
        try:
            yield
        finally:
            self._lock.release()

    def _discover_kwargs(self) -> dict:
        spec = self.spec
        return {"ignore_dirs": frozenset(spec.ignore_dirs), "max_bytes": spec.max_file_bytes,
                "include_hidden": spec.include_hidden}

    @property
    def max_file_bytes(self) -> int:
        """The largest file this library indexes (its spec's): bigger files are skipped, and a
        reader of indexed files reads no more than this."""
        return self.spec.max_file_bytes

    @_user_errors
    def add(self, *folders: str | os.PathLike, cluster: "str | RayCluster | None" = None) -> SyncReport:
        """Add folders to the library and index them (an already added folder is re-synced).

        cluster: run the read/extract/chunk/embed step on a Ray cluster ("auto", a Ray address
        or a cluster.RayCluster; needs the cluster extra). The catalog is still written here."""
        if not folders:
            raise EdgeDSEError("name at least one folder to add")
        from .ingest.discover import printable

        paths = []
        for folder in folders:
            path = Path(folder).expanduser()
            if not path.is_dir():
                raise EdgeDSEError(f"{folder}: not a folder (give the path of a folder to index)")
            path = os.path.abspath(path)
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:  # undecodable bytes: the catalog stores paths as text
                raise EdgeDSEError(f"{printable(Path(path))}: the folder's path is not valid UTF-8 text: "
                                   f"rename it to index it") from None
            paths.append(path)
        with self._writing(), self._cluster(cluster) as runner:
            for path in paths:
                self.catalog.add_folder(path)
            return self._sync(paths, runner)

    @_user_errors
    def sync(self, folders: Sequence[str | os.PathLike] | None = None, *,
             cluster: "str | RayCluster | None" = None) -> SyncReport:
        """Bring the library up to date with its folders: new, changed, renamed, deleted files
        (cluster: as in `add`)."""
        with self._writing(), self._cluster(cluster) as runner:
            known = self.catalog.folders()
            if folders is None:
                targets = known
            else:
                targets = [os.path.abspath(Path(f).expanduser()) for f in folders]
                unknown = [t for t in targets if t not in known]
                if unknown:
                    raise EdgeDSEError(f"{unknown[0]} is not in this library: add it with `edge-dse index {unknown[0]}`")
            return self._sync(targets, runner)

    @_user_errors
    def remove(self, folder: str | os.PathLike) -> int:
        """Remove a folder (its files and chunks) from the library; returns files removed."""
        path = os.path.abspath(Path(folder).expanduser())
        with self._writing():
            if path not in self.catalog.folders():
                raise EdgeDSEError(f"{path} is not in this library (see `edge-dse status` for its folders)")
            removed = self.catalog.remove_folder(path)
            self._refresh_index()
            self.catalog.optimize_keywords()
            self.catalog.reclaim_space()
            return removed

    @_user_errors
    def reindex(self, *, cluster: "str | RayCluster | None" = None) -> SyncReport:
        """Re-embed every folder with this library's current model and settings (after a model
        change, or to re-chunk with another max length; cluster: as in `add`). The new IndexSpec
        is recorded.

        The catalog notes a reindex under way (and to which model) until it ends: a reindex
        stopped mid-way and run again goes on where it stopped, like a sync, instead of
        dropping what the first run embedded."""
        with self._writing(), self._cluster(cluster) as runner:
            folders = self.catalog.folders()
            target = json.dumps({"model_id": self.model.id, **self.spec.meta()}, sort_keys=True)
            if self.catalog.get_meta(REINDEX_KEY) != target:
                with self.catalog.transaction():
                    for folder in folders:
                        self.catalog.remove_folder(folder)
                        self.catalog.add_folder(folder)
                    self._record_model()
                    self.catalog.set_meta(REINDEX_KEY, target)
            report = self._sync(folders, runner)
            self.catalog.delete_meta(REINDEX_KEY)
            return report

    def _sync(self, folders: list[str], cluster: "RayIndexer | None" = None) -> SyncReport:
        from .ingest import FoundFile, discover
        from .ingest.discover import OtherType

        report = SyncReport(folders=list(folders))
        self._failures = []  # none left from a sync that raised
        self._chunks_at_save = 0
        started = time.perf_counter()
        for folder in folders:
            known = self.catalog.files_in(folder)
            if not os.path.isdir(folder):
                # An unmounted drive or a moved folder: keep what was indexed, say so.
                report.errors.append((folder, "folder is missing: its files are kept; remove it with `edge-dse remove`"))
                report.failed += 1
                continue
            found = list(self._progress(discover(Path(folder), **self._discover_kwargs()), desc=f"scanning {folder}", unit=" files"))
            todo = []
            seen: set[str] = set()
            skipped: dict[str, int] = {}
            for item in found:
                if isinstance(item, OtherType):
                    skipped[item.kind] = skipped.get(item.kind, 0) + 1
                    continue
                path = str(item.path)
                seen.add(path)
                report.seen += 1
                if not isinstance(item, FoundFile):
                    self._fail(folder, item, item.reason, report, drop_chunks=item.policy, stat=False)
                    continue
                row = known.get(path)
                if row is not None and row.size == item.size and row.mtime_ns == item.mtime_ns:
                    report.unchanged += 1  # including files that failed before and did not change
                    continue
                todo.append(item)
            for kind, n in skipped.items():
                report.skipped[kind] = report.skipped.get(kind, 0) + n
            self.catalog.set_meta(self.catalog.skipped_key(folder), json.dumps(skipped))
            self._index_files(folder, todo, known, report, cluster)
            self._record_failures()
            for path in sorted(set(known) - seen):
                self.catalog.remove_file(path)
                report.removed += 1
        self._refresh_index()
        self.catalog.reclaim_space()
        report.seconds = time.perf_counter() - started
        return report

    def _index_files(self, folder: str, todo: list, known: dict, report: SyncReport,
                     cluster: "RayIndexer | None" = None) -> None:
        """Read, hash, extract, chunk and embed files; commit each file on its own. With a
        cluster, new content is extracted, chunked and embedded there (edge_dse.cluster)."""
        from .ingest.budget import BudgetedExtractor

        budget = {k: v for k, v in (("seconds", self.extract_seconds), ("memory_bytes", self.extract_memory))
                  if v is not None}
        with BudgetedExtractor(**budget) as extract:
            self._index_with(extract, folder, todo, known, report, cluster)

    def _index_with(self, extract, folder: str, todo: list, known: dict, report: SyncReport,
                    cluster: "RayIndexer | None" = None) -> None:
        from .ingest import ExtractError, chunk_text
        from .ingest.discover import Refused, read_inside

        pending: list[tuple] = []  # (file, sha256, chunks) waiting for embedding
        pending_chunks = 0
        real_root = os.path.realpath(folder)
        max_bytes = self.max_file_bytes
        bar = self._progress(todo, desc="indexing", unit=" files")
        for item in bar:
            path = str(item.path)
            try:
                # Checked again as it is opened: the file may have been swapped since the scan.
                data = read_inside(item.path, real_root, max_bytes)
            except Refused as exc:
                self._fail(folder, item, str(exc), report, drop_chunks=True)
                continue
            except FileNotFoundError:
                # Vanished between discovery and reading: it is simply gone.
                if path in known:
                    self.catalog.remove_file(path)
                    report.removed += 1
                continue
            except OSError as exc:
                self._fail(folder, item, f"unreadable: {exc.strerror or exc}", report)
                continue
            sha = hashlib.sha256(data).hexdigest()
            row = known.get(path)
            if row is not None and row.sha256 == sha and row.status == "ok":
                self.catalog.touch_file(path, item.size, item.mtime_ns)
                report.unchanged += 1
                continue
            same_content = self.catalog.chunks_for_hash(sha)
            if same_content is not None:
                chunks, vectors = same_content
                self.catalog.put_file(folder, path, item.size, item.mtime_ns, sha, chunks, vectors)
                report.reused += 1
                continue
            if cluster is not None:  # extracted, chunked and embedded there; committed here as they come back
                self._commit_outcomes(folder, cluster.submit(item, sha, data, row is not None), report)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(chunks=report.chunks, refresh=False)
                continue
            try:
                chunks = chunk_text(extract(item.path, data), **self.encoder.chunking())
            except ExtractError as exc:
                self._fail(folder, item, str(exc), report)
                continue
            del data
            if len(chunks) > EMBED_GROUP_CHUNKS:  # a large file: committed a group at a time
                self._embed_and_commit(folder, pending, report)
                pending, pending_chunks = [], 0
                self._embed_large(folder, item, sha, chunks, row, report)
                continue
            pending.append((item, sha, chunks, row is not None))
            pending_chunks += len(chunks)
            if pending_chunks >= EMBED_GROUP_CHUNKS:
                self._embed_and_commit(folder, pending, report)
                pending, pending_chunks = [], 0
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(chunks=report.chunks + pending_chunks, refresh=False)
        if pending:
            self._embed_and_commit(folder, pending, report)
        if cluster is not None:
            self._commit_outcomes(folder, cluster.finish(), report)

    def _embed_large(self, folder: str, item, sha: str, chunks: list, row, report: SyncReport) -> None:
        """Embed and commit a large file's chunks EMBED_GROUP_CHUNKS at a time, so that a stop
        mid-way keeps what was done: the next sync goes on from the first chunk not committed
        (the file's row says how far it got, for this content; chunking is deterministic)."""
        path = str(item.path)
        done = row.n_chunks if row is not None and row.sha256 == self.catalog.partial_tag(sha) else 0
        for at in range(done, len(chunks), EMBED_GROUP_CHUNKS):
            group = chunks[at : at + EMBED_GROUP_CHUNKS]
            vectors = self.encoder.encode([passage_text(c.text, c.heading) for c in group], kind="document")
            self.catalog.put_partial(folder, path, sha, group, vectors, total=len(chunks), first=at == 0)
            report.chunks += len(group)
            self._save_index_in_steps(report)
        self.catalog.finish_partial(path, item.size, item.mtime_ns, sha)
        if row is not None:
            report.updated += 1
        else:
            report.added += 1

    def _embed_and_commit(self, folder: str, pending: list[tuple], report: SyncReport) -> None:
        if not pending:
            return
        texts = [passage_text(c.text, c.heading) for _, _, chunks, _ in pending for c in chunks]
        self._commit(folder, pending, self.encoder.encode(texts, kind="document"), report)

    def _commit(self, folder: str, pending: list[tuple], vectors: "np.ndarray", report: SyncReport) -> None:
        """The one commit path of a sync, local or on a cluster: each file in its own transaction."""
        offset = 0
        for item, sha, chunks, existed in pending:
            n = len(chunks)
            self.catalog.put_file(folder, str(item.path), item.size, item.mtime_ns, sha, chunks, vectors[offset : offset + n])
            offset += n
            report.chunks += n
            if existed:
                report.updated += 1
            else:
                report.added += 1
        self._save_index_in_steps(report)

    # -- the embed step on a Ray cluster (the cluster extra) -----------------------------------
    def _cluster(self, cluster: "str | RayCluster | None"):
        """A RayIndexer session for a sync, or nothing: a local sync."""
        if cluster is None:
            return nullcontext()
        from .cluster import RayIndexer

        return RayIndexer(cluster, self.model.folder, max_length=max_length_for(self.spec.chunk_tokens))

    def _commit_outcomes(self, folder: str, outcomes: list, report: SyncReport) -> None:
        """Commit files the cluster finished, through the same path as a local sync."""
        for out in outcomes:
            if out.reason is not None:  # a failure of the cluster's is stored without the file's
                # stat, so that the next sync tries the file again (ingest's own reasons are kept)
                self._fail(folder, out.item, out.reason, report, stat=not out.retry)
            else:
                self._commit(folder, [(out.item, out.sha256, out.chunks, out.existed)], out.vectors, report)


    def _save_index_in_steps(self, report: SyncReport) -> None:
        if report.chunks - self._chunks_at_save >= self.ann_save_chunks:
            self._refresh_index()
            self._chunks_at_save = report.chunks

    def _fail(self, folder: str, item, reason: str, report: SyncReport, *, drop_chunks: bool = False,
              stat: bool = True) -> None:
        """Note a failed file; recorded with others in one transaction (_record_failures): one
        commit each made a folder of 100,000 empty files take minutes. A failure lost to a crash
        before it is recorded is only found again by the next sync."""
        size, mtime_ns = (item.size, item.mtime_ns) if stat else (None, None)
        self._failures.append((folder, str(item.path), size, mtime_ns, reason, drop_chunks))
        report.failed += 1
        report.errors.append((str(item.path), reason))
        if len(self._failures) >= FAILURES_PER_COMMIT:
            self._record_failures()

    def _record_failures(self) -> None:
        failures, self._failures = self._failures, []
        if failures:
            with self.catalog.transaction():
                for folder, path, size, mtime_ns, reason, drop_chunks in failures:
                    self.catalog.put_error(folder, path, size, mtime_ns, reason, drop_chunks=drop_chunks)

    def _progress(self, iterable, **kwargs):
        if not self.progress:
            return iterable
        from tqdm import tqdm

        return tqdm(iterable, leave=False, **kwargs)

    # -- the ANN cache ------------------------------------------------------------------------
    def _refresh_index(self) -> None:
        """Writer side: bring the HNSW cache in line with the catalog and save it."""
        if self._ann is None:
            self._ann = self._open_ann()
        self._ann.refresh(self.catalog)
        self._ann.save()

    def _open_ann(self, **kwargs) -> "AnnIndex":
        """The HNSW cache, built with this library's graph settings (AnnIndex.open rebuilds one
        saved with others)."""
        from .store import AnnIndex

        return AnnIndex.open(self.path, self.model.dim, self.catalog, M=self.spec.hnsw_m,
                             ef_construction=self.spec.hnsw_ef_construction, **kwargs)

    @_user_errors
    def refresh_index(self) -> None:
        """Bring the HNSW cache in line with the catalog and save it, under the writer lock:
        what a sync does at its end, for a caller that wrote chunks through `catalog` itself."""
        with self._writing():
            self._refresh_index()

    def ann_index(self) -> "AnnIndex":
        """The HNSW index a vector search uses, loaded (or refreshed) the way a search does: a
        new one when a writer saved a newer one. Read-only access, for measuring the index
        alone; changing it bypasses the catalog that it is a cache of."""
        generation = self.catalog.generation
        if self._ann is None or self._ann.generation != generation:
            if self.readonly or not self._lock_free():
                # Another process is writing: read what it saved; never write.
                self._ann = self._open_ann(rebuild_if_stale=False)
            else:
                with self._writing():
                    self._refresh_index()
        return self._ann

    def _lock_free(self) -> bool:
        from .errors import LibraryLockedError

        try:
            self._lock.acquire(timeout=0)
        except LibraryLockedError:
            return False
        self._lock.release()
        return True

    def _vector_candidates(self, query_vector: "np.ndarray", k: int,
                           ef_search: int | None = None) -> tuple[list[int], list[float]]:
        import numpy as np

        index = self.ann_index()
        ids, scores = index.search(query_vector, k, ef_search=ef_search)
        ids, scores = list(map(int, ids)), list(map(float, scores))
        if index.generation != self.catalog.generation:
            # The index lags the catalog (a writer is mid-sync): score the chunks it lacks
            # exactly, so a reader still sees every committed file. Stale ids are dropped
            # later, when rows are fetched.
            missing = np.setdiff1d(self.catalog.all_ids(), index.ids(), assume_unique=True)
            if len(missing):
                extra = self.catalog.get_vectors(missing) @ query_vector
                ids += list(map(int, missing))
                scores += list(map(float, extra))
                order = np.argsort(-np.asarray(scores))[: k + len(missing)]
                ids, scores = [ids[i] for i in order], [scores[i] for i in order]
        return ids, scores

    # -- searching ----------------------------------------------------------------------------
    @_user_errors
    def search(self, query: str, k: int = 10, *, mode: str = DEFAULT_MODE, ef_search: int | None = None) -> Hits:
        """The k best chunks for a query. Modes: "vector" (the encoder + HNSW), "keyword"
        (SQLite FTS5 BM25) or "hybrid" (both, merged by modes.fuse: weighted reciprocal rank fusion).

        ef_search: the HNSW candidate list of this search (None: the index's default, see
        store.ann.AnnIndex); higher finds more of the true nearest chunks, slower. Never below
        the hits fetched."""
        if mode not in MODES:
            raise EdgeDSEError(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
        if k < 1:
            raise EdgeDSEError(f"k must be at least 1 (got {k})")
        if ef_search is not None and ef_search < 1:
            raise EdgeDSEError(f"ef_search must be at least 1 (got {ef_search}): give --ef-search 1 or more, "
                               "or leave it out for the index's default")
        query = (query or "")[:MAX_QUERY_CHARS]
        # Lone surrogates (undecodable bytes in argv) cannot be encoded for the tokenizer: U+FFFD.
        # NFKC as the documents' text (ingest.extract.normalise): "ｆｕｌｌ" finds "full" by vector too.
        query = unicodedata.normalize("NFKC", query.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
        timings: dict[str, float] = {}
        if not query.strip():
            return Hits([], timings, mode)
        depth = max(k, modes.FUSION_DEPTH) if mode == "hybrid" else k
        ranked: dict[str, list[tuple[int, float]]] = {}
        if mode in ("vector", "hybrid"):
            if self._encoder is None:  # the first vector search of this Library loads the model
                t0 = time.perf_counter()
                self.encoder
                timings["model_load_ms"] = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            qv = self.encoder.encode([query], kind="query")[0]
            t1 = time.perf_counter()
            # Over-fetch a little: ids deleted since the index was saved are dropped at fetch.
            ids, scores = self._vector_candidates(qv, depth + 10, ef_search)
            timings["encode_ms"] = (t1 - t0) * 1000
            timings["ann_ms"] = (time.perf_counter() - t1) * 1000
            ranked["vector"] = list(zip(ids, scores))
        if mode in ("keyword", "hybrid"):
            t0 = time.perf_counter()
            ranked["keyword"] = self.catalog.keyword_search(query, depth)
            timings["keyword_ms"] = (time.perf_counter() - t0) * 1000
        if mode == "hybrid":
            candidates = modes.fuse(ranked["vector"], ranked["keyword"], depth=depth)
        else:
            candidates = ranked[mode]
        t0 = time.perf_counter()
        rows = self.catalog.get_chunks([cid for cid, _ in candidates[: k + 10]])
        timings["fetch_ms"] = (time.perf_counter() - t0) * 1000
        score_of = dict(candidates)
        hits = [
            Hit(rank=i + 1, score=round(score_of[r.id], 6), path=r.path, text=r.text, start=r.start, end=r.end, heading=r.heading, chunk_id=r.id)
            for i, r in enumerate(rows[:k])
        ]
        timings["total_ms"] = sum(timings.values())
        return Hits(hits, {k: round(v, 3) for k, v in timings.items()}, mode)

    @_user_errors
    def rerank(self, query: str, hits: Sequence[Hit], *, teacher: "str | os.PathLike | Reranker | None" = None,
               depth: int | None = None, on_progress: "Progress | None" = None) -> Hits:
        """The hits re-ordered by the teacher (a cross-encoder reading query and chunk together).

        It is slower per hit than the student, so it re-scores only the first `depth` hits
        (default: the depth its card records, else rerank.DEFAULT_DEPTH); the hits below follow in
        the student's order with the student's scores and no `student_rank` (not re-scored). Each
        re-scored Hit has the teacher's score and, in `student_rank`, where the student had it.
        `teacher` is a folder, a shipped name or a loaded Reranker; `on_progress(done, total)`
        hears of each batch the teacher scores."""
        from .encoder import passage_text
        from .rerank import Reranker

        timings: dict[str, float] = {}
        if isinstance(teacher, Reranker):
            reranker = teacher
        else:
            key = str(teacher or "")
            if key not in self._rerankers:
                t0 = time.perf_counter()
                self._rerankers[key] = Reranker(teacher, threads=self.threads)
                timings["teacher_load_ms"] = (time.perf_counter() - t0) * 1000
            reranker = self._rerankers[key]
        depth = reranker.default_depth if depth is None else int(depth)
        if depth < 1:
            raise EdgeDSEError(f"a rerank depth of {depth} re-scores nothing: give 1 or more hits")
        head, tail = list(hits[:depth]), list(hits[depth:])
        t0 = time.perf_counter()
        query = unicodedata.normalize("NFKC", (query or "")[:MAX_QUERY_CHARS])
        with self._rerank_bar(len(head)) as bar:
            def report(done: int, total: int) -> None:
                bar.update(done - bar.n)
                if on_progress is not None:
                    on_progress(done, total)

            order = reranker.rerank(query, [passage_text(h.text, h.heading) for h in head], on_progress=report,
                                    mode=getattr(hits, "mode", DEFAULT_MODE))
        timings["rerank_ms"] = (time.perf_counter() - t0) * 1000
        out = [
            replace(head[r.index], rank=new_rank + 1, score=round(r.score, 6), student_rank=head[r.index].rank)
            for new_rank, r in enumerate(order)
        ] + [replace(h, rank=len(head) + i + 1, student_rank=None) for i, h in enumerate(tail)]
        return Hits(out, {k: round(v, 3) for k, v in timings.items()}, getattr(hits, "mode", DEFAULT_MODE))

    def _rerank_bar(self, hits: int):
        """A progress bar on stderr for a rerank of more than RERANK_BAR_MIN_HITS hits (when this
        Library shows progress at all), else one that draws nothing."""
        from tqdm import tqdm

        return tqdm(total=hits, desc="reranking", unit="hit", leave=False,
                    disable=not self.progress or hits <= RERANK_BAR_MIN_HITS)

    # -- reporting ----------------------------------------------------------------------------
    @_user_errors
    def status(self, errors_limit: int | None = None) -> dict:
        """Counts, folders, the model, failed files (the first `errors_limit` of them when given;
        all counted by kind of reason) and the index state."""
        counts = self.catalog.counts()
        files_per_folder = {f: len(self.catalog.files_in(f)) for f in self.catalog.folders()}
        from .store import AnnIndex

        index_generation = AnnIndex.saved_generation(self.path)
        return {
            "library": str(self.path),
            "model": {k: self.catalog.get_meta(k) for k in ("model_id", "model_dim", "model_pooling", "chunk_tokens")},
            "spec": IndexSpec.recorded(self.catalog.get_meta),  # the settings it records (IndexSpec's fields)
            **counts,
            "folders_detail": files_per_folder,
            "generation": self.catalog.generation,
            "index_generation": index_generation,
            "errors_detail": self.catalog.errors(errors_limit),
            "errors_by_kind": self.catalog.error_kinds(),
            "skipped": self.catalog.skipped(),  # files of other types, not indexed, by kind
            "bytes_on_disk": sum(p.stat().st_size for p in self.path.iterdir() if p.is_file()),
        }

    def close(self) -> None:
        self.catalog.close()
        self._ann = None

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Library({str(self.path)!r}, model={self.model.id!r})"
