"""Files to per-chunk vectors outside a library: extract → chunk at the encoder's window → embed.

The one-shot path of `edge-dse embed` and `edge_dse.embed_files` (a library's own write path is
indexer.py). It lives apart from the encoder so that the encoder embeds texts and knows nothing of
files, formats or chunking.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import numpy as np

    from .encoder import Encoder


@dataclass
class EmbeddedFiles:
    """Per-chunk vectors of some files, row-aligned with `rows` (path, offsets, heading, text)."""

    vectors: "np.ndarray"
    rows: list[dict] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def embed_files(paths: Iterable[str | os.PathLike], model: "Encoder | str | os.PathLike | None" = None, *,
                max_chars: int | None = None, batch_size: int = 32, progress: bool = False) -> EmbeddedFiles:
    """Extract, chunk and embed files: one vector per chunk, with path and offsets.

    `model`: an Encoder, or a shipped model's name or a model folder (None: the default model).
    Chunks fit the model's window in its own tokens (or `max_chars` characters, if given). A file
    that cannot be read or has no text is listed in `.errors`, never raised.
    """
    import numpy as np

    from .encoder import Encoder, passage_text
    from .ingest import ExtractError, chunk_text, extract

    encoder = model if isinstance(model, Encoder) else Encoder(model)
    rows: list[dict] = []
    errors: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw)
        try:
            chunks = chunk_text(extract(path), **({"max_chars": max_chars} if max_chars else encoder.chunking()))
        except ExtractError as exc:
            errors.append((str(path), str(exc)))
            continue
        rows += [{"path": str(path), "chunk": i, "start": c.start, "end": c.end, "heading": c.heading, "text": c.text}
                 for i, c in enumerate(chunks)]
    texts = [passage_text(r["text"], r["heading"]) for r in rows]
    vectors = encoder.encode(texts, batch_size=batch_size, progress=progress) if rows else np.zeros((0, encoder.dim), np.float32)
    return EmbeddedFiles(vectors=vectors, rows=rows, errors=errors)
