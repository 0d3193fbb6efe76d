"""Which search: edge_dse (SQLite + HNSW) against exact numpy search and Chroma, how its HNSW
index is tuned, and which search mode is the default.

    python -m bench.search compare [--sizes 10000 100000 1000000] [--real 100000] [--queries 200] [--hybrid]
    python -m bench.search hnsw [--vectors FILE] [--large] [--M 8 16 32] [--ef-construction 100 200] [--ef ...]
    python -m bench.search ef [--sizes 100000 1000000] [--ef 320 480 640 960 1280]
    python -m bench.search modes [--data work/distill/data] [--model NAME|DIR] [--rerank] [--json FILE]

compare (the harness' search section): the very same vectors in each engine at each size. Up to
--real distinct real passages (the Python docs, then the Debian descriptions and WordNet glosses
of the distiller's splits: bench.common.real_passages) embedded by the search encoder (the
student when it exists, else the shipped baseline; cached by real_vectors), replicated with
jitter beyond that (replicate). Every (engine, size) runs as two child processes: one builds the
store on disk and writes the exact top 10 of each query, the next opens the store as an app
would and runs the queries, so its resident-memory growth is the store's RAM cost, not the
build's. End-to-end latency includes encoding the query with the same encoder for every engine;
for edge_dse it is Library.search (hits with their text), for Chroma a query that returns
documents. --hybrid also times edge_dse's hybrid search (vector + keyword, fused).

hnsw: HNSW alone (hnswlib, no catalog) over a grid of (M, ef_construction) and ef: recall@10
against exact search, build time, index size and single-query latency on one thread, as the app
searches. --vectors takes a .npy matrix or an .npz with a "vectors" array (real_vectors' cache is
one); --query-vectors the same for real queries (else the last --queries passages are held out as
queries and never indexed). Without --vectors the data are SYNTHETIC (synthetic(): a power-law
spectrum, nested topics, and queries off the passages' manifold), and every table says so. Each
(M, ef_construction) is built --runs times (hnswlib inserts with several threads, so builds
differ); the table gives medians over runs of build time and recall, and p50/p99 latency pooled
over runs. AnnIndex.DEFAULTS' M=16, ef_construction=200 came from `hnsw --large` on synthetic data
(N=10k: 3 runs; N=100k: 1 run), dim 384, 200 queries, a 2-core shared AMD EPYC; its docstring has
the rows that decided. Build times on a shared machine vary up to 2x between runs; recall does not.

ef: the same measurement on the compare section's real vectors (real passages, jittered copies
past them, 200 real queries), with edge_dse's M and ef_construction, over several ef: how
AnnIndex.DEFAULTS["ef_search"] (640) was chosen.

modes: which search mode should be the default, vector, keyword or hybrid, on every held-out
split that `edge-dse distill` writes (debian, wordnet, pydoc, the Python FAQ). Each is indexed as
files in a real Library (one passage a file: the reported corpus of `edge-dse eval`, the same
seeded 200 queries over up to 1500 passages, plus the positives of the dev queries), and every
query is searched through Library.search in each mode. A hit counts when it comes from the
query's file; nDCG@10 over files.
- The hybrid's vector weight (modes.fuse: min-max scaled scores, mixed) is tuned on dev queries:
  a seeded sample of the queries the report does not use (as the teacher's dev lists; the FAQ has
  none to spare, all its questions are reported), by the same rule as the default: the best mean
  dev nDCG@10 among the weights whose hybrid loses no dev split by more than MAX_SPLIT_LOSS to
  vector, keyword or itself there.
- Reciprocal rank fusion with equal weights (the hybrid before, Cormack et al. 2009, k = 60) is
  measured beside it, for comparison only.
- The default is then chosen on the reported queries by modes.choose_default: the best mean among
  the modes that lose no split by more than modes.MAX_SPLIT_LOSS to the best mode there.
- The fusion of the shipped weight is also run through the real hybrid search, which must give the
  same top 10 as fusing the two lists here (else the measurement would not be of the shipped code).
It prints the dev grid, the reported table with p50 search latency, and what edge_dse/modes.py
should say; --json writes it all (bench/results/modes.json is what the shipped settings came from).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import (chroma_add, chroma_collection, chroma_missing, child_main, exact_top_k, machine, md_table,
                          peak_rss_mb, percentile, pydoc_queries, ratio, real_passages, rss_mb, run_child,
                          search_encoder, times)
from edge_dse import modes
from edge_dse.distill.evaluate import ndcg10

K = 10  # every table here is about the top 10: recall@10, nDCG@10

# The embedding cache; a test points it at a temporary folder.
WORK = Path(os.environ.get("EDGE_DSE_BENCH_WORK", "work/bench"))


# -- the vectors every engine is given -----------------------------------------------------------
@dataclass
class FakeChunk:
    """A chunk as Catalog.put_file takes it, for text that was never a file."""

    start: int
    end: int
    text: str
    heading: str = ""


def real_vectors(encoder, n: int, data_dir: str | None = None) -> tuple[list[str], np.ndarray, dict]:
    """(texts, their vectors, {source: count}) for up to n real passages (bench.common.real_passages),
    cached per encoder under WORK with one digest per text: the rows whose texts still match are
    reused, only the rest are embedded (so going from 10k to 100k passages embeds 90k)."""
    WORK.mkdir(parents=True, exist_ok=True)
    cache = WORK / f"passages-{encoder.id.replace('/', '_')}.npz"
    texts, counts = real_passages(n, data_dir)
    digests = np.array([hashlib.sha256(t.encode("utf-8")).hexdigest()[:16] for t in texts])
    done = np.zeros((0, encoder.dim), np.float32)
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        old = data["digests"][: len(digests)]
        same = np.flatnonzero(old != digests[: len(old)])
        done = data["vectors"][: same[0] if len(same) else len(old)]
    if len(done) < len(texts):
        t0 = time.perf_counter()
        more = encoder.encode(texts[len(done):], batch_size=32, progress=True)
        print(f"(embedded {len(more)} real passages in {time.perf_counter() - t0:.0f} s; cached in {cache})")
        done = np.vstack([done, more])
        np.savez(cache, vectors=done, digests=digests)
    return texts, done[: len(texts)], counts


def replicate(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """`size` rows: the real vectors, then jittered copies of them (each a distinct point near
    its original), so every engine compared is given the very same matrix."""
    full = vectors[np.arange(size) % len(vectors)].copy()
    rng = np.random.default_rng(seed)
    for lo in range(len(vectors), size, 100_000):  # in blocks: 1M x 384 noise at once is 3 GB
        block = full[lo: lo + 100_000]
        block += rng.normal(0, 0.02, block.shape).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return full


def real_query_vectors(encoder, n: int) -> np.ndarray:
    """The vectors of n real queries (Python docs headings), encoded one at a time as the searches
    are: dynamic int8 quantises each batch with its own scale, so a batched query vector differs
    slightly, and the truth must be the same query's."""
    return np.vstack([encoder.encode([q], kind="query") for q in pydoc_queries(n)])


