"""The read path of a library: one query, from its text to the hits shown.

A `Query` is checked and cleaned once (its text cut to MAX_QUERY_CHARS, lone surrogates as U+FFFD,
NFKC as the documents' text; k; the mode; ef_search). The `Searcher` then reads the vector list
(the encoder + the HNSW index) and/or the keyword list (SQLite FTS5 BM25), fuses them in hybrid
mode (modes.fuse), fetches the rows of the best chunks and, when asked, has the teacher re-order
the first of them. Its result is one `Hits`: the hits, the mode, and how long every stage took.

The Searcher only reads. It is given what it reads through (the catalog, the HNSW index as a
search loads it, the encoder loaded on first use) by the Library, which owns them, the writer lock
and the ANN cache. Nothing heavy is imported here until a search runs (invariant 3).
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import KW_ONLY, asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from . import modes
from .errors import EdgeDSEError
from .modes import DEFAULT_MODE, MODES

if TYPE_CHECKING:
    import os

    import numpy as np

    from .encoder import Encoder
    from .rerank import Progress, Reranker
    from .store import AnnIndex, Catalog

# A rerank of at most this many hits shows no progress bar: the teacher scores them in a batch
# or two, and a bar would only flicker.
RERANK_BAR_MIN_HITS = 8
# A query longer than this is cut before encoding/keyword search: the encoder truncates at its
# max length anyway, and tokenising megabytes of text would only waste time.
MAX_QUERY_CHARS = 20_000
# Rows fetched beyond k: ids deleted since the HNSW index was saved are dropped at fetch.
OVER_FETCH = 10


@dataclass
class Hit:
    """One search result: a chunk of a file."""

    rank: int
    score: float
    path: str
    text: str
    start: int  # character offsets of the chunk in the file's extracted text
    end: int
    heading: str
    chunk_id: int
    first_rank: int | None = None  # after a teacher rerank: the rank the search (the first stage) gave it

    def to_dict(self) -> dict:
        return asdict(self)

    def moved(self) -> str:
        """After a rerank, how far it moved from the student's rank: ↑n, ↓n or = ("" before)."""
        if self.first_rank is None:
            return ""
        step = self.first_rank - self.rank
        return f"↑{step}" if step > 0 else f"↓{-step}" if step < 0 else "="


class Hits(list):
    """A list of Hit that also carries how long each stage of the search took (ms).

    timings: model_load_ms (the first vector search of a Library), encode_ms and ann_ms (vector),
    keyword_ms (keyword), fetch_ms, and total_ms, the sum of the search's stages. A reranked list
    keeps the timings of the hits it was given and adds its own: teacher_load_ms (the teacher's
    first use) and rerank_ms. mode: the search mode that found the hits."""

    def __init__(self, hits: Iterable[Hit] = (), timings: dict | None = None, mode: str = "vector"):
        super().__init__(hits)
        self.timings: dict[str, float] = timings or {}
        self.mode = mode


def clean_query_text(text: str | None) -> str:
    """A query as every stage reads it (the search and the rerank alike): its first MAX_QUERY_CHARS
    characters, lone surrogates (undecodable bytes in argv, which the tokenizer cannot take) as
    U+FFFD, then NFKC as the documents' text (ingest.extract.normalise): "ｆｕｌｌ" finds "full"."""
    text = (text or "")[:MAX_QUERY_CHARS].encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return unicodedata.normalize("NFKC", text)


