"""Chunks follow the model: their size is the encoder's window counted in its own tokens, the
library records it with the model, and a model change re-chunks on `reindex`."""

from __future__ import annotations

import pytest

from edge_dse import Encoder, Library
from edge_dse.errors import IndexSpecMismatchError
from edge_dse.ingest import chunk_text, extract

from conftest import REPO, shipped_model_dir


@pytest.fixture(scope="module")
def long_doc(tmp_path_factory):
    """A real multi-paragraph document: this repository's README, a few thousand tokens."""
    folder = tmp_path_factory.mktemp("docs")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (folder / "guide.md").write_text(readme[:20000], encoding="utf-8")
    return folder


def _token_sizes(enc: Encoder, chunks) -> list[int]:
    from edge_dse.encoder import passage_text

    return [len(enc.token_starts(passage_text(c.text, c.heading))) for c in chunks]


@pytest.mark.parametrize("window", [64, 128, 256])
def test_every_chunk_fits_the_window_in_the_models_own_tokens(long_doc, window):
    enc = Encoder(shipped_model_dir(), max_length=window)
    chunks = chunk_text(extract(long_doc / "guide.md"), **enc.chunking())
    sizes = _token_sizes(enc, chunks)
    assert max(sizes) <= window - 2  # [CLS] and [SEP] take the rest: the encoder sees every chunk whole
    assert sum(sizes) / len(sizes) > (window - 2) / 3  # packed, not cut needlessly small


def test_a_128_token_library_gets_shorter_chunks_than_a_256_token_one(long_doc, tmp_path):
    sizes = {}
    for window in (128, 256):
        enc = Encoder(shipped_model_dir(), max_length=window)
        with Library(tmp_path / f"lib{window}", model=enc, progress=False) as lib:
            lib.add(long_doc)
            status = lib.status()
            assert status["model"]["chunk_tokens"] == str(window - 2)
            rows = [h.end - h.start for h in lib.search("how do I run the tests?", k=50, mode="keyword")]
            sizes[window] = (status["chunks"], max(rows))
    assert sizes[128][0] > sizes[256][0]  # more, shorter chunks
    assert sizes[128][1] < sizes[256][1]


def test_opening_a_library_with_another_window_names_reindex_and_reindex_rechunks(long_doc, tmp_path):
    with Library(tmp_path / "lib", model=Encoder(shipped_model_dir(), max_length=256), progress=False) as lib:
        lib.add(long_doc)
        before = lib.status()["chunks"]
    short = Encoder(shipped_model_dir(), max_length=128)
    with pytest.raises(IndexSpecMismatchError, match="reindex"):
        Library(tmp_path / "lib", model=short, progress=False)
    with Library(tmp_path / "lib", model=short, progress=False, allow_model_change=True) as lib:
        lib.reindex()
        assert lib.status()["model"]["chunk_tokens"] == "126"
        assert lib.status()["chunks"] > before
    with Library(tmp_path / "lib", model=short, progress=False) as lib:  # opens cleanly now
        assert lib.search("how do I run the tests?", k=1)