def build_library(folder: Path, encoder, texts: list[str], vectors: np.ndarray, size: int, seed: int = 0):
    """(a Library at folder holding `size` chunks: the real texts with their vectors replicated as
    by replicate, 100 chunks a file; seconds to insert them; seconds to build the HNSW index)."""
    from edge_dse import Library

    lib = Library(folder, model=encoder, progress=False)
    full = replicate(vectors, size, seed)
    per_file = 100
    t0 = time.perf_counter()
    for f, lo in enumerate(range(0, size, per_file)):
        idx = np.arange(lo, min(size, lo + per_file))
        chunks = [FakeChunk(0, len(texts[i % len(texts)]), texts[i % len(texts)]) for i in idx]
        lib.catalog.put_file("/bench", f"/bench/file-{f:06d}.txt", 1, 1, f"{f:064d}", chunks, full[idx])
    t_insert = time.perf_counter() - t0
    t0 = time.perf_counter()
    lib.refresh_index()
    return lib, t_insert, time.perf_counter() - t0


# -- compare: edge_dse vs exact numpy search vs Chroma ------------------------------------------
ENGINES = ("edge_dse", "exact numpy", "chroma")


def engine_data(p: dict):
    """(encoder, real texts, a function making the full matrix, {source: count}) for a child."""
    enc = search_encoder(p.get("student"))
    texts, vectors, counts = real_vectors(enc, p["real"], p.get("data"))
    return enc, texts, lambda: replicate(vectors, p["size"]), counts


