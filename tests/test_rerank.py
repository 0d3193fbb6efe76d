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
from edge_dse.library import RERANK_BAR_MIN_HITS
from edge_dse.rerank import DEFAULT_DEPTH, default_depth

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
    assert sorted(h.first_rank for h in reranked) == [h.rank for h in hits]
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
    assert code == 0 and all(h["first_rank"] is not None for h in data["hits"]) and "rerank_ms" in data["timings_ms"]


def test_cli_search_rerank_without_a_teacher_says_how_to_get_one(library, tmp_path, monkeypatch, capsys):
    empty_assets = tmp_path / "assets"
    shutil.copytree(assets_dir() / "baseline", empty_assets / "baseline")
    monkeypatch.setenv("EDGE_DSE_ASSETS", str(empty_assets))
    code = cli(["search", "water for tea", "-l", str(library.path), "--rerank"])
    err = capsys.readouterr().err
    assert code == 1 and "no teacher model" in err and "edge-dse distill" in err and "Traceback" not in err


# -- how deep the teacher reranks: its card's measured depth, else DEFAULT_DEPTH ----------------
def teacher_with_card(src, folder, **changes):
    shutil.copytree(src, folder)
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**card, **changes}))
    return folder


@pytest.fixture(scope="module")
def seven_deep(bi_teacher, tmp_path_factory):
    """The stand-in teacher, its card recording a rerank depth of 7 (and a table beside it, as a
    measured card holds)."""
    return teacher_with_card(bi_teacher, tmp_path_factory.mktemp("seven") / "t", rerank={
        "default_depth": 7, "table": [{"depth": 7, "ndcg@10": 0.5}, {"depth": 50, "ndcg@10": 0.5}]})


def shipped_teacher_depth() -> int:
    card = json.loads((assets_dir() / "teacher" / "card.json").read_text())
    return card.get("rerank", {}).get("default_depth", DEFAULT_DEPTH)


@pytest.fixture(scope="module")
def deep_library(tmp_path_factory):
    """One short note per chunk, more notes than any depth the tests rerank to."""
    docs = tmp_path_factory.mktemp("deep-docs")
    words = ["logs", "disk", "tea", "kettle", "chess", "board", "bread", "yeast", "bike", "tyre", "tax", "plants"]
    for i in range(max(shipped_teacher_depth(), 12) + 4):
        (docs / f"n{i:03d}.txt").write_text(f"Note {i}: about {words[i % len(words)]} and {words[(3 * i + 1) % len(words)]}.\n")
    lib = Library(tmp_path_factory.mktemp("deep-lib"), progress=False)
    lib.add(docs)
    assert lib.status()["chunks"] == len(list(docs.iterdir()))
    yield lib
    lib.close()


def rescored(hits) -> int:
    """How many hits the teacher re-scored (the others carry no student rank)."""
    return sum(h["first_rank"] is not None if isinstance(h, dict) else h.first_rank is not None for h in hits)


def test_the_api_reranks_as_deep_as_the_teachers_card_says(deep_library, seven_deep, bi_teacher):
    assert Reranker(seven_deep).default_depth == default_depth(seven_deep) == 7
    assert Reranker(bi_teacher).default_depth == DEFAULT_DEPTH  # no "rerank" in its card
    hits = deep_library.search("a kettle for tea", k=12)
    reranked = deep_library.rerank("a kettle for tea", hits, teacher=seven_deep)
    assert len(reranked) == 12 and rescored(reranked) == 7
    assert sorted(h.first_rank for h in reranked[:7]) == list(range(1, 8))
    # Below the depth: the student's hits, order and scores, ranked on from 8.
    assert [(h.chunk_id, h.score, h.rank) for h in reranked[7:]] == [(h.chunk_id, h.score, h.rank) for h in hits[7:]]
    assert rescored(deep_library.rerank("a kettle for tea", hits, teacher=seven_deep, depth=3)) == 3
    assert rescored(deep_library.rerank("a kettle for tea", hits[:5], teacher=seven_deep)) == 5


def test_the_shipped_teacher_reranks_as_deep_as_its_card_records(deep_library):
    expected = shipped_teacher_depth()
    assert default_depth() == Reranker().default_depth == expected
    hits = deep_library.search("a kettle for tea", k=expected + 2)
    assert rescored(deep_library.rerank("a kettle for tea", hits)) == expected


def test_cli_reranks_as_deep_as_the_card_says_and_rerank_depth_overrides(deep_library, seven_deep, capsys):
    args = ["search", "a kettle for tea", "-l", str(deep_library.path), "--json", "--rerank", "--teacher", str(seven_deep)]
    assert cli([*args, "-k", "12"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rerank_depth"] == 7 and len(data["hits"]) == 12 and rescored(data["hits"]) == 7
    assert cli([*args, "-k", "12", "--rerank-depth", "10"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rerank_depth"] == 10 and rescored(data["hits"]) == 10
    # k below the depth: the student fetches 7 for the teacher, 3 are shown, all re-scored.
    assert cli([*args, "-k", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["hits"]) == 3 and rescored(data["hits"]) == 3 and data["rerank_depth"] == 7
    assert cli(["search", "tea", "-l", str(deep_library.path), "--rerank-depth", "5"]) == 1
    assert "add --rerank" in capsys.readouterr().err


def test_a_bad_depth_in_the_card_is_a_one_line_error(bi_teacher, tmp_path):
    bad = teacher_with_card(bi_teacher, tmp_path / "bad", rerank={"default_depth": 0})
    with pytest.raises(EdgeDSEError, match=r"rerank.default_depth is 0.*edge-dse distill"):
        Reranker(bad)
    with pytest.raises(EdgeDSEError, match="rerank.default_depth"):
        default_depth(bad)


# -- progress ------------------------------------------------------------------------------------
def test_scoring_reports_progress_after_each_batch_and_scores_the_same(bi_teacher):
    query, passages = "how do I stop log files from filling my disk", PASSAGES * 6
    for teacher in (bi_teacher, None):  # the stand-in bi-encoder and the shipped cross-encoder
        rr = Reranker(teacher)
        reports: list[tuple[int, int]] = []
        scores = rr.score(query, passages, batch_size=4, on_progress=lambda done, total: reports.append((done, total)))
        assert reports[0] == (0, 18) and reports[-1] == (18, 18) and len(reports) >= 1 + 18 // 4, (rr.kind, reports)
        assert all(a[0] < b[0] for a, b in zip(reports, reports[1:]))
        np.testing.assert_allclose(scores, rr.score(query, passages, batch_size=4), atol=1e-5)


def test_cli_rerank_draws_a_bar_on_a_terminal_only(deep_library, seven_deep, capsys):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    depth = RERANK_BAR_MIN_HITS + 2
    args = ["search", "a kettle for tea", "-l", str(deep_library.path), "--rerank", "--teacher", str(seven_deep),
            "--rerank-depth", str(depth)]
    assert cli(args) == 0  # stderr is not a terminal here: no bar, only the timing line
    err = capsys.readouterr().err
    assert "reranking" not in err and "%|" not in err and "rerank" in err
    master, terminal = pty.openpty()
    # A terminal of 100 columns, as a user's has: tqdm draws nothing on one of 0 (a new pty's size).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "edge_dse.cli", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    seen = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed its end of the terminal
            break
        if not data:
            break
        seen += data
    os.close(master)
    assert proc.wait() == 0, seen
    assert b"reranking" in seen and f"/{depth}".encode() in seen, seen
