"""The HNSW index: a cache of the catalog's vectors for fast approximate search.

SQLite holds every vector (docs/invariants.md, 1); this index is derived from it and tagged
with the catalog generation it reflects. Whenever it is missing, stale, unreadable, built for
another catalog or another dimension, it is rebuilt or refreshed from the catalog, so losing or
damaging it costs time, never data.

Files in the library folder
    ann.json               the sidecar: generation, catalog_id, dim, parameters, counts, and
                           the names, sizes and CRC-32s of the two files below. Written last.
    ann.<token>.hnsw       the hnswlib graph and vectors.
    ann.<token>.ids.npy    the live labels (sorted int64 chunk ids); hnswlib cannot list which
                           of its labels are marked deleted.

Every save writes a fresh pair under a new random token, fsyncs it, then atomically replaces
ann.json, then deletes the old pair. A crash at any point leaves either the old sidecar with its
intact old pair or the new sidecar with its intact new pair; a reader never sees a sidecar that
names half-written files. The CRC-32 check before loading matters: hnswlib detects a truncated
file, but a file damaged in the middle loads "fine" and then segfaults in a search (tried).

Vectors are L2-normalised and searched by inner product (space="ip"), so a score is the cosine
similarity, higher = better.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ModelMismatchError

if TYPE_CHECKING:
    from .catalog import Catalog

SIDECAR = "ann.json"
FORMAT = 1

# Deleted-but-still-stored elements beyond this fraction of the graph trigger a full rebuild
# (compaction): hnswlib's mark_deleted frees no memory, and a graph that is mostly tombstones
# searches slower (it still walks them) and recalls less.
COMPACT_FRACTION = 0.25
MIN_CAPACITY = 1024  # hnswlib allocates max_elements up front: start small, grow by GROWTH
GROWTH = 1.5  # geometric growth: n additions cost O(log n) resizes (each one copies the graph)
ADD_BATCH = 10_000  # vectors read from the catalog and added per step (bounded memory)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _crc32(path: Path) -> int:
    """CRC-32 of a file, ~4 GB/s: 0.05 s for a 200 MB index (~100k chunks of dim 384)."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); Windows has no directory fds, and its renames are."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AnnIndex:
    """Approximate nearest neighbours over the catalog's chunk vectors (hnswlib, cosine).

    Parameters (hnswlib's, with their costs; defaults measured by `python -m bench.search hnsw`):

    M                 links per node (2*M on the bottom layer). Higher: better recall,
                      especially for high-dimensional data, at more memory (each element
                      stores ~2*M*4 bytes of links beside its dim*4 bytes of vector), a slower
                      build, and slightly slower queries. 12-48 is the useful range.
    ef_construction   the candidate list used while inserting. Higher: a better graph, so the
                      same recall needs a smaller ef at query time; build time grows about
                      linearly with it. No effect on memory or on query cost.
    ef_search         the candidate list at query time (hnswlib's `ef`, set to max(ef_search,
                      k) for each query). The recall/latency knob: latency grows about
                      linearly with it. It is not saved in the file, so it is set after every
                      load.

    DEFAULTS were measured with `python -m bench.search hnsw --large` (SYNTHETIC clustered
    vectors shaped like text embeddings, dim 384, queries off the passages' manifold, 2-core
    shared AMD EPYC; no real embeddings existed yet). recall@10 vs exact search:

        M  ef_constr  ef   N=10k   N=100k  p50 @100k  build @100k  index @100k
        16    200     40   0.981   0.915   0.17 ms    28 s         168 MB
        16    200     80   0.997   0.964   0.27 ms
        16    200    160   0.9995  0.991   0.49 ms
        16    100    160   1.000   0.983   0.42 ms    14 s         168 MB
        32    200     80   0.999   0.985   0.40 ms    70 s         181 MB
         8    200    160   0.997   0.948   0.28 ms    31 s         162 MB

    M=16, ef_construction=200 is the cheapest build at >= 0.98: M=32 costs 2.5x the build time
    and 8% more memory for the same recall.

    ef_search was then re-measured on real embeddings (an earlier script; today `python -m
    bench.search ef --sizes 100000 --real 10000 --student assets/baseline --ef 160 200 256 320
    400`: the baseline's vectors of 10k Python docs passages, replicated with jitter to 100k, 200
    real queries). recall@10 vs exact at 100k:

        ef     160    200    256    320    400
        recall 0.979  0.979  0.985  0.990  0.992
        p50    0.23   0.25   0.32   0.38   0.50 ms

    That choice (320) missed the target on real text: the full benchmark (bench/README.md) uses
    90,888 distinct passages (Python docs, Debian descriptions, WordNet glosses) embedded by the
    student, jittered copies only past that, and got 0.977 at 100k and 0.962 at 1M.
    `python -m bench.search ef` on those vectors (200 real queries, one thread, HNSW alone):

        ef            320    480    640    960    1280
        recall 100k   0.977  0.985  0.989  0.994  0.995
        p50 ms 100k   0.57   0.85   1.07   1.56   1.99
        recall 1M     0.963  0.976  0.984  0.991  0.995
        p50 ms 1M     0.78   1.13   1.48   2.14   2.84

    Chosen: ef_search=640, the smallest that holds 0.98 up to 1M chunks, for ~0.5 ms (100k) to
    ~0.7 ms (1M) more per query than 320; end to end a query stays far under the 5 ms target.
    """

    DEFAULTS = {"M": 16, "ef_construction": 200, "ef_search": 640}

    def __init__(self, folder: Path, dim: int, *, M: int | None = None, ef_construction: int | None = None,
                 ef_search: int | None = None, threads: int = -1) -> None:
        self.folder = Path(folder)
        self.dim = int(dim)
        self.M = int(M or self.DEFAULTS["M"])
        self.ef_construction = int(ef_construction or self.DEFAULTS["ef_construction"])
        self.ef_search = int(ef_search or self.DEFAULTS["ef_search"])
        self.threads = int(threads)  # hnswlib's num_threads for builds: -1 = all cores
        self.generation = -1  # the catalog generation this index reflects; -1 = none yet
        self.catalog_id = ""
        self.state_id = ""  # the catalog's state_id at `generation`
        # How this object came to be, for logs and tests: "new", "loaded", "refreshed",
        # "rebuilt: <why>", "empty: <why>".
        self.source = "new"
        # hnswlib is not safe to mutate while it is searched (add_items vs knn_query): one
        # lock guards the graph and the label list together.
        self._lock = threading.RLock()
        self._ids = np.zeros(0, dtype=np.int64)
        self._max_label = -1  # the highest label ever added, deleted or not
        self._index = self._new_hnsw(MIN_CAPACITY)
        self._token: str | None = None  # the files on disk this state matches, if any
        self._dirty = True

    # -- the hnswlib object -----------------------------------------------------------------
    def _new_hnsw(self, capacity: int):
        import hnswlib

        index = hnswlib.Index(space="ip", dim=self.dim)
        index.init_index(max_elements=int(capacity), M=self.M, ef_construction=self.ef_construction)
        index.set_ef(self.ef_search)
        return index

    def _ensure_capacity(self, needed: int) -> None:
        capacity = self._index.get_max_elements()
        if needed > capacity:
            # Adding past max_elements raises: grow first, geometrically.
            self._index.resize_index(max(needed, int(capacity * GROWTH)))

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or (len(ids) and vectors.shape[1] != self.dim):
            raise ModelMismatchError(
                f"the catalog holds vectors of dim {vectors.shape[-1]}, the index expects {self.dim}: "
                f"open the library with the model that built it, or re-index with `edge-dse index`"
            )
        if not len(ids):
            return
        self._ensure_capacity(self._index.element_count + len(ids))
        self._index.add_items(_normalise(vectors), ids.astype(np.uint64), num_threads=self.threads)
        self._ids = np.union1d(self._ids, ids)
        self._max_label = max(self._max_label, int(ids.max()))

    # -- state ------------------------------------------------------------------------------
    def ids(self) -> np.ndarray:
        """The live labels (chunk ids), sorted int64."""
        with self._lock:
            return self._ids.copy()

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def elements(self) -> int:
        """Elements stored in the graph, deleted ones included."""
        return int(self._index.element_count)

    @property
    def deleted(self) -> int:
        return self.elements - len(self._ids)

    @property
    def capacity(self) -> int:
        return int(self._index.get_max_elements())

    def __repr__(self) -> str:
        return (f"AnnIndex({str(self.folder)!r}, dim={self.dim}, live={len(self)}, deleted={self.deleted}, "
                f"generation={self.generation}, M={self.M}, ef_construction={self.ef_construction}, "
                f"ef_search={self.ef_search})")

    # -- opening ----------------------------------------------------------------------------
    @staticmethod
    def saved_generation(folder: Path) -> int | None:
        """The catalog generation the index saved in `folder` reflects, read from its sidecar
        without loading the index; None when there is no readable sidecar. For reports (the
        library's status): the sidecar's layout stays this module's business."""
        try:
            return json.loads((Path(folder) / SIDECAR).read_text())["generation"]
        except (OSError, ValueError, KeyError):
            return None

    @classmethod
    def open(cls, folder: Path, dim: int, catalog: "Catalog", *, rebuild_if_stale: bool = True, **params) -> "AnnIndex":
        """The index for `catalog`, loaded from `folder` when the saved one is current.

        Saved file current (same catalog, generation, dim): loaded. Saved but stale: loaded,
        refreshed incrementally, saved. Missing, unreadable, for another catalog or dim, or
        built with other explicitly given M/ef_construction: rebuilt from the catalog, saved.

        rebuild_if_stale=False (a reader while a writer works): never writes. Returns whatever
        readable index is saved, even if stale, or an empty one (generation -1); the caller
        compares `generation` with the catalog's and covers the gap (see `ids()`).
        """
        folder = Path(folder)
        catalog_id = catalog.catalog_id
        index, why = cls._load(folder, dim, catalog_id, params)
        if index is not None:
            changed = [k for k in ("M", "ef_construction") if params.get(k) and int(params[k]) != getattr(index, k)]
            if changed:
                index, why = None, f"{', '.join(changed)} changed"
        if not rebuild_if_stale:
            if index is None:
                index = cls(folder, dim, **params)
                index.source = f"empty: {why}"
            return index
        if index is None:
            index = cls(folder, dim, **params)
            index.catalog_id = catalog_id
            index.rebuild(catalog)
            index.source = f"rebuilt: {why}"
            index.save()
        elif (index.generation, index.state_id) != (catalog.generation, catalog.state_id):
            index.refresh(catalog)
            if not index.source.startswith("rebuilt"):
                index.source = "refreshed"
            index.save()
        return index

    @classmethod
    def _load(cls, folder: Path, dim: int, catalog_id: str, params: dict) -> tuple["AnnIndex | None", str]:
        """(index, "loaded") or (None, why not). Any problem means "not loadable"; nothing
        here can crash the process on a damaged file (sizes and CRCs are checked first)."""
        import hnswlib

        for _ in range(3):  # a writer may swap the files between our reads: look again
            try:
                meta = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
            except FileNotFoundError:
                return None, "no saved index"
            except (OSError, ValueError) as e:
                return None, f"sidecar unreadable ({e.__class__.__name__})"
            try:
                if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("space") != "ip":
                    return None, "sidecar of an unknown format"
                if int(meta["dim"]) != int(dim):
                    return None, f"dim {meta['dim']} saved, {dim} wanted"
                if meta.get("catalog_id") != catalog_id:
                    return None, "built for another catalog"
                hnsw_path = folder / str(meta["hnsw_file"])
                ids_path = folder / str(meta["ids_file"])
                for path, size, crc in ((hnsw_path, meta["hnsw_bytes"], meta["hnsw_crc32"]),
                                        (ids_path, meta["ids_bytes"], meta["ids_crc32"])):
                    if path.stat().st_size != int(size) or _crc32(path) != int(crc):
                        return None, f"{path.name} is damaged (size or CRC mismatch)"
                ids = np.load(ids_path, allow_pickle=False)
                if ids.dtype != np.int64 or ids.ndim != 1 or len(ids) != int(meta["count"]):
                    return None, f"{ids_path.name} does not match the sidecar"
                self = cls(folder, dim, M=int(meta["M"]), ef_construction=int(meta["ef_construction"]),
                           ef_search=params.get("ef_search"), threads=params.get("threads", -1))
                hnsw = hnswlib.Index(space="ip", dim=int(dim))
                hnsw.load_index(str(hnsw_path), max_elements=0)
                hnsw.set_ef(self.ef_search)  # ef is not saved with the index
                if hnsw.element_count != int(meta["elements"]) or hnsw.element_count < len(ids):
                    return None, f"{hnsw_path.name} does not match the sidecar"
            except FileNotFoundError:
                continue
            except (KeyError, TypeError, ValueError, OSError, RuntimeError, MemoryError) as e:
                return None, f"unreadable ({e.__class__.__name__}: {e})"
            self._index, self._ids = hnsw, ids
            self._max_label = int(meta.get("max_label", ids.max() if len(ids) else -1))
            self.generation = int(meta["generation"])
            self.state_id = str(meta.get("state_id", ""))
            self.catalog_id = catalog_id
            self._token, self._dirty = str(meta["token"]), False
            self.source = "loaded"
            return self, "loaded"
        return None, "saved files kept changing while read"

    # -- keeping in step with the catalog ---------------------------------------------------
    def rebuild(self, catalog: "Catalog") -> None:
        """Build from scratch from the catalog's vectors (also the compaction step)."""
        with catalog.snapshot(), self._lock:
            generation = catalog.generation
            n = len(catalog.all_ids())
            self._index = self._new_hnsw(max(MIN_CAPACITY, n + n // 10))
            self._ids = np.zeros(0, dtype=np.int64)
            self._max_label = -1
            self.generation, self._dirty = -1, True
            for ids, vectors in catalog.iter_vectors(ADD_BATCH):
                self._add(ids, vectors)
            self.catalog_id = catalog.catalog_id
            self.generation, self.state_id = generation, catalog.state_id

    def refresh(self, catalog: "Catalog") -> None:
        """Bring the index in line with the catalog incrementally: add the chunks it lacks,
        mark the ones gone as deleted; compact (rebuild) when deletions pile up."""
        with catalog.snapshot(), self._lock:  # generation, ids and vectors from one snapshot
            generation, state_id = catalog.generation, catalog.state_id
            if self.catalog_id and self.catalog_id != catalog.catalog_id:
                self.rebuild(catalog)
                self.source = "rebuilt: built for another catalog"
                return
            self.catalog_id = catalog.catalog_id
            current = catalog.all_ids()
            to_add = np.setdiff1d(current, self._ids, assume_unique=True)
            to_delete = np.setdiff1d(self._ids, current, assume_unique=True)
            # Chunk ids only grow (AUTOINCREMENT) and generations only rise, so a catalog with
            # a lower generation, the same generation in another state, or a "new" id at or
            # below one we already hold, has another history than ours: restored from a
            # backup, and its ids may now name other text.
            if (generation < self.generation
                    or (generation == self.generation and self.state_id and state_id != self.state_id)
                    or (len(to_add) and int(to_add[0]) <= self._max_label)):
                self.rebuild(catalog)
                self.source = "rebuilt: the catalog's history changed (restored from a backup?)"
                return
            if not len(to_add) and not len(to_delete):
                if (self.generation, self.state_id) != (generation, state_id):
                    self.generation, self.state_id, self._dirty = generation, state_id, True
                return
            elements_after = self.elements + len(to_add)
            if self.deleted + len(to_delete) > COMPACT_FRACTION * elements_after:
                self.rebuild(catalog)
                self.source = "rebuilt: compaction"
                return
            # While half-way, `generation` says "matches nothing", so a failure (e.g. a
            # dimension mismatch) can never leave an index that claims to be current.
            self.generation, self._dirty = -1, True
            for label in to_delete:
                self._index.mark_deleted(int(label))
            self._ids = np.setdiff1d(self._ids, to_delete, assume_unique=True)
            for lo in range(0, len(to_add), ADD_BATCH):
                batch = to_add[lo : lo + ADD_BATCH]
                self._add(batch, catalog.get_vectors(batch))
            self.generation, self.state_id = generation, state_id

    # -- persistence ------------------------------------------------------------------------
    def save(self) -> None:
        """Write the index crash-safely (see the module docstring); a no-op when nothing
        changed since it was loaded or saved."""
        with self._lock:
            if not self._dirty and self._token and (self.folder / SIDECAR).is_file():
                # Nothing to write, but a writer killed between its commit and its clean-up
                # leaves the previous save's files behind: drop them now.
                self._remove_stale_files(self._token)
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            token = uuid.uuid4().hex[:16]
            hnsw_path = self.folder / f"ann.{token}.hnsw"
            ids_path = self.folder / f"ann.{token}.ids.npy"
            self._index.save_index(str(hnsw_path))
            with open(ids_path, "wb") as f:
                np.save(f, self._ids, allow_pickle=False)
            for path in (hnsw_path, ids_path):
                _fsync_file(path)
            meta = {
                "format": FORMAT,
                "generation": int(self.generation),
                "state_id": self.state_id,
                "catalog_id": self.catalog_id,
                "dim": self.dim,
                "space": "ip",
                "M": self.M,
                "ef_construction": self.ef_construction,
                "count": len(self._ids),
                "elements": self.elements,
                "deleted": self.deleted,
                "max_elements": self.capacity,
                "max_label": self._max_label,
                "token": token,
                "hnsw_file": hnsw_path.name,
                "hnsw_bytes": hnsw_path.stat().st_size,
                "hnsw_crc32": _crc32(hnsw_path),
                "ids_file": ids_path.name,
                "ids_bytes": ids_path.stat().st_size,
                "ids_crc32": _crc32(ids_path),
                "saved_at": time.time(),
            }
            tmp = self.folder / f"{SIDECAR}.{token}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.folder / SIDECAR)  # the commit point
            _fsync_dir(self.folder)
            self._token, self._dirty = token, False
            self._remove_stale_files(token)

    def _remove_stale_files(self, keep: str) -> None:
        """Files of earlier saves, and leftovers of saves that crashed."""
        for pattern in ("ann.*.hnsw", "ann.*.ids.npy", f"{SIDECAR}.*.tmp"):
            for path in self.folder.glob(pattern):
                if keep not in path.name:
                    try:
                        path.unlink()
                    except OSError:  # Windows: a reader still has it open; next save retries
                        pass

    # -- searching --------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, *, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest live chunks: (ids int64, cosine scores float32), best first.

        ef_search: this search's candidate list (default: the index's `ef_search`), never below
        k. hnswlib keeps ef on the index object, which every thread searching it shares: it is
        set and put back under the lock, so one search's ef never leaks into another's."""
        query = _normalise(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        if query.shape[1] != self.dim:
            raise ValueError(f"query vector of dim {query.shape[1]}, the index holds dim {self.dim}")
        with self._lock:
            k = min(int(k), len(self._ids))
            if k <= 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            ef = max(int(ef_search or self.ef_search), k)
            while True:
                self._index.set_ef(ef)
                try:
                    labels, distances = self._index.knn_query(query, k=k)
                    break
                except RuntimeError:
                    # Too few live nodes reachable for k results (many deletions near the
                    # query): widen the search, and in the end fall back to exact search.
                    if ef >= self.elements:
                        return self._exact(query[0], k)
                    ef = min(self.elements, ef * 4)
                finally:
                    self._index.set_ef(self.ef_search)
        # space="ip" distance is 1 - <q, v>: turn it back into the cosine similarity.
        return labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)

    def _exact(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.asarray(self._index.get_items(self._ids.astype(np.uint64)), dtype=np.float32)
        scores = vectors @ query
        top = np.argsort(-scores, kind="stable")[:k]
        return self._ids[top].copy(), scores[top].astype(np.float32)
