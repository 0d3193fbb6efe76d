"""The run-time encoder: tokenizers + one onnxruntime session, nothing else.

An asset folder holds `model.onnx`, `tokenizer.json` and `card.json`; the card says how to turn
the graph's output into one vector per text (pooling, normalisation, dimension, max length,
query/document prefixes). This module owns the onnxruntime session: providers, threads and
graph optimisation are set here and nowhere else.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from . import config
from .errors import EdgeDSEError

if TYPE_CHECKING:  # numpy is imported lazily so that `import edge_dse` stays fast
    import numpy as np

POOLINGS = ("mean", "cls", "none")
# Padded tokens per batch. Attention holds batch x heads x length^2 floats per layer, so 32
# passages of 256 tokens peak at ~760 MB RSS in onnxruntime; 8 x 256 peaks at ~280 MB at the
# same speed (measured on the baseline, 512 Python docs passages, 2 threads; see the issue note).
MAX_BATCH_TOKENS = 2048
TOKENIZE_WINDOW = 1024  # texts tokenised per encode_batch call (bounds the Encoding objects alive)


def passage_text(text: str, heading: str = "") -> str:
    """What the encoder sees for a chunk: its heading path gives context the text may lack."""
    if heading and not text.startswith(heading):
        return f"{heading}\n{text}"
    return text


def _token_budget_batches(order: list[int], lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Cut `order` (sorted longest first) into batches of at most batch_size texts whose padded
    size (count x longest) stays within max_tokens; a single text always makes a batch."""
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def chunk_tokens(max_length: int) -> int:
    """The tokens of text a chunk may hold in a model of this window: less [CLS] and [SEP]."""
    return max(8, int(max_length) - 2)


@dataclass
class EmbeddedFiles:
    """Per-chunk vectors of some files, row-aligned with `rows` (path, offsets, heading, text)."""

    vectors: "np.ndarray"
    rows: list[dict] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