@dataclass(frozen=True)
class Query:
    """One search, checked and cleaned once: `text` is stored as clean_query_text makes it.

    ef_search: the HNSW candidate list of this search (None: the index's default, see
    store.ann.AnnIndex); higher finds more of the true nearest chunks, slower. Never below the
    hits fetched."""

    text: str
    k: int = 10
    mode: str = DEFAULT_MODE
    ef_search: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise EdgeDSEError(f"unknown search mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.k < 1:
            raise EdgeDSEError(f"k must be at least 1 (got {self.k})")
        if self.ef_search is not None and self.ef_search < 1:
            raise EdgeDSEError(f"ef_search must be at least 1 (got {self.ef_search}): give --ef-search 1 or more, "
                               "or leave it out for the index's default")
        object.__setattr__(self, "text", clean_query_text(self.text))

    @property
    def empty(self) -> bool:
        """Nothing to search for (only white space): no hits, no stage run."""
        return not self.text.strip()

    @property
    def depth(self) -> int:
        """How deep each list is read: k, and in hybrid mode at least modes.FUSION_DEPTH."""
        return max(self.k, modes.FUSION_DEPTH) if self.mode == "hybrid" else self.k


@dataclass(eq=False)
class Searcher:
    """Searches and reranks a library's chunks (see the module's docstring).

    Args:
        catalog: the library's Catalog: keyword search and the chunks' rows and vectors.
        ann_index: gives the HNSW index as a search uses it (Library.ann_index).
        encoder: gives the encoder, loading it on first use; encoder_loaded: whether it is loaded
            (a search that loads it reports model_load_ms).
        threads: the teacher's onnxruntime threads. progress: show a bar on a long rerank.
    """

    catalog: Catalog
    _: KW_ONLY
    ann_index: Callable[[], AnnIndex]
    encoder: Callable[[], Encoder]
    encoder_loaded: Callable[[], bool]
    threads: int | None = None
    progress: bool = True
    # the teachers loaded so far, by the name or folder given
    _rerankers: dict[str, Reranker] = field(default_factory=dict, init=False, repr=False)

    # -- searching ----------------------------------------------------------------------------
    def search(self, query: Query) -> Hits:
        """The query.k best chunks in query.mode: "vector", "keyword" or "hybrid" (both, merged by
        modes.fuse: scores scaled and weighted)."""
        timings: dict[str, float] = {}
        if query.empty:
            return Hits([], timings, query.mode)
        ranked: dict[str, list[tuple[int, float]]] = {}
        if query.mode in ("vector", "hybrid"):
            ranked["vector"] = self._vector(query, timings)
        if query.mode in ("keyword", "hybrid"):
            t0 = time.perf_counter()
            ranked["keyword"] = self.catalog.keyword_search(query.text, query.depth)
            timings["keyword_ms"] = (time.perf_counter() - t0) * 1000
        if query.mode == "hybrid":
            candidates = modes.fuse(ranked["vector"], ranked["keyword"], depth=query.depth)
        else:
            candidates = ranked[query.mode]
        t0 = time.perf_counter()
        rows = self.catalog.get_chunks([cid for cid, _ in candidates[: query.k + OVER_FETCH]])
        timings["fetch_ms"] = (time.perf_counter() - t0) * 1000
        score_of = dict(candidates)
        hits = [
            Hit(rank=i + 1, score=round(score_of[r.id], 6), path=r.path, text=r.text, start=r.start, end=r.end,
                heading=r.heading, chunk_id=r.id)
            for i, r in enumerate(rows[: query.k])
        ]
        timings["total_ms"] = sum(timings.values())
        return Hits(hits, _rounded(timings), query.mode)

    def _vector(self, query: Query, timings: dict[str, float]) -> list[tuple[int, float]]:
        """The vector list, over-fetched by OVER_FETCH; notes model_load_ms, encode_ms, ann_ms."""
        if not self.encoder_loaded():  # the first vector search of a Library loads the model
            t0 = time.perf_counter()
            self.encoder()
            timings["model_load_ms"] = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        qv = self.encoder().encode([query.text], kind="query")[0]
        t1 = time.perf_counter()
        ids, scores = self._vector_candidates(qv, query.depth + OVER_FETCH, query.ef_search)
        timings["encode_ms"] = (t1 - t0) * 1000
        timings["ann_ms"] = (time.perf_counter() - t1) * 1000
        return list(zip(ids, scores))

    def _vector_candidates(self, query_vector: "np.ndarray", k: int,
                           ef_search: int | None = None) -> tuple[list[int], list[float]]:
        import numpy as np

        index = self.ann_index()
        ids, scores = index.search(query_vector, k, ef_search=ef_search)
        ids, scores = list(map(int, ids)), list(map(float, scores))
        if index.generation != self.catalog.generation:
            # The index lags the catalog (a writer is mid-sync): score the chunks it lacks
            # exactly, so a reader still sees every committed file. Stale ids are dropped
            # later, when rows are fetched.
            missing = np.setdiff1d(self.catalog.all_ids(), index.ids(), assume_unique=True)
            if len(missing):
                extra = self.catalog.get_vectors(missing) @ query_vector
                ids += list(map(int, missing))
                scores += list(map(float, extra))
                order = np.argsort(-np.asarray(scores))[: k + len(missing)]
                ids, scores = [ids[i] for i in order], [scores[i] for i in order]
        return ids, scores

    # -- reranking ----------------------------------------------------------------------------
    def rerank(self, query: str, hits: Sequence[Hit], *, teacher: "str | os.PathLike | Reranker | None" = None,
               depth: int | None = None, on_progress: "Progress | None" = None) -> Hits:
        """The hits re-ordered by the teacher: see Library.rerank. The result keeps the timings of
        `hits` (when it is a Hits) and adds the rerank's."""
        from .encoder import passage_text

        timings: dict[str, float] = {}
        reranker = self._reranker(teacher, timings)
        depth = reranker.default_depth if depth is None else int(depth)
        if depth < 1:
            raise EdgeDSEError(f"a rerank depth of {depth} re-scores nothing: give 1 or more hits")
        head, tail = list(hits[:depth]), list(hits[depth:])
        mode = getattr(hits, "mode", DEFAULT_MODE)  # a plain list of hits: the default mode's
        t0 = time.perf_counter()
        text = clean_query_text(query)
        with self._rerank_bar(len(head)) as bar:
            def report(done: int, total: int) -> None:
                bar.update(done - bar.n)
                if on_progress is not None:
                    on_progress(done, total)

            order = reranker.rerank(text, [passage_text(h.text, h.heading) for h in head], on_progress=report,
                                    mode=mode)  # the blend weight measured for this mode's first-stage order
        timings["rerank_ms"] = (time.perf_counter() - t0) * 1000
        out = [
            replace(head[r.index], rank=new_rank + 1, score=round(r.score, 6), first_rank=head[r.index].rank)
            for new_rank, r in enumerate(order)
        ] + [replace(h, rank=len(head) + i + 1, first_rank=None) for i, h in enumerate(tail)]
        before = getattr(hits, "timings", {})
        return Hits(out, {**before, **_rounded(timings)}, mode)

    def _reranker(self, teacher: "str | os.PathLike | Reranker | None", timings: dict[str, float]) -> "Reranker":
        """The teacher given, or the one named (loaded once per Searcher; notes teacher_load_ms)."""
        from .rerank import Reranker

        if isinstance(teacher, Reranker):
            return teacher
        key = str(teacher or "")
        if key not in self._rerankers:
            t0 = time.perf_counter()
            self._rerankers[key] = Reranker(teacher, threads=self.threads)
            timings["teacher_load_ms"] = (time.perf_counter() - t0) * 1000
        return self._rerankers[key]

    def _rerank_bar(self, hits: int):
        """A progress bar on stderr for a rerank of more than RERANK_BAR_MIN_HITS hits (when this
        Searcher shows progress at all), else one that draws nothing."""
        from tqdm import tqdm

        return tqdm(total=hits, desc="reranking", unit="hit", leave=False,
                    disable=not self.progress or hits <= RERANK_BAR_MIN_HITS)


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {stage: round(ms, 3) for stage, ms in timings.items()}
