"""The teacher's blend weight per search mode (edge_dse/distill/teacher.py): the rule that keeps a
weight (choose_weight, which dev_rerank and blend_by_mode share), the dev lists ranked as the
library ranks them (first_stage against Library.search on real files), the sweep, and the record
it leaves in a real teacher's card (the shipped teacher, run as the program runs it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TOPICS, stdlib_docstrings
from edge_dse import Reranker
from edge_dse.distill.data import Pair, write_jsonl
from edge_dse.distill.teacher import (ENCODER_WEIGHTS, DevList, add_blend_by_mode, blend_by_mode, blend_sweep,
                                      choose_weight, dev_lists, first_stage, has_blend_by_mode, render_teacher_card_md)
from edge_dse.models import read_card
from edge_dse.rerank import blend, resolve_teacher_dir


def gains(mean: float, worst: float) -> dict:
    return {"mean_gain": mean, "worst_gain": worst}


def test_the_rule_keeps_the_best_mean_among_the_weights_that_lose_no_split():
    by_weight = {0.0: gains(0.030, -0.010),  # the best mean, but it loses a split
                 0.5: gains(0.015, 0.0), 1.0: gains(0.015, 0.002),  # the same mean: the lighter one
                 4.0: gains(0.001, 0.0)}
    assert choose_weight(by_weight) == 0.5
    # a heavy weight gives back the first stage's order (gains ~0): never kept over a real gain
    assert choose_weight({1.0: gains(0.010, 0.001), 4.0: gains(0.0, 0.0)}) == 1.0
    # equal at 4 decimals is a tie too
    assert choose_weight({1.0: gains(0.01001, 0.0), 2.0: gains(0.01004, 0.0)}) == 1.0


def test_when_every_weight_loses_a_split_the_rule_keeps_the_least_loss():
    assert choose_weight({0.0: gains(0.03, -0.02), 1.0: gains(0.01, -0.005), 2.0: gains(0.0, -0.005),
                          3.0: gains(0.0, -0.008)}) == 1.0


def lists_and_scores():
    """Two splits, ten passages a list: on "sure" the first stage has the positive 4th and the
    teacher is sure of it; on "unsure" the first stage has it 1st and the teacher puts it a hair
    below another passage."""
    lists, scores = [], []
    for q in range(3):
        passages = [f"sure {q} {i}" for i in range(10)]
        lists.append(DevList("sure", f"q{q}", passages, 3))
        scores.append(np.array([0, 0, 0, 5, 0, 0, 0, 0, 0, 0], np.float32))
        passages = [f"unsure {q} {i}" for i in range(10)]
        lists.append(DevList("unsure", f"u{q}", passages, 0))
        scores.append(np.array([1.0, 1.05, 0, 0, 0, 0, 0, 0, 0, 0], np.float32))
    return lists, scores


def test_the_sweep_measures_every_weight_and_keeps_the_rules_choice():
    lists, scores = lists_and_scores()
    got = blend_sweep(scores, lists)
    assert set(got["by_weight"]) == {str(w) for w in ENCODER_WEIGHTS}
    alone = got["by_weight"]["0.0"]
    assert alone["ndcg"]["sure"] == 1.0 and alone["ndcg"]["unsure"] < 1.0 and alone["worst_gain"] < 0
    # the lightest blend that keeps the unsure split's first place and the sure split's gain
    assert got["encoder_weight"] == 0.25 == choose_weight({float(w): v for w, v in got["by_weight"].items()})
    fourth = round(1 / np.log2(5), 4)  # nDCG@10 of a positive 4th
    assert got["sure"] == {"encoder": fourth, "reranked": 1.0, "teacher_alone": 1.0}
    assert got["unsure"]["encoder"] == got["unsure"]["reranked"] == 1.0
    assert got["mean_gain"] == got["by_weight"]["0.25"]["mean_gain"] == pytest.approx((1 - fourth) / 2, abs=1e-4)
    assert got["worst_gain"] == 0.0
    # heavier, the first stage's order comes back and the sure split's gain goes
    heavy = got["by_weight"]["4.0"]["ndcg"]
    assert fourth <= heavy["sure"] < 1.0 and heavy["unsure"] == 1.0
    # the blend is rerank.blend's, the weight's order at run time
    assert [int(i) for i in np.argsort(-blend(scores[1], 0.25), kind="stable")][0] == 0


def stdlib_pairs(limit: int = 90) -> list[Pair]:
    """Real (query, passage) pairs: a standard-library module's synopsis line and the rest of its
    docstring."""
    return [Pair(synopsis, " ".join(body.split())[:600], f"stdlib:{stem}", "stdlib")
            for stem, synopsis, body in stdlib_docstrings(limit)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Two held-out splits of real text, in the data step's format."""
    folder = tmp_path_factory.mktemp("data")
    pairs = stdlib_pairs()
    assert len(pairs) >= 60
    half = len(pairs) // 2
    write_jsonl(pairs[:half], folder / "one.test.jsonl")
    write_jsonl(pairs[half:], folder / "two.test.jsonl")
    return folder


