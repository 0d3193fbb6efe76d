"""A library: folders of documents, kept in a SQLite catalog with an HNSW index beside it.

Layout of a library folder:
    catalog.db   SQLite (WAL): folders, files and their state, chunks with text and vectors.
                 The source of truth: the HNSW file is derived from it.
    ann.*        the HNSW index: a cache derived from the catalog, tagged with the catalog
                 generation it reflects; rebuilt when missing, stale or unreadable.
    write.lock   held by the one process that writes (invariant 2).

`Library` is the public face. It owns the catalog, the writer lock, the model and settings it
records (identity.Identity), the encoder and the HNSW cache, and hands them to the two paths:
writing (indexer.Indexer: discover, extract, chunk, embed, commit; incremental) and reading
(searcher.Searcher: a Query, vector/keyword/hybrid, hits, the teacher's rerank).
"""

from __future__ import annotations

import json
import os
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from . import config, models
from .encoder import Encoder, max_length_for
from .errors import EdgeDSEError
from .identity import Identity, shipped_model_that_built_it
from .index_spec import IndexSpec
from .indexer import ANN_SAVE_CHUNKS, EMBED_GROUP_CHUNKS, Indexer, SyncReport, folders_to_add, skipped_text  # noqa: F401
from .models import ModelCard
from .modes import DEFAULT_MODE
from .searcher import MAX_QUERY_CHARS, RERANK_BAR_MIN_HITS, Hit, Hits, Query, Searcher  # noqa: F401
from .user_errors import user_errors

if TYPE_CHECKING:
    from .cluster import RayCluster
    from .rerank import Progress, Reranker
    from .store import AnnIndex, Catalog

# The catalog's file in a library folder (see the layout above).
CATALOG_FILE = "catalog.db"
# Meta key that marks a reindex under way: the id of the model it re-embeds with and the
# IndexSpec it records (a run with other settings starts over instead of going on).
REINDEX_KEY = "reindex_to"