def build(p: dict) -> dict:
    """The build child: the engine's store at p["folder"], and the exact top 10 of each query."""
    enc, texts, full, counts = engine_data(p)
    folder = Path(p["folder"])
    qv = real_query_vectors(enc, p["queries"])
    t0 = time.perf_counter()
    if p["engine"] == "edge_dse":
        lib, _, _ = build_library(folder, enc, texts, full_vectors := full(), p["size"])
        ids = lib.catalog.all_ids()  # ids follow insertion order: row i of the matrix is ids[i]
        lib.close()
    elif p["engine"] == "exact numpy":
        full_vectors = full()
        np.save(folder / "vectors.npy", full_vectors)
        ids = np.arange(p["size"])
    else:
        full_vectors = full()
        client, col = chroma_collection(folder)
        chroma_add(client, col, full_vectors, [texts[i % len(texts)] for i in range(p["size"])])
        ids = np.arange(p["size"])
    t_build = time.perf_counter() - t0
    top = exact_top_k(full_vectors, qv, 10)
    np.save(folder.parent / f"{folder.name}-truth.npy", ids[top])
    return {"build_s": t_build, "build_peak_rss_mb": peak_rss_mb(), "real_by_source": counts,
            "disk_bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())}


def query(p: dict) -> dict:
    """The query child: the store opened as an app would, every query timed and checked."""
    enc = search_encoder(p.get("student"))
    queries = pydoc_queries(p["queries"])
    truth = np.load(Path(p["folder"] + "-truth.npy"))
    enc.encode(queries[:8], kind="query")  # warm-up, before the baseline RSS
    before = rss_mb()
    hybrid = None  # edge_dse's hybrid search, timed when asked (--hybrid): the others have none
    if p["engine"] == "edge_dse":
        from edge_dse import Library

        lib = Library(p["folder"], model=enc, readonly=True, progress=False)
        lib.search(queries[0], k=10, mode="vector")  # loads the HNSW cache
        index = lib.ann_index()
        full = lambda q: lib.search(q, k=10, mode="vector")  # noqa: E731
        only = lambda v: index.search(v, 10)[0]  # noqa: E731
        if p.get("hybrid"):
            hybrid = lambda q: lib.search(q, k=10, mode="hybrid")  # noqa: E731
    elif p["engine"] == "exact numpy":
        matrix = np.load(Path(p["folder"]) / "vectors.npy")
        only = lambda v: exact_top_k(matrix, v[None], 10)[0]  # noqa: E731
        full = lambda q: only(enc.encode([q], kind="query")[0])  # noqa: E731
    else:
        _, col = chroma_collection(p["folder"], create=False)
        only = lambda v: np.array(col.query(query_embeddings=[v], n_results=10, include=[])["ids"][0], dtype=np.int64)  # noqa: E731
        full = lambda q: col.query(query_embeddings=enc.encode([q], kind="query"), n_results=10, include=["documents"])  # noqa: E731
        only(enc.encode([queries[0]], kind="query")[0])  # loads the index
    e2e, search_only, hybrid_ms, hits = [], [], [], 0
    for q, want in zip(queries, truth):
        t0 = time.perf_counter()
        full(q)
        e2e.append((time.perf_counter() - t0) * 1000)
        if hybrid:
            t0 = time.perf_counter()
            hybrid(q)
            hybrid_ms.append((time.perf_counter() - t0) * 1000)
        v = enc.encode([q], kind="query")[0]
        t0 = time.perf_counter()
        got = only(v)
        search_only.append((time.perf_counter() - t0) * 1000)
        hits += len(set(np.asarray(got).tolist()) & set(want.tolist()))
    out = {"p50_ms": percentile(e2e, 50), "p99_ms": percentile(e2e, 99), "search_p50_ms": percentile(search_only, 50),
           "recall": hits / (10 * len(queries)), "ram_mb": rss_mb() - before, "query_peak_rss_mb": peak_rss_mb()}
    if hybrid_ms:
        out.update(hybrid_p50_ms=percentile(hybrid_ms, 50), hybrid_p99_ms=percentile(hybrid_ms, 99))
    return out


def measure(p: dict) -> dict:
    """What a child started by section (run_child) measures."""
    return build(p) if p["step"] == "build" else query(p)


def section(sizes: list[int], real: int, queries: int, student: str | None = None,
            timeout: float | None = None, data: str | None = None, hybrid: bool = False) -> tuple[str, dict]:
    """(the search table in markdown: every engine at every size, p50 against exact numpy search;
    the figures the targets are judged on). hybrid: two more columns, edge_dse's hybrid search."""
    from edge_dse.store.ann import AnnIndex

    enc_id = search_encoder(student).id
    hnsw = ", ".join(f"{k}={v}" for k, v in AnnIndex.DEFAULTS.items())
    headers = ["engine", "chunks", "build s", "p50 ms end-to-end", "p99 ms", "search-only p50 ms", "recall@10 vs exact",
               "p50 vs exact numpy", "disk bytes/chunk", "RAM bytes/chunk (searching)", "peak RSS MB build / search"]
    headers += ["hybrid p50 ms end-to-end", "hybrid p99 ms"] if hybrid else []
    table, facts, sources = [], {"p50_ms": {}, "recall": {}}, {}
    for size in sizes:
        got, notes = {}, {}
        for engine in ENGINES:
            if engine == "chroma" and chroma_missing():
                notes[engine] = [engine, f"not available: {chroma_missing()}"]
                continue
            tmp = Path(tempfile.mkdtemp(prefix="bench-search-"))
            p = {"engine": engine, "size": size, "real": real, "queries": queries, "student": student,
                 "folder": str(tmp / "store"), "data": data, "hybrid": hybrid}
            (tmp / "store").mkdir()
            try:
                b = run_child("bench.search", {**p, "step": "build"}, timeout)
                q = run_child("bench.search", {**p, "step": "query"}, timeout) if "error" not in b else {}
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if "error" in b or "error" in q:
                notes[engine] = [engine, f"failed: {b.get('error') or q.get('error')}"]
                continue
            got[engine] = {**b, **q}
            sources = b.get("real_by_source") or sources
        if "edge_dse" in got:
            facts["p50_ms"][size], facts["recall"][size] = got["edge_dse"]["p50_ms"], got["edge_dse"]["recall"]
        for engine in ENGINES:
            if engine in notes:
                table.append(notes[engine])
                continue
            r = got[engine]
            table.append([engine, size, r["build_s"], r["p50_ms"], r["p99_ms"], r["search_p50_ms"], r["recall"],
                          times(ratio(got.get("exact numpy", {}).get("p50_ms"), r["p50_ms"])),
                          f"{r['disk_bytes'] / size:.0f}", f"{r['ram_mb'] * 2**20 / size:.0f}",
                          f"{r['build_peak_rss_mb']:.0f} / {r['query_peak_rss_mb']:.0f}"]
                         + ([r["hybrid_p50_ms"], r["hybrid_p99_ms"]] if "hybrid_p50_ms" in r else []))
    n_real = sum(sources.values())
    made_of = " + ".join(f"{n} {src}" for src, n in sources.items())
    return (f"vectors from `{enc_id}` on {n_real} distinct real passages ({made_of}; an index larger than that holds "
            f"them and jittered copies of them, {max(sizes) / max(n_real, 1):.0f} per passage at {max(sizes)}), "
            f"{queries} real queries (Python docs headings), "
            f"HNSW {hnsw} for edge_dse and Chroma alike; "
            "end-to-end = encode the query + search + fetch (edge_dse: hits with text and file; Chroma: documents; "
            "numpy: row ids only); 'p50 vs exact numpy' > 1 means faster than exact search\n\n" + md_table(headers, table)), facts


# -- hnsw and ef: HNSW alone, its parameters ---------------------------------------------------
GRID_M = (8, 16, 32)
GRID_EF_CONSTRUCTION = (100, 200)
GRID_EF = (10, 20, 40, 80, 160, 320)
TARGET_RECALL = 0.98


def synthetic(n: int, n_queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(passages, queries): clustered unit vectors shaped like a bi-encoder's embeddings.

    - a power-law spectrum (variance of the i-th direction ~ 1/i), as learned embeddings have,
      instead of isotropic noise;
    - topics within topics: 100 broad ones, ~0.3*n narrow ones inside them;
    - a direction shared by all passages (random passage pairs have cosine ~0.13, as
      sentence-transformer embeddings do);
    - queries from the same topics but off the passages' manifold (their own shared direction,
      more noise): a query's best passage has cosine ~0.5, not ~0.9. In-distribution queries
      (held-out passages) make HNSW look better than it is for real search.
    """
    rng = np.random.default_rng(seed)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    scale = (np.arange(1, dim + 1) ** -0.5).astype(np.float32)
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)

    def gaussian(m):
        return unit((rng.normal(size=(m, dim)).astype(np.float32) * scale) @ rotation)

    broad = gaussian(100)
    n_narrow = max(100, int(0.3 * n))
    narrow = unit(broad[rng.integers(0, len(broad), n_narrow)] + 0.8 * gaussian(n_narrow))
    topic = rng.integers(0, n_narrow, n + n_queries)
    passage_dir, query_dir = unit(rng.normal(size=(2, dim)))
    passages = unit(0.5 * passage_dir + narrow[topic[:n]] + 0.9 * gaussian(n))
    queries = unit(0.5 * query_dir + narrow[topic[n:]] + 1.5 * gaussian(n_queries))
    return passages.astype(np.float32), queries.astype(np.float32)


def load_vectors(path: Path) -> np.ndarray:
    """Unit rows of a .npy matrix or of an .npz's "vectors" array."""
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.lib.npyio.NpzFile):
        data = data["vectors"]
    x = np.asarray(data, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def build_hnsw(base: np.ndarray, M: int, ef_construction: int, threads: int):
    """(an hnswlib index of base's rows, seconds to insert them)."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=M, ef_construction=ef_construction)
    t0 = time.perf_counter()
    index.add_items(base, np.arange(len(base)), num_threads=threads)
    return index, time.perf_counter() - t0


def index_bytes(index) -> int:
    """The index's size as saved on disk."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.hnsw"
        index.save_index(str(path))
        return path.stat().st_size


def hnsw_grid(base: np.ndarray, queries: np.ndarray, runs: int, threads: int, grid_m, grid_efc, grid_ef) -> list[dict]:
    """A row per (M, ef_construction, ef): build time, index bytes, recall@10 vs exact, p50/p99 ms."""
    truth = exact_top_k(base, queries, K)
    rows = []
    for M in grid_m:
        for efc in grid_efc:
            builds, size = [], 0
            per_ef = {ef: {"recall": [], "lat": []} for ef in grid_ef}
            for _ in range(runs):
                index, seconds = build_hnsw(base, M, efc, threads)
                builds.append(seconds)
                size = index_bytes(index)
                index.set_num_threads(1)
                for ef in grid_ef:
                    index.set_ef(max(ef, K))
                    found = np.empty((len(queries), K), dtype=np.int64)
                    for i, q in enumerate(queries):
                        t0 = time.perf_counter()
                        labels, _ = index.knn_query(q, k=K)
                        per_ef[ef]["lat"].append((time.perf_counter() - t0) * 1000)
                        found[i] = labels[0]
                    hits = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist()))
                    per_ef[ef]["recall"].append(hits / truth.size)
                del index
            for ef in grid_ef:
                rows.append({
                    "M": M, "efc": efc, "ef": ef, "build_s": statistics.median(builds), "bytes": size,
                    "recall": statistics.median(per_ef[ef]["recall"]),
                    "p50": percentile(per_ef[ef]["lat"], 50), "p99": percentile(per_ef[ef]["lat"], 99),
                })
            print(f"  (M={M}, ef_construction={efc}: built {runs}x, median {statistics.median(builds):.2f} s)", flush=True)
    return rows