def test_dev_lists_rank_the_docs_as_the_librarys_search_does(library, encoder, tmp_path):
    """Each mode's dev list is what Library.search gives in that mode over the same texts as files."""
    docs = [body for _, body, _ in TOPICS.values()] + [f"{title}. {body}" for title, body, _ in TOPICS.values()]
    docs += ["Shopping list: eggs, milk, lentils. Call the plumber on Tuesday.",
             "The sourdough starter needs flour and water every day.",
             "Python lists have sort and sorted; the key argument picks what to compare.",
             "Tyre pressure is written on the sidewall of a bicycle tyre."]
    folder = tmp_path / "files"
    folder.mkdir()
    for i, text in enumerate(docs):
        (folder / f"p{i:03d}.txt").write_text(text, encoding="utf-8")
    library.add(folder)
    queries = [q for *_, q in TOPICS.values()] + ["sort a list in python", "flour water starter", "bicycle tyre pressure"]
    for mode in ("vector", "keyword", "hybrid"):
        got = first_stage(mode, docs, queries, 12, encoder)
        for query, row in zip(queries, got):
            hits = library.search(query, k=12, mode=mode)
            assert [int(Path(h.path).stem[1:]) for h in hits] == row, (mode, query)
    # the hybrid's order is neither list's alone here (else this would not test the fusion)
    assert first_stage("hybrid", docs, queries, 12, encoder) != first_stage("vector", docs, queries, 12, encoder)


def test_hybrid_dev_lists_are_the_same_queries_in_the_hybrids_order(data_dir, encoder):
    vector = dev_lists(data_dir, ["one.test", "two.test"], encoder=encoder.model.folder, queries=6, depth=10,
                       report_queries=20, corpus=200)
    hybrid = dev_lists(data_dir, ["one.test", "two.test"], encoder=encoder.model.folder, queries=6, depth=10,
                       report_queries=20, corpus=200, mode="hybrid")
    assert [(d.split, d.query) for d in hybrid] == [(d.split, d.query) for d in vector] and len(hybrid) == 12
    assert any(h.passages != v.passages for h, v in zip(hybrid, vector))
    passage_of = {p.query: p.passage for p in stdlib_pairs()}
    for d in hybrid:
        assert len(d.passages) == 10 and (d.positive is None or d.passages[d.positive] == passage_of[d.query])
    assert sum(d.positive is not None for d in hybrid) >= 8  # the hybrid finds most synopses' modules
    with pytest.raises(ValueError, match="mode"):
        dev_lists(data_dir, ["one.test"], mode="semantic")


@pytest.fixture(scope="module")
def teacher_copy(tmp_path_factory) -> Path:
    """The shipped teacher, in a folder of its own, its card without weights per mode."""
    folder = tmp_path_factory.mktemp("teacher") / "asset"
    shutil.copytree(resolve_teacher_dir(None), folder)
    card = read_card(folder)
    card["rerank"] = {k: v for k, v in (card.get("rerank") or {}).items() if k not in ("encoder_weight_by_mode", "by_mode")}
    (folder / "card.json").write_text(json.dumps(card, indent=2))
    return folder


def test_blend_by_mode_tunes_the_run_time_teacher_on_the_hybrids_dev_hits(data_dir, teacher_copy, encoder):
    splits = ["one.test", "two.test"]
    rr = Reranker(teacher_copy)
    got = blend_by_mode(rr, data_dir, splits, encoder=str(encoder.model.folder), queries=6, depth=8, log=lambda _: None)
    assert set(got) == {"hybrid"}
    record = got["hybrid"]
    assert record["depth"] == 8 and record["lists"] == 12 and record["teacher"] == rr.id
    assert set(record["by_weight"]) == {str(w) for w in ENCODER_WEIGHTS}
    assert record["encoder_weight"] == choose_weight({float(w): v for w, v in record["by_weight"].items()})
    # the sweep is of the run-time teacher's scores of the hybrid's dev hits
    lists = dev_lists(data_dir, splits, encoder=str(encoder.model.folder), queries=6, depth=8, mode="hybrid")
    again = blend_sweep([rr.score(d.query, d.passages) for d in lists], lists)
    assert again["by_weight"] == record["by_weight"] and again["one.test"] == record["one.test"]


def test_the_weight_per_mode_is_recorded_in_the_teachers_card(data_dir, teacher_copy, encoder):
    before = read_card(teacher_copy)
    assert not has_blend_by_mode(before)
    card = add_blend_by_mode(teacher_copy, data_dir, ["one.test", "two.test"], encoder=str(encoder.model.folder),
                             queries=3, log=lambda _: None)
    assert card == read_card(teacher_copy) and has_blend_by_mode(card)
    rerank = card["rerank"]
    w = rerank["encoder_weight_by_mode"]["hybrid"]
    assert w == rerank["by_mode"]["hybrid"]["encoder_weight"] in ENCODER_WEIGHTS
    assert rerank["by_mode"]["hybrid"]["depth"] == before["rerank"].get("default_depth", 20)  # what it re-scores at run time
    # the rest of the card is kept: the vector weight, the depth, the evaluation
    assert rerank["encoder_weight"] == before["rerank"]["encoder_weight"]
    assert {k: v for k, v in card.items() if k != "rerank"} == {k: v for k, v in before.items() if k != "rerank"}
    assert Reranker(teacher_copy).model.encoder_weight_for("hybrid") == w
    # card.md states both weights and the dev table they were chosen on
    md = (teacher_copy / "card.md").read_text()
    assert md == render_teacher_card_md(card)
    section = md.split("## Blend with the first stage's order")[1].split("\n## ")[0]
    assert f"**{rerank['encoder_weight']}**" in section and f"- hybrid: **{w}**" in section
    assert "| blend weight | vector mean gain |" in section and "hybrid one.test nDCG@10" in section
    assert section.count("\n| ") == 2 + len(ENCODER_WEIGHTS)  # the header, first stage alone, a row a weight
