"""Stage 1's targets: the big bi-encoder's vectors of the text set (hpd_texts.py), cached in
shards, and the fixed projection that brings them down to the student's dimension.

Vectors are computed in the order the shuffled pairs first use the texts, `shard` texts a file
(float16, L2-normalised), so that a longer run only adds shards, a killed run loses at most the
shards in flight (one here, one per worker on Ray: ray_steps.py), and any prefix of the pairs
can be trained on as soon as its shards exist.

The projection is the top right-singular vectors of the *uncentred* vectors: for unit vectors
x, y the dot product of their projections keeps the part of x.y that lies in the top directions,
so the big model's rankings (not only its variance) are what the student is asked to reproduce;
the components are ordered, so a prefix of the target (Matryoshka) is itself a good projection.
Training-time code: not imported by `import edge_dse`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import hpd_texts
from .train_common import Mapper, run_pieces

SHARD = 4096


def shard_path(out_dir: Path, i: int) -> Path:
    return Path(out_dir) / f"shard-{i:05d}.npy"


def _rows(path: Path) -> int:
    return len(np.load(path, mmap_mode="r"))  # reads the header only


def _complete(out_dir: Path, i: int, total: int, shard: int) -> bool:
    """Shard i holds every text it should for `total` texts (a short last shard from a smaller
    run does not, once the run grows)."""
    path = shard_path(out_dir, i)
    return path.is_file() and _rows(path) >= min(shard, total - i * shard)


def _complete_shards(out_dir: Path, total: int, shard: int) -> int:
    """How many shards, from the first, are complete for `total` texts."""
    i = 0
    while i * shard < total and _complete(Path(out_dir), i, total, shard):
        i += 1
    return i


def labelled_count(out_dir: Path, total: int, shard: int = SHARD) -> int:
    """How many texts of the first-use order have vectors (whole shards, in order)."""
    return min(total, _complete_shards(out_dir, total, shard) * shard)


def missing_shards(out_dir: Path, total: int, shard: int = SHARD) -> list[int]:
    """The shards still to compute for `total` texts: from the first incomplete one on (shards
    are written in order, so the ones before it are all there)."""
    return list(range(_complete_shards(out_dir, total, shard), -(-total // shard)))


def _check_shard_size(out_dir: Path, shard: int) -> None:
    """The shard size is fixed per folder: load() reads shards back to back, so one folder cut
    at two sizes would give texts the wrong vectors."""
    first = shard_path(out_dir, 0)
    if first.is_file():
        rows = _rows(first)
        if rows > shard or (rows < shard and shard_path(out_dir, 1).is_file()):
            raise ValueError(f"{out_dir} holds shards of {rows} texts, not {shard}: the shard size is fixed per folder")


def label(text_dir: Path, out_dir: Path, embed: Callable[[Sequence[str]], np.ndarray], *, n_pairs: int,
          shard: int = SHARD, log=print, mapper: Mapper = map) -> int:
    """Vectors for every text the first n_pairs pairs need; returns how many exist now.

    Each missing shard is one call of `embed` (its texts in first-use order), run by `mapper`:
    the builtin map here, or ray_steps.RayMap on a Ray cluster (embed must then be picklable and
    load its model on the worker, as OnnxLabeller does). Either way the shards are written here,
    atomically and in order, so the folder is the same and a killed run resumes."""
    out_dir = Path(out_dir)
    _check_shard_size(out_dir, shard)
    texts, pairs = hpd_texts.read(text_dir)
    order = hpd_texts.texts_in_order(pairs, n_pairs)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = missing_shards(out_dir, len(order), shard)
    t0, start = time.perf_counter(), labelled_count(out_dir, len(order), shard)
    done = start

    def commit(i: int, vecs) -> None:
        nonlocal done
        vecs = np.asarray(vecs, dtype=np.float32)
        # Not in place: an array back from Ray is a read-only view of its object store.
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        tmp = out_dir / f".shard-{i:05d}.tmp.npy"
        np.save(tmp, vecs.astype(np.float16))
        tmp.replace(shard_path(out_dir, i))
        done = min(len(order), (i + 1) * shard)
        rate = (done - start) / (time.perf_counter() - t0)
        log(f"hpd: vectors {done}/{len(order)} texts ({rate:.0f}/s, ~{(len(order) - done) / max(rate, 1e-9) / 60:.0f} min left)")

    run_pieces(todo, lambda i: [texts[j] for j in order[i * shard:(i + 1) * shard]], embed, commit, mapper)
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


@dataclass
class OnnxLabeller:
    """The run-time Encoder over an exported bi-encoder (the int8 mpnet of pipeline.prepare_mpnet),
    as a callable that pickles as its settings: the model is loaded on first use, by whichever
    process calls it (this one, or a Ray worker that reads the folder at the same path)."""

    asset: str
    max_length: int = 256
    threads: int | None = 2

    def __post_init__(self) -> None:
        from ..config import resolve_model_dir

        # Absolute: a Ray worker runs in another folder (a shipped name, "baseline", resolves
        # here, so the worker needs no assets of its own either, only the shared path).
        self.asset = str(resolve_model_dir(self.asset).resolve())
        self._encoder = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_encoder"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _encoder=None)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if self._encoder is None:
            from ..encoder import Encoder

            self._encoder = Encoder(self.asset, max_length=self.max_length, threads=self.threads)
        return self._encoder.encode(list(texts), batch_size=16)


def onnx_labeller(asset: Path, max_length: int = 256, threads: int = 2) -> OnnxLabeller:
    """The run-time Encoder over an exported bi-encoder (the int8 mpnet of pipeline.prepare_mpnet)."""
    return OnnxLabeller(str(asset), max_length, threads)


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
