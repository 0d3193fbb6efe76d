"""Stage 1's targets: the big bi-encoder's vectors of the text set (hpd_texts.py), cached in
shards, and the fixed projection that brings them down to the student's dimension.

Vectors are computed in the order the shuffled pairs first use the texts, `shard` texts a file
(float16, L2-normalised), so that a longer run only adds shards, a killed run loses at most one
shard, and any prefix of the pairs can be trained on as soon as its shards exist.

The projection is the top right-singular vectors of the *uncentred* vectors: for unit vectors
x, y the dot product of their projections keeps the part of x.y that lies in the top directions,
so the big model's rankings (not only its variance) are what the student is asked to reproduce;
the components are ordered, so a prefix of the target (Matryoshka) is itself a good projection.
Training-time code: not imported by `import edge_dse`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import hpd_texts

SHARD = 4096


def shard_path(out_dir: Path, i: int) -> Path:
    return Path(out_dir) / f"shard-{i:05d}.npy"


def labelled_count(out_dir: Path, total: int) -> int:
    """How many texts of the first-use order have vectors (whole shards, in order)."""
    n, i = 0, 0
    while shard_path(out_dir, i).is_file() and n < total:
        n = min(total, n + SHARD)
        i += 1
    return n


def label(text_dir: Path, out_dir: Path, embed: Callable[[Sequence[str]], np.ndarray], *, n_pairs: int,
          shard: int = SHARD, log=print) -> int:
    """Vectors for every text the first n_pairs pairs need; returns how many exist now."""
    assert shard == SHARD or not any(Path(out_dir).glob("shard-*.npy")), "shard size is fixed per folder"
    texts, pairs = hpd_texts.read(text_dir)
    order = hpd_texts.texts_in_order(pairs, n_pairs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = labelled_count(out_dir, len(order))
    t0, start = time.perf_counter(), done
    while done < len(order):
        i = done // shard
        batch = [texts[j] for j in order[i * shard:(i + 1) * shard]]
        vecs = np.asarray(embed(batch), dtype=np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        tmp = out_dir / f".shard-{i:05d}.tmp.npy"
        np.save(tmp, vecs.astype(np.float16))
        tmp.replace(shard_path(out_dir, i))
        done = min(len(order), done + len(batch))
        rate = (done - start) / (time.perf_counter() - t0)
        log(f"hpd: vectors {done}/{len(order)} texts ({rate:.0f}/s, ~{(len(order) - done) / max(rate, 1e-9) / 60:.0f} min left)")
    (out_dir / "info.json").write_text(json.dumps({"texts": done, "pairs": n_pairs, "shard": shard}) + "\n")
    return done


def rows_on_disk(out_dir: Path) -> int:
    """How many texts have vectors in out_dir (the shards in order, the last one may be short)."""
    n, i = 0, 0
    while shard_path(out_dir, i).is_file():
        n += len(np.load(shard_path(out_dir, i), mmap_mode="r"))
        i += 1
    return n


def load(out_dir: Path, n_texts: int) -> np.ndarray:
    """The first n_texts vectors of the first-use order, float16 (n, dim)."""
    parts, n, i = [], 0, 0
    while n < n_texts:
        part = np.load(shard_path(out_dir, i))
        parts.append(part[: n_texts - n])
        n += len(parts[-1])
        i += 1
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float16)


def projection(vectors: np.ndarray, dim: int, sample: int = 50000, seed: int = 0) -> np.ndarray:
    """(big_dim, dim): the top `dim` right-singular vectors of an uncentred sample."""
    rng = np.random.default_rng(seed)
    rows = vectors if len(vectors) <= sample else vectors[rng.choice(len(vectors), sample, replace=False)]
    _, _, vt = np.linalg.svd(np.asarray(rows, dtype=np.float32), full_matrices=False)
    return vt[:dim].T.copy()


def project(vectors: np.ndarray, proj: np.ndarray) -> np.ndarray:
    out = np.asarray(vectors, dtype=np.float32) @ proj
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def onnx_labeller(asset: Path, max_length: int = 256, threads: int = 2) -> Callable[[Sequence[str]], np.ndarray]:
    """The run-time Encoder over an exported bi-encoder (the int8 mpnet of pipeline.prepare_mpnet)."""
    from ..encoder import Encoder

    enc = Encoder(asset, max_length=max_length, threads=threads)
    return lambda texts: enc.encode(list(texts), batch_size=16)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="label stage 1's texts with a bi-encoder (resumable)")
    ap.add_argument("--texts", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True, help="an exported bi-encoder folder (card.json, model.onnx)")
    ap.add_argument("--pairs", type=int, required=True, help="label the texts of the first N pairs")
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args(argv)
    label(args.texts, args.out, onnx_labeller(args.model, args.max_length), n_pairs=args.pairs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