class Encoder:
    """Embeds texts with a shipped (or any exported) model.

    >>> enc = Encoder()                       # the shipped default model
    >>> enc.encode(["a sentence"]).shape      # (1, enc.dim), float32, L2-normalised
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        threads: int | None = None,
        max_length: int | None = None,
    ) -> None:
        self.path = config.resolve_model_dir(model)
        self.card = self.read_card(self.path)
        self.id: str = self.card["id"]
        self.dim: int = int(self.card["dim"])
        self.pooling: str = self.card.get("pooling", "mean")
        self.normalize: bool = bool(self.card.get("normalize", True))
        self.max_length: int = int(max_length or self.card.get("max_length", 256))
        self.query_prefix: str = self.card.get("query_prefix", "")
        self.document_prefix: str = self.card.get("document_prefix", "")
        self.threads = threads or config.default_threads()
        if self.pooling not in POOLINGS:
            raise EdgeDSEError(f"{self.path}/card.json: unknown pooling {self.pooling!r} (expected one of {POOLINGS})")
        self._tokenizer = self._load_tokenizer()
        self._counting_tokenizer = None  # made on first use: chunking only
        self._session = self._load_session()
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._output = self.card.get("output") or self._session.get_outputs()[0].name

    # -- loading ----------------------------------------------------------------------------
    @staticmethod
    def read_card(path: Path) -> dict:
        """An asset folder's card, checked: its files are there and it records id and dim. The
        Encoder and the Reranker (its teacher's card) both read cards here."""
        missing = [n for n in ("model.onnx", "tokenizer.json", "card.json") if not (path / n).is_file()]
        if missing:
            raise EdgeDSEError(
                f"model folder {path} lacks {', '.join(missing)}: re-make it with `edge-dse export` "
                "or pass a complete model folder"
            )
        try:
            card = json.loads((path / "card.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EdgeDSEError(f"{path}/card.json is unreadable ({exc}): re-make the model with `edge-dse export`") from exc
        for key in ("id", "dim"):
            if key not in card:
                raise EdgeDSEError(f"{path}/card.json has no {key!r}: re-make the model with `edge-dse export`")
        return card

    def _load_tokenizer(self):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        # tokenizer.json files carry their own truncation and padding (all-MiniLM-L6-v2's pads
        # every text to a fixed 128). Override both: truncate at the card's length, and pad each
        # batch only to its longest member ourselves.
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_length)
        return tok

    def _load_session(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        return ort.InferenceSession(str(self.path / "model.onnx"), opts, providers=["CPUExecutionProvider"])

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
        # Token ids kept as small arrays: a tokenizers Encoding also holds offsets, tokens and
        # masks (~100 bytes a token), which for 15k passages is most of a gigabyte.
        ids: list = []
        types: list = []
        for lo in range(0, len(texts), TOKENIZE_WINDOW):
            for enc in self._tokenizer.encode_batch([prefix + t for t in texts[lo : lo + TOKENIZE_WINDOW]]):
                ids.append(np.asarray(enc.ids, dtype=np.int32))
                types.append(np.asarray(enc.type_ids, dtype=np.int8))
        lengths = [len(x) for x in ids]
        # Sorting by length keeps the padding in each batch small: long and short texts are
        # not mixed, which matters most on a CPU.
        order = sorted(range(len(ids)), key=lengths.__getitem__, reverse=True)
        batches = _token_budget_batches(order, lengths, batch_size, max_batch_tokens)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="embedding", unit="batch", leave=False)
        for batch in batches:
            out[batch] = self._run([ids[i] for i in batch], [types[i] for i in batch])
        if normalize if normalize is not None else self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return out

    def _run(self, token_ids: list, type_ids: list) -> "np.ndarray":
        import numpy as np

        width = max(len(t) for t in token_ids)
        ids = np.zeros((len(token_ids), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, (tok, typ) in enumerate(zip(token_ids, type_ids)):
            n = len(tok)
            ids[row, :n] = tok
            mask[row, :n] = 1
            types[row, :n] = typ
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feeds = {k: v for k, v in feeds.items() if k in self._input_names}
        hidden = self._session.run([self._output], feeds)[0]
        if self.pooling == "mean":
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = hidden
        # A Matryoshka-trained model may ship a card dim below the graph's: keep the prefix.
        return pooled[:, : self.dim]

    def embed_files(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        max_chars: int | None = None,
        batch_size: int = 32,
        progress: bool = False,
    ) -> EmbeddedFiles:
        """Extract, chunk and embed files: one vector per chunk, with path and offsets.

        Chunks fit the model's window in its own tokens (or `max_chars` characters, if given).
        A file that cannot be read or has no text is listed in `.errors`, never raised.
        """
        import numpy as np

        from .ingest import ExtractError, chunk_text, extract

        rows: list[dict] = []
        errors: list[tuple[str, str]] = []
        for raw in paths:
            path = Path(raw)
            try:
                chunks = chunk_text(extract(path), **({"max_chars": max_chars} if max_chars else self.chunking()))
            except ExtractError as exc:
                errors.append((str(path), str(exc)))
                continue
            rows += [
                {"path": str(path), "chunk": i, "start": c.start, "end": c.end, "heading": c.heading, "text": c.text}
                for i, c in enumerate(chunks)
            ]
        texts = [passage_text(r["text"], r["heading"]) for r in rows]
        vectors = self.encode(texts, batch_size=batch_size, progress=progress) if rows else np.zeros((0, self.dim), np.float32)
        return EmbeddedFiles(vectors=vectors, rows=rows, errors=errors)

    def describe(self) -> dict:
        """What a library records about the model that built it (invariant 4)."""
        return {"model_id": self.id, "model_dim": str(self.dim), "model_pooling": self.pooling}

    def __repr__(self) -> str:
        return f"Encoder(id={self.id!r}, dim={self.dim}, pooling={self.pooling!r}, max_length={self.max_length}, threads={self.threads})"
