"""What a Ray cluster buys: indexing through a local Ray cluster vs a local sync (and the single
writer's ceiling), and the distillation's stage 1 vectors through Ray vs on this machine. Both need
the cluster extra (pip install -e '.[cluster]'), not the bench one.

    python -m bench.cluster index [FOLDER] [--every N] [--workers 1 2] [--rounds 2]
    python -m bench.cluster distill [--pairs 1000] [--shard 512] [--model baseline]

index: indexes a copy of a real folder (default: the Python 3.11 docs sources; --every N keeps
every Nth file) into fresh libraries: locally with 1 and 2 encoder threads (the baseline), then
through a local Ray cluster of 1, 2, ... worker CPUs (one single-threaded encoder each) on this
machine. Rounds alternate the runs (a busy spell on a shared machine hits all of them); chunks/s
is from the median. Reports chunks/s, the overhead per chunk of the cluster (ms per chunk at 1
worker minus the local sync's at 1 thread: same compute, the difference is Ray, shipping and the
driver), and the single writer's ceiling: the same chunks and vectors committed file by file into
a fresh catalog (SQLite, as a sync commits) plus the HNSW insert of them all, in chunks/s. From
these it projects what N workers would give.

distill: stage 1's vectors (hpd_vectors.label) on this machine vs through `edge-dse distill
--ray`'s map. Builds a stage 1 text set (hpd_texts) from human-written pairs: the first docstring
line of the standard library's modules, classes and functions, and the rest of the docstring
(read with ast, never imported). Labels it twice into fresh folders: locally (the labeller's 2
threads), then with ray_steps.RayMap("auto"), which joins $RAY_ADDRESS or the cluster this machine
joined, else starts a local one here (its start is in the time). Prints the seconds of each, and
whether the two folders hold the same files and vectors.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import PYDOC_SOURCES, copy_sample, machine, md_table, source_folder


# -- index: a sync through Ray vs a local one ----------------------------------------------------
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


def run_index(args) -> int:
    """Every run, round after round, then the table, the overhead, the writer and the projection."""
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
    return 0


# -- distill: stage 1's vectors through Ray vs on this machine ------------------------------------
def stdlib_pairs(limit: int) -> list:
    """Up to `limit` (first docstring line, the rest) pairs of the standard library, as Debian pairs."""
    from edge_dse.distill.data import Pair

    out = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                continue
            head, _, body = (ast.get_docstring(node) or "").strip().partition("\n")
            body = " ".join(body.split())
            if len(head) >= 15 and len(body) >= 80:
                out.append(Pair(head.strip(), body[:400], f"debian:{path.stem}.{getattr(node, 'name', '')}.{len(out)}", "debian"))
            if len(out) >= limit:
                return out
    return out


def run_distill(args) -> int:
    """The same stage 1 texts labelled locally, then through RayMap: seconds, and the same shards?"""
    from edge_dse.distill import hpd_texts, hpd_vectors
    from edge_dse.distill.data import write_jsonl
    from edge_dse.distill.ray_steps import RayMap

    with tempfile.TemporaryDirectory(prefix="bench_distill_ray_") as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        write_jsonl(stdlib_pairs(args.pairs), root / "data" / "debian.train.jsonl")
        hpd_texts.build(root / "data", root / "texts", sources=("debian",), gcide_root=None, faq=None)
        _, pairs = hpd_texts.read(root / "texts")
        labeller = hpd_vectors.onnx_labeller(args.model)
        t = time.perf_counter()
        n = hpd_vectors.label(root / "texts", root / "local", labeller, n_pairs=len(pairs), shard=args.shard, log=lambda line: None)
        local_s = time.perf_counter() - t
        t = time.perf_counter()
        with RayMap("auto") as ray_map:
            hpd_vectors.label(root / "texts", root / "ray", labeller, n_pairs=len(pairs), shard=args.shard,
                              log=lambda line: None, mapper=ray_map)
            workers = ray_map.workers
        ray_s = time.perf_counter() - t
        local = sorted((root / "local").glob("shard-*.npy"))
        on_ray = sorted((root / "ray").glob("shard-*.npy"))
        diff = max(float(np.abs(np.load(a).astype(np.float32) - np.load(b).astype(np.float32)).max())
                   for a, b in zip(local, on_ray))
        print(json.dumps({"texts": n, "shards": len(local), "local_seconds": round(local_s, 1),
                          "ray_seconds_with_start": round(ray_s, 1), "ray_workers": workers,
                          "same_files": [p.name for p in local] == [p.name for p in on_ray], "max_abs_difference": diff}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("index", help="a sync through a local Ray cluster vs a local one, and the writer's ceiling")
    p.add_argument("folder", nargs="?", default=str(PYDOC_SOURCES))
    p.add_argument("--every", type=int, default=1, help="keep every Nth file (sorted by path)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker CPUs of the local Ray cluster")
    p.add_argument("--rounds", type=int, default=2, help="rounds of all runs; chunks/s from the median")
    p.set_defaults(run=run_index)
    p = sub.add_parser("distill", help="stage 1's vectors through Ray vs on this machine")
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--shard", type=int, default=512, help="texts a shard: one piece of work")
    p.add_argument("--model", default="baseline", help="the labeller: a shipped model's name or a folder")
    p.set_defaults(run=run_distill)
    args = ap.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
