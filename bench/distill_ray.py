"""Stage 1's vectors (hpd_vectors.label) on this machine vs through `edge-dse distill --ray`'s map.

    python -m bench.distill_ray [--pairs 1000] [--shard 512] [--model baseline]

Builds a stage 1 text set (hpd_texts) from human-written pairs: the first docstring line of the
standard library's modules, classes and functions, and the rest of the docstring (read with ast,
never imported). Labels it twice into fresh folders: locally (the labeller's 2 threads), then
with ray_steps.RayMap("auto"), which joins $RAY_ADDRESS or the cluster this machine joined, else
starts a local one here (its start is in the time). Prints the seconds of each, and whether the
two folders hold the same files and vectors. Needs the cluster extra (pip install -e '.[cluster]').
"""

from __future__ import annotations

import argparse
import ast
import json
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np


def stdlib_pairs(limit: int) -> list:
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


def main(argv: list[str] | None = None) -> int:
    from edge_dse.distill import hpd_texts, hpd_vectors
    from edge_dse.distill.data import write_jsonl
    from edge_dse.distill.ray_steps import RayMap

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--shard", type=int, default=512, help="texts a shard: one piece of work")
    ap.add_argument("--model", default="baseline", help="the labeller: a shipped model's name or a folder")
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
