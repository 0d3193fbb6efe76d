"""The run-time encoder: tokenizers + one onnxruntime session, nothing else.

An asset folder holds `model.onnx`, `tokenizer.json` and `card.json`; the card says how to turn
the graph's output into one vector per text (pooling, normalisation, dimension, max length,
query/document prefixes). Reading the card, making the session and batching the tokens are
models.py's (the cross-encoder teacher and the export use the same code); this module pools.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from . import config, models
from .errors import EdgeDSEError
from .models import MAX_BATCH_TOKENS, POOLINGS, TOKENIZE_WINDOW, ModelCard  # noqa: F401  (their old home)

if TYPE_CHECKING:  # numpy is imported lazily so that `import edge_dse` stays fast
    import numpy as np


def passage_text(text: str, heading: str = "") -> str:
    """What the encoder sees for a chunk: its heading path gives context the text may lack."""
    if heading and not text.startswith(heading):
        return f"{heading}\n{text}"
    return text


SPECIAL_TOKENS = 2  # [CLS] and [SEP]: every encoded text has them, so a chunk's text gets the rest
MIN_CHUNK_TOKENS = 8
MIN_MAX_LENGTH = MIN_CHUNK_TOKENS + SPECIAL_TOKENS  # the smallest window a chunk fits whole


def chunk_tokens(max_length: int) -> int:
    """The tokens of text a chunk may hold in a model of this window: less [CLS] and [SEP]."""
    return max(MIN_CHUNK_TOKENS, int(max_length) - SPECIAL_TOKENS)


def max_length_for(tokens: int) -> int:
    """The encoder window whose chunks hold this many tokens of text (chunk_tokens' inverse)."""
    return int(tokens) + SPECIAL_TOKENS


class Encoder:
    """Embeds texts with a shipped (or any exported) model.

    >>> enc = Encoder()                       # the shipped default model
    >>> enc.encode(["a sentence"]).shape      # (1, enc.dim), float32, L2-normalised
    """

    def __init__(
        self,
        model: str | os.PathLike | ModelCard | None = None,
        *,
        threads: int | None = None,
        max_length: int | None = None,
    ) -> None:
        # A ModelCard is taken as it is: the export measures a graph before its folder exists,
        # and the Reranker passes the teacher's card (role "teacher") when it is a bi-encoder.
        self.model: ModelCard = model if isinstance(model, ModelCard) else ModelCard.load(config.resolve_model_dir(model))
        if self.model.kind == "cross-encoder":
            raise EdgeDSEError(f"{self.model.folder} holds a cross-encoder: it scores (query, passage) pairs and "
                               "makes no vectors; pass it as the teacher (--teacher), or pass an encoder")
        self.path: Path = self.model.folder
        self.card: dict = self.model.data
        self.id: str = self.model.id
        self.dim: int = self.model.dim
        self.pooling: str = self.model.pooling
        self.normalize: bool = self.model.normalize
        self.max_length: int = int(max_length or self.model.max_length)
        self.query_prefix: str = self.model.query_prefix
        self.document_prefix: str = self.model.document_prefix
        self.threads = threads or config.default_threads()
        self._tokenizer = models.load_tokenizer(self.model.tokenizer_file, self.max_length)
        self._counting_tokenizer = None  # made on first use: chunking only
        self._session = models.make_session(self.model.model_file, self.threads)
        self._output = models.output_name(self._session, self.model)

    @staticmethod
    def read_card(path: Path) -> dict:
        """An asset folder's card as written, checked (models.ModelCard.load): its files are
        there and it records an id and a dim."""
        return ModelCard.load(path).data

    # -- chunking ---------------------------------------------------------------------------
    @property
    def chunk_tokens(self) -> int:
        return chunk_tokens(self.max_length)

    def token_starts(self, text: str) -> list[int]:
        """The start offset of each of the text's tokens (no special tokens, no truncation)."""
        if self._counting_tokenizer is None:
            from tokenizers import Tokenizer

            # A copy of the loaded one, not a re-read of the file: an Encoder may outlive its folder
            # (a cluster worker loads the model from a temporary one).
            self._counting_tokenizer = Tokenizer.from_str(self._tokenizer.to_str())
            self._counting_tokenizer.no_padding()
            self._counting_tokenizer.no_truncation()
        return [a for a, _ in self._counting_tokenizer.encode(text, add_special_tokens=False).offsets]

    def chunking(self) -> dict:
        """chunk_text's arguments that make chunks fit this model's window, counted in its tokens."""
        return {"max_tokens": self.chunk_tokens, "tokenize": self.token_starts}

    # -- encoding ---------------------------------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 32,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        normalize: bool | None = None,
        kind: str = "document",
        progress: bool = False,
    ) -> "np.ndarray":
        """Texts -> float32 array (n, dim). `kind` is "query" or "document" (models may prefix them).

        A batch holds at most `batch_size` texts and `max_batch_tokens` padded tokens, so short
        texts (queries) go many at a time and long passages few: memory stays bounded."""
        import numpy as np

        if isinstance(texts, str):
            texts = [texts]
        if kind not in ("query", "document"):
            raise ValueError(f"kind must be 'query' or 'document', not {kind!r}")
        prefix = self.query_prefix if kind == "query" else self.document_prefix
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        tokens = models.tokenize(self._tokenizer, [prefix + t for t in texts])
        batches = tokens.batches(batch_size, max_batch_tokens)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="embedding", unit="batch", leave=False)
        for batch in batches:
            out[batch] = self._run(tokens.feeds(batch))
        if normalize if normalize is not None else self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return out

    def _run(self, feeds: dict) -> "np.ndarray":
        """One padded batch -> its pooled vectors."""
        hidden = models.run_session(self._session, self._output, feeds)
        pooled = models.pool(hidden, feeds["attention_mask"], self.pooling)
        # A Matryoshka-trained model may ship a card dim below the graph's: keep the prefix.
        return pooled[:, : self.dim]

    def describe(self) -> dict:
        """What a library records about the model that built it (invariant 4)."""
        return {"model_id": self.id, "model_dim": str(self.dim), "model_pooling": self.pooling}

    def __repr__(self) -> str:
        return f"Encoder(id={self.id!r}, dim={self.dim}, pooling={self.pooling!r}, max_length={self.max_length}, threads={self.threads})"
