"""Indexing through a local Ray cluster vs a local sync, and the single writer's ceiling.

    python -m bench.cluster [FOLDER] [--every N] [--workers 1 2]

Indexes a copy of a real folder (default: the Python 3.11 docs sources; --every N keeps every
Nth file) into fresh libraries: locally with 1 and 2 encoder threads (the baseline), then through
a local Ray cluster of 1, 2, ... worker CPUs (one single-threaded encoder each) on this machine.
Rounds alternate the runs (a busy spell on a shared machine hits all of them); chunks/s is
from the median. Reports chunks/s, the overhead per chunk of the cluster (ms per chunk at 1 worker minus the local
sync's at 1 thread: same compute, the difference is Ray, shipping and the driver), and the
single writer's ceiling: the same chunks and vectors committed file by file into a fresh catalog
(SQLite, as a sync commits) plus the HNSW insert of them all, in chunks/s. From these it projects
what N workers would give. Needs the cluster extra (pip install -e '.[cluster]').
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import PYDOC_SOURCES, copy_sample, machine, md_table, source_folder


def index(folder: Path, lib_path: Path, **kwargs) -> tuple[float, int]:
    """(seconds, chunks) of a first index of folder into a fresh library."""
    from edge_dse import Library

    with Library(lib_path, progress=False, threads=kwargs.pop("threads", None)) as lib:
        t0 = time.perf_counter()
        report = lib.add(folder, **kwargs)
        seconds = time.perf_counter() - t0
        assert report.failed == 0, report.errors[:3]
        return seconds, report.chunks


def writer_ceiling(source: Path, lib_path: Path) -> tuple[float, float, int]:
    """(commit chunks/s, HNSW insert chunks/s, chunks): the writer's side of a sync alone, on the
    chunks and vectors of an indexed library re-committed file by file into a fresh one."""
    import numpy as np

    from edge_dse import Library
    from edge_dse.ingest import Chunk

    with Library(source, progress=False) as src:
        rows = src.catalog.db.execute(
            'SELECT path, "start", "end", heading, text, vector FROM chunks ORDER BY id').fetchall()
        files = {r.path: r for r in (src.catalog.file_state(p) for p in {row[0] for row in rows})}
    by_file: dict[str, list] = {}
    for row in rows:
        by_file.setdefault(row[0], []).append(row)

    prepared = [(path, [Chunk(r[1], r[2], r[4], r[3]) for r in chunk_rows],
                 np.stack([np.frombuffer(r[5], dtype=np.float32) for r in chunk_rows]))
                for path, chunk_rows in by_file.items()]
    with Library(lib_path, progress=False) as lib:
        t0 = time.perf_counter()
        for path, chunks, vectors in prepared:
            f = files[path]
            lib.catalog.put_file(f.folder, path, f.size, f.mtime_ns, f.sha256, chunks, vectors)
        commit = time.perf_counter() - t0
        t0 = time.perf_counter()
        lib.refresh_index()  # what a sync does at its end: insert the new chunks into the HNSW cache
        hnsw = time.perf_counter() - t0
    return len(rows) / commit, len(rows) / hnsw, len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=str(PYDOC_SOURCES))
    ap.add_argument("--every", type=int, default=1, help="keep every Nth file (sorted by path)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker CPUs of the local Ray cluster")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of all runs; chunks/s from the median")
    args = ap.parse_args()
    import ray

    from edge_dse.cluster import RayCluster

    src = source_folder(args.folder)
    tmp = Path(tempfile.mkdtemp(prefix="edge-dse-cluster-"))
    folder = tmp / "docs"
    files = copy_sample(src, folder, args.every)
    # Ray 2.60 writes an auth token under ~/.ray on first start: keep it in the bench's folder.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["HOME"] = str(tmp)
    runs = [(f"local sync, {t} encoder thread{'s' * (t > 1)}", f"local {t}", t) for t in (1, 2)]
    runs += [(f"local Ray cluster, {w} worker{'s' * (w > 1)}", f"ray {w}", w) for w in args.workers]
    seconds: dict[str, list[float]] = {key: [] for _, key, _ in runs}
    starts: dict[str, list[float]] = {key: [] for _, key, _ in runs}
    try:
        for r in range(args.rounds):  # rounds alternate the runs: a busy spell hits all of them
            for _, key, n in runs:
                lib = tmp / f"{key.replace(' ', '-')}-{r}"
                if key.startswith("local"):
                    secs, chunks = index(folder, lib, threads=n)
                else:
                    t0 = time.perf_counter()
                    ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
                    starts[key].append(time.perf_counter() - t0)
                    try:
                        secs, chunks = index(folder, lib, cluster=RayCluster())
                    finally:
                        ray.shutdown()
                seconds[key].append(secs)
        commit, hnsw, n_writer = writer_ceiling(tmp / "local-1-0", tmp / "writer")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rates = {key: chunks / statistics.median(secs) for key, secs in seconds.items()}
    rows = [[name, " / ".join(f"{x:.1f}" for x in seconds[key]), chunks, f"{rates[key]:.1f}",
             " / ".join(f"{x:.1f}" for x in starts[key])] for name, key, _ in runs]
    print(f"# Indexing on a local Ray cluster — {machine()}\n")
    print(f"folder: {src}, every {args.every} file(s): {files} files\n")
    print(md_table(["run", "seconds (each round)", "chunks", "chunks/s (median)", "cluster start s (not in seconds)"], rows))
    per_worker = rates.get("ray 1")
    if per_worker:
        overhead = 1000 / per_worker - 1000 / rates["local 1"]
        print(f"\noverhead per chunk (1 Ray worker vs the local sync at 1 thread): {overhead:.2f} ms "
              f"({1000 / per_worker:.1f} vs {1000 / rates['local 1']:.1f} ms a chunk)")
    writer = 1 / (1 / commit + 1 / hnsw)
    print(f"\nsingle writer, on the same {n_writer} chunks and vectors: SQLite commit (one transaction a file) "
          f"{commit:.0f} chunks/s, HNSW insert {hnsw:.0f} chunks/s, both {writer:.0f} chunks/s")
    if per_worker:
        most = max(w for w in args.workers)
        efficiency = rates[f"ray {most}"] / (most * per_worker)
        print(f"\n{most} workers ran at {efficiency:.0%} of {most}x one worker. N workers of this speed: "
              f"~N x {per_worker:.1f} chunks/s, until the writer's {writer:.0f} chunks/s caps it "
              f"at N ~ {writer / per_worker:.0f} workers")


if __name__ == "__main__":
    main()
