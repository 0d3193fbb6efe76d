"""The write path of a library: discover → read → extract → chunk → embed → commit.

Syncing is incremental: a file whose size and mtime are unchanged is skipped; one whose bytes
hash the same is only re-stamped; a renamed or copied file reuses the vectors of the content
it had; only new content is extracted, chunked and embedded. Files are embedded in groups of
EMBED_GROUP_CHUNKS chunks and then each is committed in its own transaction, so a crash loses only
the group in flight; the next sync redoes just that. A file of more chunks than a group is
committed a group at a time, and a sync stopped in it goes on from its first chunk not committed.

An `Indexer` does one sync (or the sync of a reindex) and fills one SyncReport. The Library makes
it under the writer lock (invariant 2) and hands it what it works with: the catalog it commits to,
the library's IndexSpec (which files discovery takes, the largest file read), the encoder (given
on first use: a sync with nothing new never loads the model), `refresh_index` to bring the HNSW
cache in line with the catalog, and for a sync on Ray the cluster and the model folder its workers
load (edge_dse.cluster; what they return is committed here, invariant 9).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .encoder import max_length_for, passage_text
from .errors import EdgeDSEError
from .index_spec import IndexSpec

if TYPE_CHECKING:
    import numpy as np

    from .cluster import RayCluster, RayIndexer
    from .encoder import Encoder
    from .store import Catalog

# Chunks embedded together: large enough to keep batches full across many small files.
EMBED_GROUP_CHUNKS = 256
# During a long sync the HNSW cache is brought up to date and saved after every this many
# chunks committed, not only at the end: a reader scores the chunks the saved cache lacks one
# by one, which took 0.5-0.9 s and 600 MB a search during a long first sync.
ANN_SAVE_CHUNKS = 20_000
# Failed files recorded in one transaction.
FAILURES_PER_COMMIT = 1000


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


def folders_to_add(folders: Sequence[str | os.PathLike]) -> list[str]:
    """The absolute paths of folders to add to a library, each checked: a folder, whose path is
    UTF-8 text (the catalog stores paths as text)."""
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
    return paths


@dataclass(eq=False)
class Indexer:
    """One sync of a library's folders into its catalog (see the module's docstring).

    Used as a context manager around the sync: on a cluster it holds the RayIndexer session.

    Args:
        catalog: the library's Catalog, written by this process alone (the caller holds the lock).
        spec: the library's IndexSpec.
        encoder: gives the library's encoder, loading it on first use.
        refresh_index: brings the HNSW cache in line with the catalog and saves it.
        cluster: "auto", a Ray address or a cluster.RayCluster: the extract/chunk/embed step runs
            there (the cluster extra); None: here. model_folder: the model its workers load.
        progress: show progress bars. extract_seconds, extract_memory: one PDF or DOCX's budget
            (ingest.budget). ann_save_chunks: save the HNSW cache after this many chunks.
    """

    catalog: Catalog
    spec: IndexSpec
    _: KW_ONLY
    encoder: Callable[[], Encoder]
    refresh_index: Callable[[], None]
    cluster: str | RayCluster | None = None
    model_folder: Path | None = None
    progress: bool = True
    extract_seconds: float | None = None
    extract_memory: int | None = None
    ann_save_chunks: int = ANN_SAVE_CHUNKS
    report: SyncReport = field(default_factory=SyncReport, init=False)
    # the cluster's session, while in the with block
    _runner: RayIndexer | None = field(default=None, init=False, repr=False)
    # failed files waiting to be recorded (_fail)
    _failures: list[tuple] = field(default_factory=list, init=False, repr=False)
    # report.chunks when the HNSW cache was last saved in this sync
    _chunks_at_save: int = field(default=0, init=False, repr=False)

    @property
    def budget(self) -> dict:
        """One PDF or DOCX's extract budget, as ingest.BudgetedExtractor takes it: the limits given."""
        return {k: v for k, v in (("seconds", self.extract_seconds), ("memory_bytes", self.extract_memory)) if v is not None}

    # -- the embed step on a Ray cluster (the cluster extra) -----------------------------------
    def __enter__(self) -> "Indexer":
        if self.cluster is not None:
            from .cluster import RayIndexer

            runner = RayIndexer(self.cluster, self.model_folder, max_length=max_length_for(self.spec.chunk_tokens))
            self._runner = runner.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.__exit__(*exc)

    def _commit_outcomes(self, folder: str, outcomes: list) -> None:
        """Commit files the cluster finished, through the same path as a local sync."""
        for out in outcomes:
            if out.reason is not None:  # a failure of the cluster's is stored without the file's
                # stat, so that the next sync tries the file again (ingest's own reasons are kept)
                self._fail(folder, out.item, out.reason, stat=not out.retry)
            else:
                self._commit(folder, [(out.item, out.sha256, out.chunks, out.existed)], out.vectors)

    # -- syncing ------------------------------------------------------------------------------
    def sync(self, folders: list[str]) -> SyncReport:
        """Bring the catalog in line with the files of these folders (already in the catalog),
        then the HNSW cache with the catalog."""
        from .ingest import FoundFile, discover
        from .ingest.discover import OtherType

        if self.cluster is not None and self._runner is None:
            raise RuntimeError("an Indexer given a cluster syncs inside its with block (which holds the cluster session)")
        report = self.report = SyncReport(folders=list(folders))
        self._failures = []
        self._chunks_at_save = 0
        started = time.perf_counter()
        spec = self.spec
        discover_kwargs = {"ignore_dirs": frozenset(spec.ignore_dirs), "max_bytes": spec.max_file_bytes,
                           "include_hidden": spec.include_hidden}
        for folder in folders:
            known = self.catalog.files_in(folder)
            if not os.path.isdir(folder):
                # An unmounted drive or a moved folder: keep what was indexed, say so.
                report.errors.append((folder, "folder is missing: its files are kept; remove it with `edge-dse remove`"))
                report.failed += 1
                continue
            found = list(self._progress(discover(Path(folder), **discover_kwargs), desc=f"scanning {folder}", unit=" files"))
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
                    self._fail(folder, item, item.reason, drop_chunks=item.policy, stat=False)
                    continue
                row = known.get(path)
                if row is not None and row.size == item.size and row.mtime_ns == item.mtime_ns:
                    report.unchanged += 1  # including files that failed before and did not change
                    continue
                todo.append(item)
            for kind, n in skipped.items():
                report.skipped[kind] = report.skipped.get(kind, 0) + n
            self.catalog.set_meta(self.catalog.skipped_key(folder), json.dumps(skipped))
            self._index_files(folder, todo, known)
            self._record_failures()
            for path in sorted(set(known) - seen):
                self.catalog.remove_file(path)
                report.removed += 1
        self.refresh_index()
        self.catalog.reclaim_space()
        report.seconds = time.perf_counter() - started
        return report

    def _index_files(self, folder: str, todo: list, known: dict) -> None:
        """Read, hash, extract, chunk and embed files; commit each file on its own. With a
        cluster, new content is extracted, chunked and embedded there (edge_dse.cluster)."""
        from .ingest.budget import BudgetedExtractor

        with BudgetedExtractor(**self.budget) as extract:
            self._index_with(extract, folder, todo, known)

    def _index_with(self, extract, folder: str, todo: list, known: dict) -> None:
        from .ingest import ExtractError, chunk_text
        from .ingest.discover import Refused, read_inside

        report, cluster = self.report, self._runner
        pending: list[tuple] = []  # (file, sha256, chunks) waiting for embedding
        pending_chunks = 0
        real_root = os.path.realpath(folder)
        max_bytes = self.spec.max_file_bytes
        bar = self._progress(todo, desc="indexing", unit=" files")
        for item in bar:
            path = str(item.path)
            try:
                # Checked again as it is opened: the file may have been swapped since the scan.
                data = read_inside(item.path, real_root, max_bytes)
            except Refused as exc:
                self._fail(folder, item, str(exc), drop_chunks=True)
                continue
            except FileNotFoundError:
                # Vanished between discovery and reading: it is simply gone.
                if path in known:
                    self.catalog.remove_file(path)
                    report.removed += 1
                continue
            except OSError as exc:
                self._fail(folder, item, f"unreadable: {exc.strerror or exc}")
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
                self._commit_outcomes(folder, cluster.submit(item, sha, data, row is not None))
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(chunks=report.chunks, refresh=False)
                continue
            try:
                chunks = chunk_text(extract(item.path, data), **self.encoder().chunking())
            except ExtractError as exc:
                self._fail(folder, item, str(exc))
                continue
            del data
            if len(chunks) > EMBED_GROUP_CHUNKS:  # a large file: committed a group at a time
                self._embed_and_commit(folder, pending)
                pending, pending_chunks = [], 0
                self._embed_large(folder, item, sha, chunks, row)
                continue
            pending.append((item, sha, chunks, row is not None))
            pending_chunks += len(chunks)
            if pending_chunks >= EMBED_GROUP_CHUNKS:
                self._embed_and_commit(folder, pending)
                pending, pending_chunks = [], 0
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(chunks=report.chunks + pending_chunks, refresh=False)
        if pending:
            self._embed_and_commit(folder, pending)
        if cluster is not None:
            self._commit_outcomes(folder, cluster.finish())

    def _embed_large(self, folder: str, item, sha: str, chunks: list, row) -> None:
        """Embed and commit a large file's chunks EMBED_GROUP_CHUNKS at a time, so that a stop
        mid-way keeps what was done: the next sync goes on from the first chunk not committed
        (the file's row says how far it got, for this content; chunking is deterministic)."""
        path = str(item.path)
        done = row.n_chunks if row is not None and row.sha256 == self.catalog.partial_tag(sha) else 0
        for at in range(done, len(chunks), EMBED_GROUP_CHUNKS):
            group = chunks[at : at + EMBED_GROUP_CHUNKS]
            vectors = self.encoder().encode([passage_text(c.text, c.heading) for c in group], kind="document")
            self.catalog.put_partial(folder, path, sha, group, vectors, total=len(chunks), first=at == 0)
            self.report.chunks += len(group)
            self._save_index_in_steps()
        self.catalog.finish_partial(path, item.size, item.mtime_ns, sha)
        if row is not None:
            self.report.updated += 1
        else:
            self.report.added += 1

    def _embed_and_commit(self, folder: str, pending: list[tuple]) -> None:
        if not pending:
            return
        texts = [passage_text(c.text, c.heading) for _, _, chunks, _ in pending for c in chunks]
        self._commit(folder, pending, self.encoder().encode(texts, kind="document"))

    def _commit(self, folder: str, pending: list[tuple], vectors: "np.ndarray") -> None:
        """The one commit path of a sync, local or on a cluster: each file in its own transaction."""
        offset = 0
        for item, sha, chunks, existed in pending:
            n = len(chunks)
            self.catalog.put_file(folder, str(item.path), item.size, item.mtime_ns, sha, chunks, vectors[offset : offset + n])
            offset += n
            self.report.chunks += n
            if existed:
                self.report.updated += 1
            else:
                self.report.added += 1
        self._save_index_in_steps()

    def _save_index_in_steps(self) -> None:
        if self.report.chunks - self._chunks_at_save >= self.ann_save_chunks:
            self.refresh_index()
            self._chunks_at_save = self.report.chunks

    # -- failed files (invariant 5) ------------------------------------------------------------
    def _fail(self, folder: str, item, reason: str, *, drop_chunks: bool = False, stat: bool = True) -> None:
        """Note a failed file; recorded with others in one transaction (_record_failures): one
        commit each made a folder of 100,000 empty files take minutes. A failure lost to a crash
        before it is recorded is only found again by the next sync."""
        size, mtime_ns = (item.size, item.mtime_ns) if stat else (None, None)
        self._failures.append((folder, str(item.path), size, mtime_ns, reason, drop_chunks))
        self.report.failed += 1
        self.report.errors.append((str(item.path), reason))
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
