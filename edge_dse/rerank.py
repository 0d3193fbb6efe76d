"""The run-time reranker: re-scores a query's top hits with the (slower, better) teacher.

A teacher asset folder is laid out like an encoder's (`model.onnx`, `tokenizer.json`,
`card.json`); its card's `kind` says how it scores a (query, passage) pair:

- "cross-encoder": the graph reads the pair as one sequence ([CLS] query [SEP] passage [SEP]) and
  returns one logit per pair (`output`, default "logits"). This is the DSE teacher.
- "bi-encoder": query and passage are embedded apart and scored by cosine; any encoder asset can
  serve as a reranker this way (used for tests and as a yardstick).

How many of the encoder's top hits the teacher re-scores by default is the teacher's to say: its
card records a measured depth under "rerank": {"default_depth": N} (the rest of that dict is the
measurement); a card without one gets DEFAULT_DEPTH.

The teacher's card may also record "rerank": {"encoder_weight": w}: the hits are then ordered by
the teacher's scores blended with the first stage's own order (`blend`), w chosen on dev queries
when the teacher was made. A cross-encoder that is strong on one kind of text and unsure on another
then keeps what the first stage already got right where it has no firm opinion; w = 0 (or no
entry) is the teacher alone. That w was chosen on the vector encoder's order; a search mode whose
order is better (the hybrid) wants more of it kept, so the card may record a weight per mode
("encoder_weight_by_mode": {"hybrid": w}), chosen on that mode's dev hits, and `Reranker.rerank`
takes the mode the hits were ranked by (`ModelCard.encoder_weight_for`).

Both kinds are built from models.py's parts (card, session, batches), as the Encoder is.
Like the encoder: onnxruntime + tokenizers + numpy only, imported lazily.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from . import config, models
from .encoder import Encoder
from .errors import EdgeDSEError
from .models import (DEFAULT_DEPTH, KINDS, MAX_BATCH_TOKENS, ModelCard, card_depth, card_encoder_weight,  # noqa: F401  (public here too)
                     card_encoder_weight_by_mode)

if TYPE_CHECKING:
    import numpy as np

DEFAULT_TEACHER = "teacher"  # the shipped teacher's folder under assets/
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
    card = load_teacher_card(model)
    return card.folder, card.data


def load_teacher_card(model: str | os.PathLike | ModelCard | None = None) -> ModelCard:
    """The teacher's checked card (the shipped teacher when `model` is None), in the teacher role
    whatever its kind: a bi-encoder can stand in as the teacher."""
    if isinstance(model, ModelCard):
        return model if model.role == models.TEACHER else ModelCard.from_dict(
            model.data, model.folder, model_file=model.model_file, tokenizer_file=model.tokenizer_file, role=models.TEACHER)
    path = resolve_teacher_dir(model)
    if not models.has_card(path):
        raise EdgeDSEError(f"{path} holds no {models.CARD_FILE}: pass a teacher folder made by `edge-dse distill`")
    return ModelCard.load(path, role=models.TEACHER)


def default_depth(model: str | os.PathLike | None = None) -> int:
    """How many of the encoder's top hits this teacher re-scores unless told otherwise (its
    card's measured depth, else DEFAULT_DEPTH); read from the card, the model is not loaded."""
    return load_teacher_card(model).default_depth


