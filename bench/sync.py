"""Sync throughput on a real folder (default: the Python 3.11 docs sources, 497 files).

    python -m bench.sync [FOLDER] [--threads 2]

Prints files/s and chunks/s for a first full index, then for a re-sync with nothing changed
(the incremental path), then after touching 10% of files (mtime changes, same content), and
the peak memory of the process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import PYDOC_SOURCES, machine, peak_rss_mb, source_folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=str(PYDOC_SOURCES))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from edge_dse import Library

    src = source_folder(args.folder)
    tmp = Path(tempfile.mkdtemp(prefix="edge-dse-sync-"))
    folder = tmp / "docs"
    shutil.copytree(src, folder)  # a copy, so touching files does not change the system's
    try:
        lib = Library(tmp / "lib", threads=args.threads, progress=True)
        rows = []
        t0 = time.perf_counter()
        first = lib.add(folder)
        rows.append(("first index", first, time.perf_counter() - t0))
        t0 = time.perf_counter()
        again = lib.sync()
        rows.append(("re-sync, nothing changed", again, time.perf_counter() - t0))
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for p in files[:: 10]:
            os.utime(p, ns=(time.time_ns(), time.time_ns()))
        t0 = time.perf_counter()
        touched = lib.sync()
        rows.append(("re-sync, 10% touched (same content)", touched, time.perf_counter() - t0))
        for p in files[5:: 10]:  # a real edit: a new paragraph at the end of 10% of the files
            with open(p, "a", encoding="utf-8") as fh:
                fh.write("\n\nEdited for the benchmark: this paragraph was appended.\n")
        t0 = time.perf_counter()
        edited = lib.sync()
        rows.append(("re-sync, 10% edited (re-embedded)", edited, time.perf_counter() - t0))
        # The baseline in the same run: the encoder alone on the same chunks, no I/O, no SQLite.
        from edge_dse.encoder import passage_text

        texts = [passage_text(r.text, r.heading) for r in lib.catalog.get_chunks(lib.catalog.all_ids().tolist())]
        t0 = time.perf_counter()
        lib.encoder.encode(texts, kind="document")
        encode_only = len(texts) / (time.perf_counter() - t0)
        print(f"# Sync throughput — {machine()}, {args.threads} threads, model {lib.model_card['id']}\n")
        print(f"folder: {src} ({first.seen} files)\n")
        print("| step | seconds | files/s | chunks embedded | chunks/s | failed |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, rep, secs in rows:
            print(f"| {name} | {secs:.1f} | {rep.seen / secs:.0f} | {rep.chunks} | {rep.chunks / secs:.1f} | {rep.failed} |")
        print(f"\nencoder alone on the same {len(texts)} chunks: {encode_only:.1f} chunks/s; the first index ran at "
              f"{first.chunks / rows[0][2] / encode_only:.0%} of that (the rest is extraction, chunking, SQLite, HNSW)")
        print(f"\npeak RSS: {peak_rss_mb():.0f} MB; library on disk: "
              f"{sum(p.stat().st_size for p in (tmp / 'lib').iterdir()) / 1e6:.1f} MB")
        lib.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
