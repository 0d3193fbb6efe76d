"""The run-time reranker: re-scores a query's top hits with the (slower, better) teacher.

A teacher asset folder is laid out like an encoder's (`model.onnx`, `tokenizer.json`,
`card.json`); its card's `kind` says how it scores a (query, passage) pair:

- "cross-encoder": the graph reads the pair as one sequence ([CLS] query [SEP] passage [SEP]) and
  returns one logit per pair (`output`, default "logits"). This is the DSE teacher.
- "bi-encoder": query and passage are embedded apart and scored by cosine; any encoder asset can
  serve as a reranker this way (used for tests and as a yardstick).

Like the encoder: onnxruntime + tokenizers + numpy only, imported lazily.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from . import config
from .encoder import MAX_BATCH_TOKENS, Encoder, _token_budget_batches
from .errors import EdgeDSEError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_TEACHER = "teacher"
KINDS = ("cross-encoder", "bi-encoder")


@dataclass
class Reranked:
    """One passage after reranking: where it was (`before`, 0-based) and its teacher score."""

    index: int
    score: float


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


class Reranker:
    """Scores (query, passage) pairs with a teacher model; higher is more relevant.

    >>> rr = Reranker()                                   # the shipped teacher
    >>> rr.score("rotate logs", ["logrotate rotates, compresses and mails logs", "a game"])
    """

    def __init__(self, model: str | os.PathLike | None = None, *, threads: int | None = None,
                 max_length: int | None = None) -> None:
        path = resolve_teacher_dir(model)
        self._encoder: Encoder | None = None
        card = Encoder._read_card(path) if (path / "card.json").is_file() else None
        if card is None:
            raise EdgeDSEError(f"{path} holds no card.json: pass a teacher folder made by `edge-dse distill`")
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

    def score(self, query: str, passages: Sequence[str], *, batch_size: int = 32,
              max_batch_tokens: int = MAX_BATCH_TOKENS) -> "np.ndarray":
        """One float32 score per passage, in the passages' order."""
        import numpy as np

        passages = list(passages)
        if not passages:
            return np.zeros(0, dtype=np.float32)
        if self._encoder is not None:
            q = self._encoder.encode([query], kind="query")
            p = self._encoder.encode(passages, kind="document", batch_size=batch_size, max_batch_tokens=max_batch_tokens)
            return (p @ q[0]).astype(np.float32)
        encs = self._tokenizer.encode_batch([(query, p) for p in passages])
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encs]
        types = [np.asarray(e.type_ids, dtype=np.int64) for e in encs]
        lengths = [len(x) for x in ids]
        order = sorted(range(len(ids)), key=lengths.__getitem__, reverse=True)
        out = np.zeros(len(passages), dtype=np.float32)
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
        return out

    def rerank(self, query: str, passages: Sequence[str], top_k: int | None = None) -> list[Reranked]:
        """The passages' indexes, best first by the teacher (ties keep the given order)."""
        scores = self.score(query, passages)
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        return [Reranked(i, float(scores[i])) for i in order[: top_k or len(order)]]

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "path": str(self.path), "max_length": self.max_length}

    def __repr__(self) -> str:
        return f"Reranker({self.id!r}, kind={self.kind!r})"