def hnsw_table(rows: list[dict]) -> str:
    """hnsw_grid's rows in markdown, ** marking recall >= TARGET_RECALL."""
    lines = ["| M | ef_construction | ef | build s | index MB | recall@10 | p50 ms | p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = " **" if r["recall"] >= TARGET_RECALL else ""
        lines.append(f"| {r['M']} | {r['efc']} | {r['ef']} | {r['build_s']:.2f} | {r['bytes'] / 1e6:.1f} | "
                     f"{r['recall']:.4f}{mark} | {r['p50']:.3f} | {r['p99']:.3f} |")
    return "\n".join(lines)


def pick(rows: list[dict]) -> dict | None:
    """The cheapest point that reaches the target: lowest p50 latency, then smaller index,
    then faster build."""
    ok = [r for r in rows if r["recall"] >= TARGET_RECALL]
    return min(ok, key=lambda r: (round(r["p50"], 2), r["bytes"], r["build_s"])) if ok else None


def run_hnsw(args) -> int:
    """The grid on synthetic vectors or on --vectors, and its cheapest point at the target."""
    sizes = [(args.n, args.runs)] + ([(100_000, 1)] if args.large else [])
    print(f"machine: {machine()}; build threads {args.threads}, queries on 1 thread")
    for n, runs in sizes:
        if args.vectors:
            data = load_vectors(args.vectors)
            held_out = 0 if args.query_vectors else args.queries
            if len(data) < n + held_out:
                print(f"{args.vectors} holds {len(data)} vectors: fewer than N={n} + {held_out} held-out queries")
                n = len(data) - held_out
            base = data[:n]
            if args.query_vectors:
                queries = load_vectors(args.query_vectors)[: args.queries]
                label = f"real embeddings from {args.vectors}, queries from {args.query_vectors}"
            else:
                queries = data[len(data) - held_out :]
                label = f"real embeddings from {args.vectors} (queries: held-out passages, easier than real queries)"
        else:
            base, queries = synthetic(n, args.queries, args.dim)
            label = "SYNTHETIC clustered unit vectors shaped like text embeddings (not real text)"
        print(f"\n### N={n:,}, dim {base.shape[1]}, {len(queries)} queries, {runs} run(s): {label}\n", flush=True)
        t0 = time.perf_counter()
        rows = hnsw_grid(base, queries, runs, args.threads, args.M, args.ef_construction, args.ef)
        print()
        print(hnsw_table(rows))
        best = pick(rows)
        print(f"\n(** = recall@10 >= {TARGET_RECALL}; measured in {time.perf_counter() - t0:.0f} s)")
        if best:
            print(f"cheapest at target: M={best['M']}, ef_construction={best['efc']}, ef={best['ef']} "
                  f"(recall {best['recall']:.4f}, p50 {best['p50']:.3f} ms)")
        else:
            print(f"no grid point reaches recall {TARGET_RECALL}: widen --ef / --M")
    return 0


def run_ef(args) -> int:
    """ef_search on real text: the grid at edge_dse's M and ef_construction, on compare's vectors."""
    from edge_dse.store.ann import AnnIndex

    enc = search_encoder(args.student)
    _, vectors, counts = real_vectors(enc, args.real, args.data)
    queries = real_query_vectors(enc, args.queries)
    print(f"{machine()}; `{enc.id}` on {sum(counts.values())} real passages ({counts}), jittered copies past them; "
          f"{len(queries)} real queries, one search thread\n")
    for size in args.sizes:
        rows = hnsw_grid(replicate(vectors, size), queries, 1, args.threads, [AnnIndex.DEFAULTS["M"]],
                         [AnnIndex.DEFAULTS["ef_construction"]], args.ef)
        print(f"\n### {size} chunks\n\n{hnsw_table(rows)}\n", flush=True)
    return 0


# -- modes: which search mode is the default ----------------------------------------------------
HYBRID_WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the hybrid's vector weights tried on dev queries
RRF = "hybrid, RRF (before)"


def split_sets(data_dir: Path, name: str, queries: int, corpus: int, dev_queries: int):
    """(corpus passages, reported [(query, passage index)], dev [(query, passage index)])."""
    from edge_dse.distill.data import read_jsonl
    from edge_dse.distill.evaluate import load_split

    reported = load_split(data_dir, name, max_queries=queries, max_corpus=corpus)
    asked = set(reported.queries)
    spare = [p for p in read_jsonl(data_dir / f"{name}.jsonl") if p.query not in asked]
    dev = random.Random(1).sample(spare, min(dev_queries, len(spare)))
    docs = list(dict.fromkeys(reported.corpus + [p.passage for p in dev]))
    where = {d: i for i, d in enumerate(docs)}
    return (docs, list(zip(reported.queries, reported.positive)), [(p.query, where[p.passage]) for p in dev])


def first_per_file(ranked: list[tuple[int, float]], file_of: dict[int, int]) -> list[int]:
    """The files of a ranked chunk list, each at its best chunk's place."""
    return list(dict.fromkeys(file_of[cid] for cid, _ in ranked))


def rrf(vector, keyword, depth: int, k: int = 60) -> list[tuple[int, float]]:
    """Equal-weight reciprocal rank fusion, the hybrid before modes.fuse (for comparison)."""
    fused: dict[int, float] = {}
    for results in (vector, keyword):
        for rank, (cid, _) in enumerate(results[:depth]):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (k + rank + 1)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def weight_choice(dev: dict[str, dict[str, float]], weights, max_split_loss: float) -> float:
    """The dev rule for the hybrid's weight (see the module doc); dev: {mode: {split: nDCG}}."""
    def table(w):
        return {m: dev[m] for m in ("vector", "keyword", f"hybrid w={w:g}")}

    loss = {w: modes.split_losses(table(w))[f"hybrid w={w:g}"] for w in weights}
    mean = {w: sum(dev[f"hybrid w={w:g}"].values()) / len(dev[f"hybrid w={w:g}"]) for w in weights}
    ok = [w for w in weights if loss[w] <= max_split_loss + 1e-9]
    return max(ok, key=lambda w: mean[w]) if ok else min(weights, key=lambda w: (loss[w], -mean[w]))


def measure_split(lib, folder: Path, name: str, docs, reported, dev, weights, reranker=None, log=print) -> dict:
    """One split indexed into lib as files, its dev and reported queries scored in every mode."""
    split_dir = folder / name
    split_dir.mkdir(parents=True)
    for i, text in enumerate(docs):
        (split_dir / f"p{i:05d}.txt").write_text(text, encoding="utf-8")
    t = time.perf_counter()
    lib.add(split_dir)
    log(f"{name}: {len(docs)} files indexed in {time.perf_counter() - t:.0f} s; "
        f"{len(reported)} reported queries, {len(dev)} dev queries")
    file_index = {str(split_dir / f"p{i:05d}.txt"): i for i in range(len(docs))}
    depth = max(K, modes.FUSION_DEPTH)

    def lists(query):
        out, ms = {}, {}
        for mode in ("vector", "keyword"):
            t0 = time.perf_counter()
            hits = lib.search(query, k=depth, mode=mode)
            ms[mode] = (time.perf_counter() - t0) * 1000
            out[mode] = hits
        return out, ms

    def score(pairs, with_latency: bool):
        by = {f"hybrid w={w:g}": [] for w in weights} | {"vector": [], "keyword": [], RRF: []}
        latency = {"vector": [], "keyword": [], "hybrid": []}
        mismatches = 0
        for query, positive in pairs:
            hits, ms = lists(query)
            file_of = {h.chunk_id: file_index[h.path] for mode in hits for h in hits[mode]}
            ranked = {mode: [(h.chunk_id, h.score) for h in hits[mode]] for mode in hits}
            for mode in ("vector", "keyword"):
                by[mode].append(ndcg10(first_per_file(ranked[mode], file_of), positive))
                latency[mode].append(ms[mode])
            for w in weights:
                fused = modes.fuse(ranked["vector"], ranked["keyword"], vector_weight=w, depth=depth)
                by[f"hybrid w={w:g}"].append(ndcg10(first_per_file(fused, file_of), positive))
            by[RRF].append(ndcg10(first_per_file(rrf(ranked["vector"], ranked["keyword"], depth), file_of), positive))
            if with_latency:  # the shipped hybrid, through the real search: same top 10 as fused here?
                t0 = time.perf_counter()
                real = lib.search(query, k=K, mode="hybrid")
                latency["hybrid"].append((time.perf_counter() - t0) * 1000)
                shipped = modes.fuse(ranked["vector"], ranked["keyword"], depth=depth)[:K]
                mismatches += [h.chunk_id for h in real] != [cid for cid, _ in shipped]
        return ({m: round(sum(v) / len(v), 4) for m, v in by.items()},
                {m: round(statistics.median(v), 1) for m, v in latency.items() if v}, mismatches)

    dev_scores = score(dev, False)[0] if dev else None
    rep_scores, p50, mismatches = score(reported, True)
    if reranker is not None:  # the whole default pipeline: the default mode's hits, the teacher on top
        for mode in ("vector", modes.DEFAULT_MODE) if modes.DEFAULT_MODE != "vector" else ("vector",):
            gains, rerank_ms = [], []
            for query, positive in reported:
                hits = lib.search(query, k=max(K, reranker.default_depth), mode=mode)
                t0 = time.perf_counter()
                order = lib.rerank(query, hits, teacher=reranker)
                rerank_ms.append((time.perf_counter() - t0) * 1000)
                gains.append(ndcg10(list(dict.fromkeys(file_index[h.path] for h in order)), positive))
            rep_scores[f"{mode} + teacher@{reranker.default_depth}"] = round(sum(gains) / len(gains), 4)
            p50[f"{mode} + teacher"] = round(statistics.median(rerank_ms), 1)
    return {"files": len(docs), "reported_queries": len(reported), "dev_queries": len(dev),
            "dev": dev_scores, "reported": rep_scores, "p50_ms": p50, "hybrid_mismatches": mismatches}


def run_modes(args) -> int:
    """Every split measured, the dev grid and the reported table printed, the default chosen."""
    from edge_dse import Encoder, Library
    from edge_dse.distill.evaluate import HELD_OUT

    splits = [s for s in HELD_OUT if (args.data / f"{s}.jsonl").is_file()]
    if not splits:
        raise SystemExit(f"python -m bench.search modes: no held-out splits in {args.data}: make them with "
                         f"`edge-dse distill --until data` (or pass --data DIR)")
    encoder = Encoder(args.model, threads=args.threads) if args.model else Encoder(threads=args.threads)
    reranker = None
    if args.rerank:
        from edge_dse.rerank import Reranker

        reranker = Reranker(threads=args.threads)
    root = Path(tempfile.mkdtemp(prefix="edge-dse-mode-choice-"))
    results = {}
    try:
        for name in splits:
            docs, reported, dev = split_sets(args.data, name, args.queries, args.corpus, args.dev_queries)
            # One library a split: a query's hits come from its own split's passages only.
            with Library(root / f"lib-{name}", model=encoder, progress=False) as lib:
                results[name.replace(".test", "")] = measure_split(lib, root / "docs", name, docs, reported, dev, HYBRID_WEIGHTS,
                                                                     reranker)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    names = list(results)
    dev_names = [n for n in names if results[n]["dev"]]
    print(f"# Search modes on every held-out split — {machine()}, model {encoder.id}\n")
    dev = {m: {n: results[n]["dev"][m] for n in dev_names} for m in (results[dev_names[0]]["dev"] if dev_names else [])}
    if dev:
        print("Dev queries (not reported), nDCG@10; the hybrid's vector weight w is chosen here:\n")
        print(md_table(["mode", *dev_names, "mean"],
                       [[m, *[f"{v[n]:.3f}" for n in dev_names], f"{sum(v.values()) / len(v):.3f}"] for m, v in dev.items()]) + "\n")
        best_w = weight_choice(dev, HYBRID_WEIGHTS, modes.MAX_SPLIT_LOSS)
    else:
        best_w = modes.VECTOR_WEIGHT
        print(f"No dev queries (every split's queries are reported): the shipped weight {best_w:g} is measured.\n")
    hybrid = f"hybrid w={best_w:g}"
    table = {m: {n: results[n]["reported"][m] for n in names} for m in ("vector", "keyword", hybrid)}
    print(f"Reported queries (the eval's sample), nDCG@10, and the median search time (ms, per split):\n")
    rows = []
    extra = [m for m in results[names[0]]["reported"] if "teacher@" in m]
    for mode in (*table, RRF, *extra):
        vals = {n: results[n]["reported"][mode] for n in names}
        key = mode.split("@")[0] if "teacher@" in mode else mode.split()[0]
        lat = "/".join(f"{results[n]['p50_ms'][key]:.1f}" for n in names) if mode != RRF else ""
        rows.append([mode, *[f"{vals[n]:.3f}" for n in names], f"{sum(vals.values()) / len(vals):.3f}", lat])
    print(md_table(["mode", *names, "mean", "p50 ms"], rows) + "\n")
    default = modes.choose_default(table)
    default_mode = default.split()[0]
    print(f"default by the rule (the best mean among modes losing no split by more than {modes.MAX_SPLIT_LOSS:g}): {default}")
    mismatches = sum(results[n]["hybrid_mismatches"] for n in names)
    print(f"the real hybrid search (shipped weight {modes.VECTOR_WEIGHT:g}) against fusing the two lists here: "
          f"{mismatches} of {sum(results[n]['reported_queries'] for n in names)} queries differ in the top {K}")
    shipped = (modes.DEFAULT_MODE, modes.VECTOR_WEIGHT)
    if shipped != (default_mode, best_w):
        print(f"edge_dse/modes.py ships DEFAULT_MODE={shipped[0]!r}, VECTOR_WEIGHT={shipped[1]:g}; "
              f"this run chose DEFAULT_MODE={default_mode!r}, VECTOR_WEIGHT={best_w:g}")
    else:
        print("edge_dse/modes.py ships what this run chose")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": machine(), "model": encoder.id, "weights": list(HYBRID_WEIGHTS), "splits": results,
            "vector_weight": best_w, "table": table, "default": default_mode,
            "max_split_loss": modes.MAX_SPLIT_LOSS, "hybrid_mismatches": mismatches}, indent=1) + "\n")
    return 0