class CrossEncoder:
    """The teacher proper: reads a (query, passage) pair as one sequence ([CLS] query [SEP]
    passage [SEP], cut at its card's max length from the longer side) and returns its logit."""

    def __init__(self, model: str | os.PathLike | ModelCard | None = None, *, threads: int | None = None,
                 max_length: int | None = None) -> None:
        self.model: ModelCard = load_teacher_card(model)
        if self.model.kind != "cross-encoder":
            raise EdgeDSEError(f"{self.model.folder} holds a {self.model.kind}, not a cross-encoder: load it with Reranker")
        self.path, self.card, self.id = self.model.folder, self.model.data, self.model.id
        self.max_length = int(max_length or self.model.max_length)
        self.threads = threads or config.default_threads()
        self._tokenizer = models.load_tokenizer(self.model.tokenizer_file, self.max_length)
        self._session = models.make_session(self.model.model_file, self.threads)
        self._output = models.output_name(self._session, self.model)

    def score(self, query: str, passages: Sequence[str], *, batch_size: int = 32,
              max_batch_tokens: int = MAX_BATCH_TOKENS, on_progress: Progress | None = None) -> "np.ndarray":
        """One float32 logit per passage, in the passages' order; `on_progress(done, total)` after each batch."""
        import numpy as np

        passages = list(passages)
        out = np.zeros(len(passages), dtype=np.float32)
        tokens = models.tokenize(self._tokenizer, [(query, p) for p in passages])
        done = 0
        for batch in tokens.batches(batch_size, max_batch_tokens):
            logits = models.run_session(self._session, self._output, tokens.feeds(batch))
            out[batch] = logits.reshape(len(batch), -1)[:, 0]
            done += len(batch)
            if on_progress is not None:
                on_progress(done, len(passages))
        return out

    def __repr__(self) -> str:
        return f"CrossEncoder({self.id!r}, max_length={self.max_length}, threads={self.threads})"


class Reranker:
    """Scores (query, passage) pairs with a teacher model; higher is more relevant.

    >>> rr = Reranker()                                   # the shipped teacher
    >>> rr.score("rotate logs", ["logrotate rotates, compresses and mails logs", "a game"])
    """

    def __init__(self, model: str | os.PathLike | ModelCard | None = None, *, threads: int | None = None,
                 max_length: int | None = None) -> None:
        self.model: ModelCard = load_teacher_card(model)
        self.kind: str = self.model.kind
        self.path, self.card, self.id = self.model.folder, self.model.data, self.model.id
        self.default_depth: int = self.model.default_depth
        # A bi-encoder scores by cosine: the run-time Encoder embeds query and passages apart.
        self._scorer: Encoder | CrossEncoder = (Encoder if self.kind == "bi-encoder" else CrossEncoder)(
            self.model, threads=threads, max_length=max_length)
        self.max_length: int = self._scorer.max_length
        self.encoder_weight: float = self.model.encoder_weight  # the vector encoder's order's
        self.encoder_weight_by_mode: dict[str, float] = self.model.encoder_weight_by_mode  # checked at load

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
        if isinstance(self._scorer, CrossEncoder):
            return self._scorer.score(query, passages, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                                      on_progress=report)
        q = self._scorer.encode([query], kind="query")[0]
        out = np.zeros(len(passages), dtype=np.float32)
        for lo in range(0, len(passages), batch_size):
            p = self._scorer.encode(passages[lo:lo + batch_size], kind="document", batch_size=batch_size,
                                    max_batch_tokens=max_batch_tokens)
            out[lo:lo + len(p)] = p @ q
            report(lo + len(p), len(passages))
        return out

    def rerank(self, query: str, passages: Sequence[str], top_k: int | None = None, *,
               on_progress: Progress | None = None, mode: str = "vector") -> list[Reranked]:
        """The passages' indexes, best first by the teacher (ties keep the given order). The
        passages come in the order search `mode` ranked them: the card's weight for that mode
        (`ModelCard.encoder_weight_for`: its own, else encoder_weight) blends it in (`blend`), and
        the score returned is the blended one."""
        weight = self.model.encoder_weight_for(mode)
        scores = blend(self.score(query, passages, on_progress=on_progress), weight)
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        return [Reranked(i, float(scores[i])) for i in order[: top_k or len(order)]]

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "path": str(self.path), "max_length": self.max_length,
                "default_depth": self.default_depth, "encoder_weight": self.encoder_weight,
                "encoder_weight_by_mode": self.encoder_weight_by_mode}

    def __repr__(self) -> str:
        return f"Reranker({self.id!r}, kind={self.kind!r})"
