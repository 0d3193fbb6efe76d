"""Index on a Ray cluster: the read, extract, chunk and embed step of a sync runs on Ray's workers.

Everything else stays with the Library on this machine, the single writer: discovery, hashing
(which decides what is unchanged, renamed or new, as a local sync does), the catalog and the
HNSW cache. Only the files whose content is new are sent to the cluster, in groups of about
`group_bytes`; each group is one Ray task that reads (or is given) the files, extracts, chunks and
embeds them, and returns chunks and vectors. The Library commits each returned file through the
same path a local sync uses (one transaction per file), so a killed driver or worker loses no
committed file and the next sync, local or not, resumes.

Two ways for workers to get the bytes (`RayCluster.ship`):
    "path"   a shared filesystem: workers read each file at the same absolute path (NFS, SMB, a
             cluster filesystem mounted at the same place on every node). Only paths travel.
    "bytes"  the driver sends the bytes it already read for hashing, through Ray's object store:
             no shared filesystem needed, but every byte crosses the driver's network link.

The encoder travels through the object store too (once per job), so workers need edge_dse and its
run-time dependencies installed, not the model folder. `ray` is imported only here, and only when
a cluster is used: `import edge_dse` never loads it (the `cluster` extra is optional).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from . import models
from .errors import EdgeDSEError

if TYPE_CHECKING:
    import numpy as np

# Bytes of files per task: ~256 chunks of plain text, the group a local sync embeds at once
# (library.EMBED_GROUP_CHUNKS), so a task's encoder batches stay as full as a local sync's.
GROUP_BYTES = 256 * 1024
GROUP_FILES = 256  # and at most this many files, so a folder of tiny files still spreads out
# Tasks in flight per cluster CPU: enough that no worker waits for the driver between tasks,
# few enough that results (and shipped bytes) held in memory stay bounded.
IN_FLIGHT_PER_CPU = 2
# The model files a worker needs (models.ModelCard.load checks exactly these).
MODEL_FILES = models.FILES
SHIP_MODES = ("path", "bytes")
INSTALL_HINT = "pip install 'edge-dse[cluster]' (or -e '.[cluster]' in a checkout)"


@dataclass(frozen=True)
class RayCluster:
    """Where and how to run a sync's embed step on Ray.

    address: "auto" (RAY_ADDRESS, else the cluster this machine joined with `ray start`, else a
        new local one on this machine), or any address ray.init takes ("HOST:6379", "ray://HOST:10001").
        A process that has already called ray.init keeps its own session: the address is not used.
    ship: "path" (workers read the files on a shared filesystem) or "bytes" (the driver sends them).
    group_bytes: bytes of files per Ray task.
    """

    address: str = "auto"
    ship: str = "path"
    group_bytes: int = GROUP_BYTES

    def __post_init__(self) -> None:
        if self.ship not in SHIP_MODES:
            raise EdgeDSEError(f"unknown ship mode {self.ship!r}: use one of {', '.join(SHIP_MODES)}")
        if self.group_bytes < 1:
            raise EdgeDSEError(f"group_bytes must be at least 1 (got {self.group_bytes})")


def as_cluster(spec: "str | RayCluster") -> RayCluster:
    """A `cluster=` argument (an address or a RayCluster) as a RayCluster."""
    if isinstance(spec, RayCluster):
        return spec
    if isinstance(spec, str) and spec.strip():
        return RayCluster(address=spec.strip())
    raise EdgeDSEError(f"cluster={spec!r}: give a Ray address (\"auto\", \"HOST:6379\", \"ray://HOST:10001\") "
                       "or a RayCluster")


def import_ray(purpose: str = "indexing on a Ray cluster"):
    try:
        import ray
    except ImportError as exc:
        raise EdgeDSEError(f"{purpose} needs the cluster extra ({exc.name or 'ray'} is missing): "
                           f"{INSTALL_HINT}") from None
    return ray


def connect(address: str, purpose: str = "indexing on a Ray cluster") -> tuple[Any, bool, int]:
    """Join (or start) the Ray cluster at `address` ("auto": RAY_ADDRESS, else the cluster this
    machine joined, else a new local one). Returns (ray, started, cpus): started says this call
    began the session, so its caller ends it (ray.shutdown) and no one else's; cpus is the
    cluster's, the number of one-CPU workers it can run at once."""
    ray = import_ray(purpose)
    started = False
    if not ray.is_initialized():  # a caller that already runs Ray keeps its own session
        try:
            ray.init(address=None if address == "auto" else address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            why = " ".join(str(exc).split())[:160]
            raise EdgeDSEError(f"cannot reach the Ray cluster at {address} ({why}): "
                               "start it with `ray start --head` or give its address to --ray") from exc
        started = True
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < 1:
        if started:
            ray.shutdown()
        raise EdgeDSEError(f"the Ray cluster at {address} has no CPUs to run tasks: "
                           "add workers with `ray start --address=HEAD:6379`")
    return ray, started, cpus


class Outcome(NamedTuple):
    """One file back from the cluster: chunks and vectors, or the reason it failed."""

    item: Any  # the ingest.FoundFile the driver discovered
    sha256: str | None
    existed: bool  # the catalog had the file before (an update, not an add)
    chunks: list | None
    vectors: "np.ndarray | None"
    reason: str | None
    # The failure was the cluster's, not the file's (a worker died, the file was not where the
    # worker looked): the next sync tries the file again even if it has not changed.
    retry: bool = False


# -- the worker side ---------------------------------------------------------------------------
_ENCODERS: dict = {}  # model key -> Encoder: each worker process loads the model once per job


def _worker_encoder(model_key: str, model_ref: list, max_length: int | None = None):
    from .encoder import Encoder

    encoder = _ENCODERS.get(model_key)
    if encoder is None:
        import ray

        files = ray.get(model_ref[0])
        # Encoder reads its folder once, at start: a private temporary copy is enough.
        with tempfile.TemporaryDirectory(prefix="edge_dse_model_") as folder:
            for name, data in files.items():
                Path(folder, name).write_bytes(data)
            # One thread: each task holds one CPU of the cluster (num_cpus=1).
            encoder = _ENCODERS[model_key] = Encoder(folder, threads=1, max_length=max_length)
    return encoder


def index_group(model_key: str, model_ref: list, files: list[tuple[str, bytes | None]],
                max_length: int | None = None) -> list[tuple]:
    """On a worker: read (or take), hash, extract, chunk and embed a group of files, with the
    library's window (max_length; None: the model's).

    Returns one (sha256, chunks, vectors, reason) per file, in order. A file that cannot be read or
    has no text gets a reason, as in a local sync; any other exception fails the whole task, which
    Ray retries and the driver then splits (RayIndexer._failed)."""
    from .encoder import passage_text
    from .ingest import ExtractError, chunk_text, extract

    prepared: list[list] = []
    texts: list[str] = []
    encoder = _worker_encoder(model_key, model_ref, max_length)  # chunks are cut to its window, as in a local sync
    for path, data in files:
        if data is None:  # ship="path": the shared filesystem
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                prepared.append([None, None, None, f"unreadable on the cluster worker ({exc.strerror or exc}): "
                                 "is the folder on a filesystem every worker shares? else ship the bytes (--ship-bytes)"])
                continue
        sha = hashlib.sha256(data).hexdigest()
        try:
            chunks = chunk_text(extract(Path(path), data), **encoder.chunking())
        except ExtractError as exc:
            prepared.append([sha, None, None, str(exc)])
            continue
        prepared.append([sha, chunks, None, None])
        texts += [passage_text(c.text, c.heading) for c in chunks]
    if texts:
        vectors = encoder.encode(texts, kind="document")
        offset = 0
        for row in prepared:
            if row[1] is not None:
                row[2] = vectors[offset : offset + len(row[1])]
                offset += len(row[1])
    return [tuple(row) for row in prepared]


# -- the driver side ---------------------------------------------------------------------------
def failure_reason(exc: BaseException) -> str:
    """A worker failure as a short reason for the catalog (Ray's own messages carry tracebacks)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):  # a RayTaskError wraps the worker's exception
        exc = cause
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"failed on the cluster: {type(exc).__name__}: {first}"[:200]


class RayIndexer:
    """A sync's embed step on Ray, for the Library (the one writer) to commit.

    Used as a context manager around a sync: it connects (and disconnects only what it started).
    `submit` queues a file and returns the files finished so far, waiting while too many groups
    are in flight; `finish` waits for the rest. Groups run as Ray tasks; Ray retries a task once
    when its worker dies or raises; a group that still fails is retried file by file, and a file
    that fails alone is returned with the reason (and retry=True: the next sync tries it again)."""

    def __init__(self, spec: "str | RayCluster", model_dir: Path, *, max_length: int | None = None) -> None:
        self.spec = as_cluster(spec)
        self.model_dir = Path(model_dir)
        self.max_length = max_length  # the library's encoder window: workers cut chunks to it
        self._started = False
        self._group: list[tuple] = []  # (item, sha, existed, data) waiting for a task
        self._group_bytes = 0
        self._in_flight: dict = {}  # ObjectRef -> the group it computes
        self._task = None  # the Ray task, once connected

    # -- connecting ---------------------------------------------------------------------------
    def __enter__(self) -> "RayIndexer":
        import_ray()  # a missing extra fails now; the cluster is reached only when there is work
        return self

    def _connect(self) -> None:
        """Connect on the first file to embed: a sync with nothing new never starts a cluster."""
        ray, self._started, cpus = connect(self.spec.address)
        self._max_in_flight = IN_FLIGHT_PER_CPU * cpus
        files = {name: (self.model_dir / name).read_bytes() for name in MODEL_FILES}
        # A worker keeps one Encoder per key: the same model with another window is another key.
        self._model_key = hashlib.sha256(b"".join(files[name] for name in MODEL_FILES)
                                         + str(self.max_length).encode()).hexdigest()[:16]
        # In a list, so that Ray hands tasks the reference (fetched once per worker process),
        # not the model's bytes on every call.
        self._model_ref = [ray.put(files)]
        self._task = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=True)(index_group)

    def __exit__(self, *exc) -> None:
        import ray

        for ref in self._in_flight:  # an interrupted sync: nothing will read these
            ray.cancel(ref, force=True)
        self._in_flight.clear()
        if self._started:
            ray.shutdown()
            self._started = False

    # -- work ---------------------------------------------------------------------------------
    def submit(self, item, sha256: str, data: bytes, existed: bool) -> list[Outcome]:
        """Queue a new or changed file (with the bytes the driver hashed); return what is done."""
        if self._task is None:
            self._connect()
        # Bytes are kept until their group is done only when they are what the workers get.
        self._group.append((item, sha256, existed, data if self.spec.ship == "bytes" else None))
        self._group_bytes += len(data)
        if self._group_bytes >= self.spec.group_bytes or len(self._group) >= GROUP_FILES:
            self._launch()
        return self._collect(wait=len(self._in_flight) >= self._max_in_flight)

    def finish(self) -> list[Outcome]:
        """Everything still queued or in flight, once done."""
        if self._group:
            self._launch()
        done: list[Outcome] = []
        while self._in_flight:
            done += self._collect(wait=True)
        return done

    def _launch(self, group: list[tuple] | None = None) -> None:
        if group is None:
            group, self._group, self._group_bytes = self._group, [], 0
        files = [(str(item.path), data) for item, _, _, data in group]
        self._in_flight[self._task.remote(self._model_key, self._model_ref, files, self.max_length)] = group

    def _collect(self, *, wait: bool) -> list[Outcome]:
        """Finished groups as outcomes; with wait, block until at least one group finishes
        (Ray's pattern for bounding pending tasks: ray.wait)."""
        ray = import_ray()
        if not self._in_flight:
            return []
        refs = list(self._in_flight)
        ready, _ = ray.wait(refs, num_returns=1, timeout=None if wait else 0)
        if ready:  # and whatever else has finished meanwhile
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done: list[Outcome] = []
        for ref in ready:
            group = self._in_flight.pop(ref)
            try:
                results = ray.get(ref)
            except ray.exceptions.RayError as exc:
                done += self._failed(group, exc)
                continue
            for (item, sha, existed, _), (worker_sha, chunks, vectors, reason) in zip(group, results):
                # The worker hashes what it read: on a shared filesystem a file can change
                # between the driver's read and the worker's; keep its hash with its chunks.
                done.append(Outcome(item, worker_sha or sha, existed, chunks, vectors, reason, retry=worker_sha is None))
        return done

    def _failed(self, group: list[tuple], exc: BaseException) -> list[Outcome]:
        """A group that failed even after Ray's retry: retry its files one by one, so that one
        bad file (say, one that crashes its worker) does not fail its neighbours; a file that
        failed alone is recorded failed with the reason."""
        if len(group) > 1:
            for entry in group:
                self._launch([entry])
            return []
        item, sha, existed, _ = group[0]
        return [Outcome(item, sha, existed, None, None, failure_reason(exc), retry=True)]