def vector_options(p: argparse.ArgumentParser, sizes: list[int]) -> None:
    """The options of the measurements on compare's vectors (real passages, jittered copies)."""
    p.add_argument("--sizes", type=int, nargs="+", default=sizes, help="chunks in the index")
    p.add_argument("--real", type=int, default=100_000, help="distinct real passages (jittered copies past them)")
    p.add_argument("--queries", type=int, default=200, help="real queries (Python docs headings)")
    p.add_argument("--student", help="the encoder's asset folder (default: assets/student, else assets/baseline)")
    p.add_argument("--data", default="work/distill/data", help="more real passages past the Python docs (distiller's splits)")


def run_compare(args) -> int:
    print(section(args.sizes, args.real, args.queries, args.student, data=args.data, hybrid=args.hybrid)[0])
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help="edge_dse vs exact numpy search vs Chroma, same vectors, at each size")
    vector_options(p, [10_000, 100_000, 1_000_000])
    p.add_argument("--hybrid", action="store_true", help="also time edge_dse's hybrid search")
    p.set_defaults(run=run_compare)

    p = sub.add_parser("hnsw", help="HNSW alone over a grid of M, ef_construction and ef (synthetic or given vectors)")
    p.add_argument("--vectors", type=Path, help=".npy matrix or .npz with 'vectors' (real embeddings)")
    p.add_argument("--query-vectors", type=Path, help="real query embeddings (default: hold out passages)")
    p.add_argument("--n", type=int, default=10_000, help="vectors indexed (default 10k)")
    p.add_argument("--large", action="store_true", help="also N=100k (one run each)")
    p.add_argument("--dim", type=int, default=384, help="synthetic data only")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="build threads")
    p.add_argument("--M", type=int, nargs="+", default=list(GRID_M))
    p.add_argument("--ef-construction", type=int, nargs="+", default=list(GRID_EF_CONSTRUCTION))
    p.add_argument("--ef", type=int, nargs="+", default=list(GRID_EF))
    p.set_defaults(run=run_hnsw)

    p = sub.add_parser("ef", help="ef_search on compare's real vectors, edge_dse's M and ef_construction")
    vector_options(p, [100_000, 1_000_000])
    p.add_argument("--ef", type=int, nargs="+", default=[320, 480, 640, 960, 1280])
    p.add_argument("--threads", type=int, default=2, help="build threads")
    p.set_defaults(run=run_ef)

    p = sub.add_parser("modes", help="which search mode is the default: vector, keyword, hybrid on the held-out splits")
    p.add_argument("--data", type=Path, default=Path("work/distill/data"), help="the held-out splits (edge-dse distill's data step)")
    p.add_argument("--model", default=None, help="the encoder (default: the default encoder)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--corpus", type=int, default=1500)
    p.add_argument("--dev-queries", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--rerank", action="store_true", help="also the shipped teacher over vector's and the default mode's hits, "
                   "at the depth its card records (slow: one rerank a query)")
    p.set_defaults(run=run_modes)
    args = ap.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    if not child_main(measure):
        raise SystemExit(main())
