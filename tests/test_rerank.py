"""The run-time reranker and `Library.rerank` / `edge-dse search --rerank`, on real models.

The cross-encoder kind is exercised end to end by tests/test_distill_pipeline.py (a tiny teacher
trained and exported there); here the shipped baseline, declared a bi-encoder teacher, stands in
so that these tests need no torch.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edge_dse import EdgeDSEError, Encoder, Library, Reranker
from edge_dse.cli import main as cli
from edge_dse.config import assets_dir

PASSAGES = [
    "The logrotate utility rotates, compresses and mails system logs, so that log files do not fill the disk.",
    "Chess is a board game for two players, played on a checkered board with 64 squares.",
    "A kettle boils water for tea; electric kettles switch off when the water boils.",
]


@pytest.fixture(scope="module")
def bi_teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher") / "bt"
    shutil.copytree(assets_dir() / "baseline", folder)
    card = json.loads((folder / "card.json").read_text())
    card.update(kind="bi-encoder", id="test/bi-teacher")
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_bi_encoder_teacher_scores_are_the_encoders_cosines(bi_teacher):
    rr = Reranker(bi_teacher)
    assert rr.kind == "bi-encoder" and rr.id == "test/bi-teacher"
    scores = rr.score("how do I stop log files from filling my disk", PASSAGES)
    enc = Encoder(bi_teacher)
    expected = enc.encode(PASSAGES) @ enc.encode(["how do I stop log files from filling my disk"], kind="query")[0]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    order = rr.rerank("how do I stop log files from filling my disk", PASSAGES)
    assert [r.index for r in order][0] == 0 and sorted(r.index for r in order) == [0, 1, 2]
    assert rr.score("anything", []).shape == (0,)


def test_unknown_kind_and_missing_teacher_name_the_fix(bi_teacher, tmp_path, monkeypatch):
    bad = tmp_path / "bad"
    shutil.copytree(bi_teacher, bad)
    card = json.loads((bad / "card.json").read_text())
    (bad / "card.json").write_text(json.dumps({**card, "kind": "poly-encoder"}))
    with pytest.raises(EdgeDSEError, match="unknown kind 'poly-encoder'"):
        Reranker(bad)
    empty_assets = tmp_path / "assets"
    empty_assets.mkdir()
    monkeypatch.setenv("EDGE_DSE_ASSETS", str(empty_assets))
    with pytest.raises(EdgeDSEError, match="edge-dse distill"):
        Reranker()


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    docs = tmp_path_factory.mktemp("docs")
    for i, text in enumerate(PASSAGES):
        (docs / f"note{i}.txt").write_text(text + "\n")
    lib = Library(tmp_path_factory.mktemp("lib"), progress=False)
    lib.add(docs)
    yield lib
    lib.close()


def test_library_rerank_reorders_hits_and_keeps_the_students_rank(library, bi_teacher):
    hits = library.search("board game for two", k=3)
    reranked = library.rerank("board game for two", hits, teacher=bi_teacher)
    assert sorted(h.chunk_id for h in reranked) == sorted(h.chunk_id for h in hits)
    assert [h.rank for h in reranked] == [1, 2, 3]
    assert sorted(h.student_rank for h in reranked) == [h.rank for h in hits]
    assert reranked[0].path.endswith("note1.txt")
    assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)
    assert {"teacher_load_ms", "rerank_ms"} <= set(reranked.timings)
    again = library.rerank("board game for two", hits, teacher=bi_teacher)
    assert "teacher_load_ms" not in again.timings  # loaded once per Library


def test_cli_search_rerank_prints_moves_and_both_timings(library, bi_teacher, capsys):
    code = cli(["search", "water for tea", "-l", str(library.path), "-k", "3", "--rerank", "--teacher", str(bi_teacher)])
    out = capsys.readouterr()
    assert code == 0
    first = out.out.splitlines()[0]
    assert "note2.txt" in first and ("=" in first or "↑" in first)
    assert "rerank" in out.err + out.out and "encode" in out.err + out.out
    code = cli(["search", "water for tea", "-l", str(library.path), "--json", "--rerank", "--teacher", str(bi_teacher)])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and all(h["student_rank"] is not None for h in data["hits"]) and "rerank_ms" in data["timings_ms"]


def test_cli_search_rerank_without_a_teacher_says_how_to_get_one(library, tmp_path, monkeypatch, capsys):
    empty_assets = tmp_path / "assets"
    shutil.copytree(assets_dir() / "baseline", empty_assets / "baseline")
    monkeypatch.setenv("EDGE_DSE_ASSETS", str(empty_assets))
    code = cli(["search", "water for tea", "-l", str(library.path), "--rerank"])
    err = capsys.readouterr().err
    assert code == 1 and "no teacher model" in err and "edge-dse distill" in err and "Traceback" not in err
