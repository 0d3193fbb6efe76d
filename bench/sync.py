"""How fast is indexing: edge_dse (Library.add) vs a plain pipeline that puts the same chunks and
the same encoder's vectors into Chroma, in one run; with --resync, edge_dse's incremental path too.

    python -m bench.sync [FOLDER] [--every 1] [--student DIR] [--resync]

The plain pipeline is what a user would script instead: discover the files, extract and chunk
them with edge_dse's own code (so both stores get identical chunks), embed with the same encoder
in the same batches, add to a Chroma PersistentClient with the file path as metadata. What it
lacks (change detection, deletes, crash safety, FTS) is not timed because it is not there.
Each engine runs in its own child process. --every N indexes every N-th file (for --quick).

--resync (not in the harness): after its first index, edge_dse re-syncs with nothing changed,
after touching 10% of the files (mtime only, same content) and after appending a paragraph to
another 10% (re-embedded); then the encoder alone embeds the same chunks (no files, no SQLite),
the ceiling the first index is read against. edge_dse then indexes its own copy of the folder, so
the Chroma pipeline sees the files unedited.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import (PYDOC_SOURCES, chroma_add, chroma_collection, chroma_missing, child_main, copy_sample, md_table,
                          peak_rss_mb, ratio, run_child, search_encoder, times)

ENGINES = ("edge_dse", "plain pipeline into chroma")
ENCODER_ALONE = "encoder alone, the same chunks (no files, no SQLite)"


def chroma_pipeline(enc, folder: Path, store: Path) -> tuple[int, int]:
    """(files, chunks) of the plain script: edge_dse's discovery, extraction and chunking, the
    same encoder, everything added to Chroma with the file path as metadata."""
    from edge_dse.encoder import passage_text
    from edge_dse.ingest import chunk_text, extract
    from edge_dse.ingest.discover import FoundFile, discover

    texts, metas, files = [], [], 0
    for item in discover(folder):
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
    return files, len(texts)


def resync_rows(lib, folder: Path) -> list[dict]:
    """edge_dse's incremental path on an indexed folder (see the module doc), then the encoder
    alone on the chunks the library holds: {step, files, chunks (embedded), seconds} each."""
    from edge_dse.encoder import passage_text

    def timed_sync(step: str) -> dict:
        t0 = time.perf_counter()
        report = lib.sync()
        return {"step": step, "files": report.seen, "chunks": report.chunks, "seconds": time.perf_counter() - t0}

    rows = [timed_sync("re-sync, nothing changed")]
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for p in files[::10]:
        os.utime(p, ns=(time.time_ns(), time.time_ns()))
    rows.append(timed_sync("re-sync, 10% touched (same content)"))
    for p in files[5::10]:  # a real edit: a new paragraph at the end of 10% of the files
        with open(p, "a", encoding="utf-8") as fh:
            fh.write("\n\nEdited for the benchmark: this paragraph was appended.\n")
    rows.append(timed_sync("re-sync, 10% edited (re-embedded)"))
    texts = [passage_text(r.text, r.heading) for r in lib.catalog.get_chunks(lib.catalog.all_ids().tolist())]
    t0 = time.perf_counter()
    lib.encoder.encode(texts, kind="document")
    rows.append({"step": ENCODER_ALONE, "files": None, "chunks": len(texts), "seconds": time.perf_counter() - t0})
    return rows


def measure(p: dict) -> dict:
    """One engine's first index of p["folder"] into p["store"] (a child started by section)."""
    enc = search_encoder(p.get("student"))
    store = Path(p["store"])
    t0 = time.perf_counter()
    if p["engine"] == "edge_dse":
        from edge_dse import Library

        with Library(store, model=enc, progress=False) as lib:
            rep = lib.add(p["folder"])
        files, chunks = rep.seen - rep.failed, rep.chunks
    else:
        files, chunks = chroma_pipeline(enc, Path(p["folder"]), store)
    out = {"seconds": time.perf_counter() - t0, "files": files, "chunks": chunks, "peak_rss_mb": peak_rss_mb(),
           "disk_mb": sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6}
    if p.get("resync"):  # after the first index's figures: the re-syncs must not set its peak RSS
        with Library(store, model=enc, progress=False) as lib:
            out["resync"] = resync_rows(lib, Path(p["folder"]))
    return out


def resync_table(steps: list[dict], first_speed: float) -> str:
    """edge_dse's re-sync rows (chunks = chunks embedded), and the first index against the
    encoder alone: what extraction, chunking, SQLite and HNSW add beside embedding."""
    rows = [[s["step"], s["files"], s["chunks"], s["seconds"], s["files"] / s["seconds"] if s["files"] else None,
             s["chunks"] / s["seconds"]] for s in steps]
    alone = next(s for s in steps if s["step"] == ENCODER_ALONE)
    share = first_speed / (alone["chunks"] / alone["seconds"])
    return (md_table(["edge_dse, after the first index", "files", "chunks embedded", "seconds", "files/s", "chunks/s"], rows)
            + f"\n\nthe first index ran at {share:.0%} of the encoder alone's chunks/s")


def section(folder: str | None = None, every: int = 1, student: str | None = None,
            timeout: float | None = None, resync: bool = False) -> tuple[str, dict]:
    """(the sync table in markdown: each engine's first index, chunks/s against the plain Chroma
    pipeline, then edge_dse's re-sync rows when `resync`; the figure the harness keeps)."""
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
            # The re-syncs edit files: edge_dse gets its own copy, the other engine the originals.
            edits = resync and engine == "edge_dse"
            here = shutil.copytree(docs, tmp / "docs-edge_dse") if edits else docs
            r = run_child("bench.sync", {"engine": engine, "folder": str(here), "student": student, "resync": edits,
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
    text = f"folder: {src} ({share}), first full index, same encoder for both\n\n" + md_table(headers, rows)
    if got.get("edge_dse", {}).get("resync"):
        text += "\n\n" + resync_table(got["edge_dse"]["resync"], speed["edge_dse"])
    return text, facts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default=str(PYDOC_SOURCES))
    ap.add_argument("--every", type=int, default=1, help="index every Nth file (sorted by path)")
    ap.add_argument("--student", help="the encoder's asset folder (default: assets/student, else assets/baseline)")
    ap.add_argument("--resync", action="store_true", help="also edge_dse's re-syncs and the encoder alone")
    args = ap.parse_args(argv)
    print(section(args.folder, args.every, args.student, resync=args.resync)[0])
    return 0


if __name__ == "__main__":
    if not child_main(measure):
        raise SystemExit(main())
