"""Cut extracted text into chunks the encoder can take whole, keeping exact offsets.

A chunk is a span of the extracted text (`text == source[start:end]`), never crossing a heading,
packed from whole paragraphs up to a budget; a paragraph longer than that is cut at sentence
ends, then at spaces, then hard. Every non-space character lands in exactly one chunk.

The budget is the encoder's own window when a tokenizer is given (`max_tokens` + `tokenize`,
what a Library passes: Encoder.chunking()): each section is tokenised once, a span's size is
the number of tokens that start inside it, and the heading path the encoder sees in front of a
chunk is counted too, so a chunk is seen whole by its model whatever its script or density.
Without one it is `max_chars` characters.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from .extract import Extracted

# ~256 wordpiece tokens of English prose for a MiniLM-style tokenizer (about 4 chars a token):
# the budget when no tokenizer is given.
DEFAULT_MAX_CHARS = 1000

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int
    text: str
    heading: str  # the heading path in effect at `start`, e.g. "Tutorial > Lists"


def _trimmed(text: str, a: int, b: int) -> tuple[int, int] | None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return (a, b) if a < b else None


def _split_on(pattern: re.Pattern, text: str, a: int, b: int) -> list[tuple[int, int]]:
    spans, pos = [], a
    for m in pattern.finditer(text, a, b):
        span = _trimmed(text, pos, m.start())
        if span:
            spans.append(span)
        pos = m.end()
    span = _trimmed(text, pos, b)
    if span:
        spans.append(span)
    return spans


class _Budget:
    """How big a span is, and how much fits: characters, or tokens whose start offsets (into
    the whole text, sorted) are `starts`."""

    def __init__(self, limit: int, starts: Sequence[int] | None = None) -> None:
        self.limit, self.starts = limit, starts

    def size(self, a: int, b: int) -> int:
        if self.starts is None:
            return b - a
        return bisect.bisect_left(self.starts, b) - bisect.bisect_left(self.starts, a)

    def fits(self, a: int, b: int, slack: float = 1.0) -> bool:
        return self.size(a, b) <= self.limit * slack

    def hard_cuts(self, a: int, b: int) -> list[tuple[int, int]]:
        """[a, b) cut into pieces of `limit` characters or tokens."""
        if self.starts is None:
            return [(i, min(b, i + self.limit)) for i in range(a, b, self.limit)]
        inside = self.starts[bisect.bisect_left(self.starts, a):bisect.bisect_left(self.starts, b)]
        bounds = [a] + list(inside[self.limit::self.limit]) + [b]
        return [(x, y) for x, y in zip(bounds, bounds[1:]) if x < y]


def _units(text: str, a: int, b: int, budget: _Budget) -> list[tuple[int, int]]:
    """Paragraph spans of [a, b); the ones over budget cut into smaller pieces."""
    out = []
    for span in _split_on(_PARAGRAPH_BREAK, text, a, b):
        out += _fit(text, span, budget, (_SENTENCE_END, _SPACE))
    return out


def _fit(text: str, span: tuple[int, int], budget: _Budget, patterns) -> list[tuple[int, int]]:
    a, b = span
    if budget.fits(a, b):
        return [span]
    if not patterns:  # one unbreakable run: hard cuts
        return budget.hard_cuts(a, b)
    pieces = _split_on(patterns[0], text, a, b)
    if len(pieces) == 1:
        return _fit(text, pieces[0], budget, patterns[1:])
    out = []
    for piece in _pack(pieces, budget):
        out += _fit(text, piece, budget, patterns[1:])
    return out


def _pack(units: list[tuple[int, int]], budget: _Budget) -> list[tuple[int, int]]:
    """Greedily join consecutive spans while the joined span stays within the budget."""
    packed: list[tuple[int, int]] = []
    for a, b in units:
        if packed and budget.fits(packed[-1][0], b):
            packed[-1] = (packed[-1][0], b)
        else:
            packed.append((a, b))
    return packed


def _heading_paths(extracted: Extracted) -> list[tuple[int, str]]:
    """(offset, "H1 > H2 > H3") at each heading, from the heading levels."""
    stack: list[tuple[int, str]] = []
    out = []
    for h in sorted(extracted.headings, key=lambda h: h.offset):
        while stack and stack[-1][0] >= h.level:
            stack.pop()
        stack.append((h.level, h.title))
        out.append((h.offset, " > ".join(t for _, t in stack)))
    return out


Tokenize = Callable[[str], Sequence[int]]  # text -> the start offset of each token (no special tokens)


def chunk_text(extracted: Extracted, *, max_chars: int = DEFAULT_MAX_CHARS, min_chars: int = 100,
               max_tokens: int | None = None, tokenize: Tokenize | None = None) -> list[Chunk]:
    """Chunks of at most max_tokens of `tokenize`'s tokens (heading path included) when both are
    given, else of at most max_chars characters."""
    text = extracted.text
    if max_chars < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError("max_chars and max_tokens must be positive")
    by_tokens = max_tokens is not None and tokenize is not None
    sections = [(0, "")] + [(o, p) for o, p in _heading_paths(extracted) if 0 <= o < len(text)]
    chunks: list[Chunk] = []
    for i, (start, heading) in enumerate(sections):
        end = sections[i + 1][0] if i + 1 < len(sections) else len(text)
        if end <= start:
            continue
        if by_tokens:
            # The encoder sees "heading\n" + chunk (encoder.passage_text): the heading's tokens
            # come out of the budget, leaving at least a quarter of it for the text.
            room = max(max_tokens // 4, max_tokens - len(tokenize(heading + "\n")) if heading else max_tokens)
            budget = _Budget(room, [start + o for o in tokenize(text[start:end])])
        else:
            budget = _Budget(max_chars)
        spans = _pack(_units(text, start, end, budget), budget)
        # A small tail reads badly alone: fold it into the chunk before when that stays near size
        # (within the window exactly when counting tokens: past it the encoder would cut it).
        if len(spans) >= 2 and spans[-1][1] - spans[-1][0] < min_chars and budget.fits(spans[-2][0], spans[-1][1], 1.0 if by_tokens else 1.25):
            spans[-2:] = [(spans[-2][0], spans[-1][1])]
        chunks += [Chunk(a, b, text[a:b], heading) for a, b in spans]
    return chunks
