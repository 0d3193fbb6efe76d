"""The run-time reranker: re-scores a query's top hits with the (slower, better) teacher.

A teacher asset folder is laid out like an encoder's (`model.onnx`, `tokenizer.json`,
`card.json`); its card's `kind` says how it scores a (query, passage) pair:

- "cross-encoder": the graph reads the pair as one sequence ([CLS] query [SEP] passage [SEP]) and
  returns one logit per pair (`output`, default "logits"). This is the DSE teacher.
- "bi-encoder": query and passage are embedded apart and scored by cosine; any encoder asset can
  serve as a reranker this way (used for tests and as a yardstick).

How many of the student's top hits the teacher re-scores by default is the teacher's to say: its
card records a measured depth under "rerank": {"default_depth": N} (the rest of that dict is the
measurement); a card without one gets DEFAULT_DEPTH.

The teacher's card may also record "rerank": {"encoder_weight": w}: the hits are then ordered by
the teacher's scores blended with the encoder's own order (`blend`), w chosen on dev queries when
the teacher was made. A cross-encoder that is strong on one kind of text and unsure on another
then keeps what the encoder already got right where it has no firm opinion; w = 0 (or no entry)
is the teacher alone.

Like the encoder: onnxruntime + tokenizers + numpy only, imported lazily.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from . import config
from .encoder import MAX_BATCH_TOKENS, Encoder, _token_budget_batches
from .errors import EdgeDSEError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_TEACHER = "teacher"
KINDS = ("cross-encoder", "bi-encoder")
# The student hits the teacher re-scores when its card records no measured depth ("rerank":
# {"default_depth": N}): a fallback, not a measurement. 20 is what the UI re-scored at its default
# k of 10 before cards recorded a depth.
DEFAULT_DEPTH = 20

# Called as on_progress(passages scored so far, passages in all): once before the first batch,
# then after each.
Progress = Callable[[int, int], None]


@dataclass
class Reranked:
    """One passage after reranking: where it was (`before`, 0-based) and its teacher score."""

    index: int
    score: float


def blend(scores: "np.ndarray", encoder_weight: float) -> "np.ndarray":
    """Ranking scores for passages given in the encoder's order: z(teacher scores) +
    encoder_weight * z(-log2(rank + 2)), z-scored within this list (so the teacher's logit scale
    does not matter), the prior shaped like nDCG's discount. encoder_weight 0: the teacher alone."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float32)
    if not encoder_weight or len(s) < 2:
        return s
    prior = -np.log2(np.arange(len(s), dtype=np.float32) + 2)

    def z(x):
        return (x - x.mean()) / max(float(x.std()), 1e-6)

    return (z(s) + float(encoder_weight) * z(prior)).astype(np.float32)


def card_encoder_weight(card: dict, path: Path | str = "the teacher") -> float:
    """The weight of the encoder's order in a teacher card's blend ("rerank": {"encoder_weight": w}), else 0."""
    w = (card.get("rerank") or {}).get("encoder_weight", 0.0)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
        raise EdgeDSEError(f"{path}/card.json: rerank.encoder_weight is {w!r}, not a number >= 0: "
                           "fix the card or re-make the teacher with `edge-dse distill`")
    return float(w)


def resolve_teacher_dir(model: str | os.PathLike | None) -> Path:
    try:
        return config.resolve_model_dir(model or DEFAULT_TEACHER)
    except FileNotFoundError as exc:
        if model in (None, DEFAULT_TEACHER):
            raise EdgeDSEError(
                f"no teacher model in {config.assets_dir()}: this install ships none; make one with "
                "`edge-dse distill`, or pass a teacher folder (--teacher PATH)"
            ) from exc
        raise EdgeDSEError(str(exc)) from exc


