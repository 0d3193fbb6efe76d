"""Indexing a real folder: edge_dse (Library.add) vs a plain pipeline that puts the same chunks
and the same encoder's vectors into Chroma, in one run.

    python -m bench.sync_engines [FOLDER] [--every 1]

The plain pipeline is what a user would script instead: discover the files, extract and chunk
them with edge_dse's own code (so both stores get identical chunks), embed with the same encoder
in the same batches, add to a Chroma PersistentClient with the file path as metadata. What it
lacks (change detection, deletes, crash safety, FTS) is not timed because it is not there.
Each engine runs in its own child process. --every N indexes every N-th file (for --quick).
bench/sync.py has edge_dse's re-sync figures.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import (PYDOC_SOURCES, chroma_add, chroma_collection, chroma_missing, child_main, copy_sample, md_table,
                          peak_rss_mb, ratio, run_child, search_encoder, times)

ENGINES = ("edge_dse", "plain pipeline into chroma")


def measure(p: dict) -> dict:
    enc = search_encoder(p.get("student"))
    store = Path(p["store"])
    t0 = time.perf_counter()
    if p["engine"] == "edge_dse":
        from edge_dse import Library

        lib = Library(store, model=enc, progress=False)
        rep = lib.add(p["folder"])
        lib.close()
        files, chunks = rep.seen - rep.failed, rep.chunks
    else:
        from edge_dse.encoder import passage_text
        from edge_dse.ingest import chunk_text, extract
        from edge_dse.ingest.discover import FoundFile, discover

        texts, metas, files = [], [], 0
        for item in discover(Path(p["folder"])):
            if not isinstance(item, FoundFile):
                continue
            try:
                chunks_of = chunk_text(extract(item.path))
            except Exception:  # what the plain script would do with an unreadable file: skip it
                continue
            files += 1
            texts += [passage_text(c.text, c.heading) for c in chunks_of]
            metas += [{"path": str(item.path)}] * len(chunks_of)
        vectors = enc.encode(texts, kind="document")
        client, col = chroma_collection(store)
        chroma_add(client, col, vectors, texts, metas)
        chunks = len(texts)
    secs = time.perf_counter() - t0
    return {"seconds": secs, "files": files, "chunks": chunks, "peak_rss_mb": peak_rss_mb(),
            "disk_mb": sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6}


def section(folder: str | None = None, every: int = 1, student: str | None = None,
            timeout: float | None = None) -> tuple[str, dict]:
    src = Path(folder or PYDOC_SOURCES)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    headers = ["engine", "files", "chunks", "seconds", "files/s", "chunks/s", "vs plain chroma pipeline",
               "on disk MB", "peak RSS MB"]
    rows, got = [], {}
    try:
        docs = tmp / "docs"
        copy_sample(src, docs, every)
        for engine in ENGINES:
            if engine != "edge_dse" and chroma_missing():
                rows.append([engine, f"not available: {chroma_missing()}"])
                continue
            r = run_child("bench.sync_engines", {"engine": engine, "folder": str(docs), "student": student,
                                                 "store": str(tmp / engine.replace(" ", "-"))}, timeout)
            if "error" in r:
                rows.append([engine, f"failed: {r['error']}"])
            else:
                got[engine] = r
        speed = {e: r["chunks"] / r["seconds"] for e, r in got.items()}
        for engine, r in got.items():
            rows.insert(ENGINES.index(engine), [engine, r["files"], r["chunks"], r["seconds"], r["files"] / r["seconds"],
                                                speed[engine], times(ratio(speed[engine], speed.get(ENGINES[1]))),
                                                r["disk_mb"], r["peak_rss_mb"]])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    share = "every file" if every == 1 else f"every {every}th file"
    facts = {"sync_ratio": ratio(speed.get(ENGINES[0]), speed.get(ENGINES[1]))}
    return f"folder: {src} ({share}), first full index, same encoder for both\n\n" + md_table(headers, rows), facts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=str(PYDOC_SOURCES))
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--student")
    args = ap.parse_args()
    print(section(args.folder, args.every, args.student)[0])


if __name__ == "__main__":
    if not child_main(measure):
        main()