class Library(AbstractContextManager):  # `with Library(...) as x:` gives itself and closes at the end
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
            model = shipped_model_that_built_it(self.catalog)
        # The IndexSpec fields given explicitly (the chunk size is worked out with the model's card).
        given = {"ignore_dirs": tuple(sorted(set(ignore_dirs))) if ignore_dirs is not None else None,
                 "max_file_bytes": max_bytes, "include_hidden": include_hidden, "hnsw_m": hnsw_m,
                 "hnsw_ef_construction": hnsw_ef_construction}
        self._identity = Identity(self.catalog, self.path, model, readonly=readonly, max_length=max_length, given=given)
        self._encoder: Encoder | None = model if isinstance(model, Encoder) else None
        self._ann: AnnIndex | None = None
        self._searcher = Searcher(self.catalog, ann_index=self.ann_index, encoder=lambda: self.encoder,
                                  encoder_loaded=lambda: self._encoder is not None, threads=threads, progress=progress)
        self.ann_save_chunks = ANN_SAVE_CHUNKS  # a sync saves the HNSW cache after this many chunks
        if not allow_model_change:
            self._identity.check()

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        """Whether a library was created in folder `path` (its catalog is there), without
        opening it: a caller can say "no library yet" instead of creating an empty one."""
        return (Path(path) / CATALOG_FILE).is_file()

    # -- the model and settings it records (invariant 4; identity.Identity) ---------------------
    @property
    def model(self) -> ModelCard:
        """The checked card of the model this Library embeds with (read on first use: `status`
        needs none); its role and name label the hits it ranks (models.label)."""
        return self._identity.model

    @property
    def model_card(self) -> dict:
        """The card, as written, of the model this Library embeds with."""
        return self.model.data

    @property
    def spec(self) -> IndexSpec:
        """The settings this Library stores with: each one given, else the one the library
        records, else the default (identity.Identity.spec)."""
        return self._identity.spec

    @property
    def max_file_bytes(self) -> int:
        """The largest file this library indexes (its spec's): bigger files are skipped, and a
        reader of indexed files reads no more than this."""
        return self.spec.max_file_bytes

    def ranked_by(self, mode: str = DEFAULT_MODE) -> tuple[str, str]:
        """(label, short label) of what ranks this Library's hits in a search mode, for the CLI and
        the UI: its encoder, named by models.label from its role ("baseline (default encoder)";
        short "baseline"), BM25, or both."""
        if mode == "keyword":
            return "keyword search (BM25)", "BM25"
        long, short = models.label(self.model), models.label(self.model, short=True)
        return (f"{long} + BM25", f"{short} + BM25") if mode == "hybrid" else (long, short)

    @property
    def encoder(self) -> Encoder:
        """The encoder, loaded on first use (keyword search never needs it), with the window of
        this library's chunks."""
        if self._encoder is None:
            self._encoder = Encoder(self.model, threads=self.threads, max_length=max_length_for(self.spec.chunk_tokens))
        return self._encoder

    # -- writing (indexer.Indexer, under the writer lock) ----------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        if self.readonly:
            raise EdgeDSEError(f"library {self.path} is open read-only: open it without readonly to change it")
        self._lock.acquire(timeout=self.wait)
        try:
            yield
        finally:
            self._lock.release()

    def _indexer(self, cluster: "str | RayCluster | None") -> Indexer:
        """One sync's Indexer, with this library's catalog, settings, encoder and HNSW cache (on
        a cluster: "auto", a Ray address or a cluster.RayCluster; None: a local sync)."""
        return Indexer(self.catalog, self.spec, encoder=lambda: self.encoder, refresh_index=self._refresh_index,
                       cluster=cluster, model_folder=self.model.folder if cluster is not None else None,
                       progress=self.progress, extract_seconds=self.extract_seconds,
                       extract_memory=self.extract_memory, ann_save_chunks=self.ann_save_chunks)

    @user_errors
    def add(self, *folders: str | os.PathLike, cluster: "str | RayCluster | None" = None) -> SyncReport:
        """Add folders to the library and index them (an already added folder is re-synced).

        cluster: run the read/extract/chunk/embed step on a Ray cluster ("auto", a Ray address
        or a cluster.RayCluster; needs the cluster extra). The catalog is still written here."""
        paths = folders_to_add(folders)
        with self._writing(), self._indexer(cluster) as indexer:
            for path in paths:
                self.catalog.add_folder(path)
            return indexer.sync(paths)

    @user_errors
    def sync(self, folders: Sequence[str | os.PathLike] | None = None, *,
             cluster: "str | RayCluster | None" = None) -> SyncReport:
        """Bring the library up to date with its folders: new, changed, renamed, deleted files
        (cluster: as in `add`)."""
        with self._writing(), self._indexer(cluster) as indexer:
            known = self.catalog.folders()
            if folders is None:
                targets = known
            else:
                targets = [os.path.abspath(Path(f).expanduser()) for f in folders]
                unknown = [t for t in targets if t not in known]
                if unknown:
                    raise EdgeDSEError(f"{unknown[0]} is not in this library: add it with `edge-dse index {unknown[0]}`")
            return indexer.sync(targets)

    @user_errors
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

    @user_errors
    def reindex(self, *, cluster: "str | RayCluster | None" = None) -> SyncReport:
        """Re-embed every folder with this library's current model and settings (after a model
        change, or to re-chunk with another max length; cluster: as in `add`). The new IndexSpec
        is recorded.

        The catalog notes a reindex under way (and to which model) until it ends: a reindex
        stopped mid-way and run again goes on where it stopped, like a sync, instead of
        dropping what the first run embedded."""
        with self._writing(), self._indexer(cluster) as indexer:
            folders = self.catalog.folders()
            target = json.dumps({"model_id": self.model.id, **self.spec.meta()}, sort_keys=True)
            if self.catalog.get_meta(REINDEX_KEY) != target:
                with self.catalog.transaction():
                    for folder in folders:
                        self.catalog.remove_folder(folder)
                        self.catalog.add_folder(folder)
                    self._identity.record()
                    self.catalog.set_meta(REINDEX_KEY, target)
            report = indexer.sync(folders)
            self.catalog.delete_meta(REINDEX_KEY)
            return report

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

    @user_errors
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

    # -- searching (searcher.Searcher) ----------------------------------------------------------
    @user_errors
    def search(self, query: str, k: int = 10, *, mode: str = DEFAULT_MODE, ef_search: int | None = None) -> Hits:
        """The k best chunks for a query. Modes: "vector" (the encoder + HNSW), "keyword"
        (SQLite FTS5 BM25) or "hybrid" (both, merged by modes.fuse: scores scaled and weighted).

        ef_search: the HNSW candidate list of this search (None: the index's default, see
        store.ann.AnnIndex); higher finds more of the true nearest chunks, slower. Never below
        the hits fetched. The Hits carry each stage's time (Hits.timings)."""
        return self._searcher.search(Query(query, k, mode, ef_search))

    @user_errors
    def rerank(self, query: str, hits: Sequence[Hit], *, teacher: "str | os.PathLike | Reranker | None" = None,
               depth: int | None = None, on_progress: "Progress | None" = None) -> Hits:
        """The hits re-ordered by the teacher (a cross-encoder reading query and chunk together).

        It is slower per hit than the student, so it re-scores only the first `depth` hits
        (default: the depth its card records, else rerank.DEFAULT_DEPTH); the hits below follow in
        the search's order with its scores and no `first_rank` (not re-scored). Each
        re-scored Hit has the teacher's score and, in `first_rank`, where the search had it.
        `teacher` is a folder, a shipped name or a loaded Reranker (a named one is loaded once
        per Library); `on_progress(done, total)` hears of each batch the teacher scores. The
        result keeps the timings of `hits` and adds teacher_load_ms and rerank_ms."""
        return self._searcher.rerank(query, hits, teacher=teacher, depth=depth, on_progress=on_progress)

    # -- reporting ----------------------------------------------------------------------------
    @user_errors
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

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Library({str(self.path)!r}, model={self.model.id!r})"