def read_teacher_card(model: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """The teacher's folder and its card (the shipped teacher when `model` is None), checked."""
    path = resolve_teacher_dir(model)
    if not (path / "card.json").is_file():
        raise EdgeDSEError(f"{path} holds no card.json: pass a teacher folder made by `edge-dse distill`")
    return path, Encoder.read_card(path)


def card_depth(card: dict, path: Path | str = "the teacher") -> int:
    """The rerank depth a teacher card records ("rerank": {"default_depth": N}), else DEFAULT_DEPTH."""
    depth = (card.get("rerank") or {}).get("default_depth", DEFAULT_DEPTH)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise EdgeDSEError(f"{path}/card.json: rerank.default_depth is {depth!r}, not a number of hits >= 1: "
                           "fix the card or re-make the teacher with `edge-dse distill`")
    return depth


def default_depth(model: str | os.PathLike | None = None) -> int:
    """How many of the student's top hits this teacher re-scores unless told otherwise (its
    card's measured depth, else DEFAULT_DEPTH); read from the card, the model is not loaded."""
    path, card = read_teacher_card(model)
    return card_depth(card, path)


class Reranker:
    """Scores (query, passage) pairs with a teacher model; higher is more relevant.

    >>> rr = Reranker()                                   # the shipped teacher
    >>> rr.score("rotate logs", ["logrotate rotates, compresses and mails logs", "a game"])
    """

    def __init__(self, model: str | os.PathLike | None = None, *, threads: int | None = None,
                 max_length: int | None = None) -> None:
        path, card = read_teacher_card(model)
        self._encoder: Encoder | None = None
        self.kind: str = card.get("kind", "bi-encoder" if card.get("pooling") else "cross-encoder")
        if self.kind not in KINDS:
            raise EdgeDSEError(f"{path}/card.json: unknown kind {self.kind!r} (expected one of {KINDS})")
        if self.kind == "bi-encoder":
            self._encoder = Encoder(path, threads=threads, max_length=max_length)
            self.path, self.card, self.max_length = path, self._encoder.card, self._encoder.max_length
        else:
            # The cross-encoder shares the encoder's loading code (card checks, session options).
            enc = Encoder.__new__(Encoder)
            enc.path, enc.card = path, card
            enc.max_length = int(max_length or card.get("max_length", 256))
            enc.threads = threads or config.default_threads()
            self._tokenizer = enc._load_tokenizer()
            self._tokenizer.enable_truncation(max_length=enc.max_length, strategy="longest_first")
            self._session = enc._load_session()
            self._input_names = {i.name for i in self._session.get_inputs()}
            self._output = card.get("output") or self._session.get_outputs()[0].name
            self.path, self.card, self.max_length = path, card, enc.max_length
        self.id: str = self.card["id"]
        self.default_depth: int = card_depth(card, path)
        self.encoder_weight: float = card_encoder_weight(card, path)

    def score(self, query: str, passages: Sequence[str], *, batch_size: int = 32,
              max_batch_tokens: int = MAX_BATCH_TOKENS, on_progress: Progress | None = None) -> "np.ndarray":
        """One float32 score per passage, in the passages' order. `on_progress(done, total)` hears
        of each batch scored (and of none yet, first), so a caller can show how far it got."""
        import numpy as np

        report = on_progress or (lambda done, total: None)
        passages = list(passages)
        if not passages:
            return np.zeros(0, dtype=np.float32)
        report(0, len(passages))
        if self._encoder is not None:
            q = self._encoder.encode([query], kind="query")[0]
            out = np.zeros(len(passages), dtype=np.float32)
            for lo in range(0, len(passages), batch_size):
                p = self._encoder.encode(passages[lo:lo + batch_size], kind="document", batch_size=batch_size,
                                         max_batch_tokens=max_batch_tokens)
                out[lo:lo + len(p)] = p @ q
                report(lo + len(p), len(passages))
            return out
        encs = self._tokenizer.encode_batch([(query, p) for p in passages])
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encs]
        types = [np.asarray(e.type_ids, dtype=np.int64) for e in encs]
        lengths = [len(x) for x in ids]
        order = sorted(range(len(ids)), key=lengths.__getitem__, reverse=True)
        out = np.zeros(len(passages), dtype=np.float32)
        done = 0
        for batch in _token_budget_batches(order, lengths, batch_size, max_batch_tokens):
            width = max(lengths[i] for i in batch)
            feeds = {name: np.zeros((len(batch), width), dtype=np.int64)
                     for name in ("input_ids", "attention_mask", "token_type_ids")}
            for row, i in enumerate(batch):
                n = lengths[i]
                feeds["input_ids"][row, :n] = ids[i]
                feeds["attention_mask"][row, :n] = 1
                feeds["token_type_ids"][row, :n] = types[i]
            feeds = {k: v for k, v in feeds.items() if k in self._input_names}
            logits = self._session.run([self._output], feeds)[0]
            out[batch] = logits.reshape(len(batch), -1)[:, 0]
            done += len(batch)
            report(done, len(passages))
        return out

    def rerank(self, query: str, passages: Sequence[str], top_k: int | None = None, *,
               on_progress: Progress | None = None) -> list[Reranked]:
        """The passages' indexes, best first by the teacher (ties keep the given order). The
        passages come in the encoder's order: the card's encoder_weight blends it in (`blend`),
        and the score returned is the blended one."""
        scores = blend(self.score(query, passages, on_progress=on_progress), self.encoder_weight)
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        return [Reranked(i, float(scores[i])) for i in order[: top_k or len(order)]]

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "path": str(self.path), "max_length": self.max_length,
                "default_depth": self.default_depth, "encoder_weight": self.encoder_weight}

    def __repr__(self) -> str:
        return f"Reranker({self.id!r}, kind={self.kind!r})"
