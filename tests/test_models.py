"""One owner for the model (edge_dse/models.py): cards read and checked in one place, one
onnxruntime session factory, and every label naming a model derived from its role, so that the
CLI and the UI name the model that really ranked the hits. Real shipped models, real files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TOPICS, write_topic

from edge_dse import EdgeDSEError, Encoder, Library, Reranker, models
from edge_dse.app import hits_html, open_choices, render_cards, render_search
from edge_dse.app_service import Service
from edge_dse.cli import main as cli
from edge_dse.config import assets_dir
from edge_dse.rerank import CrossEncoder

PACKAGE = REPO / "edge_dse"


def shipped(name: str) -> Path:
    folder = assets_dir() / name
    if not (folder / "model.onnx").is_file():
        pytest.skip(f"no shipped {name} in {assets_dir()}")
    return folder


# -- one owner -----------------------------------------------------------------------------------
def test_cards_sessions_and_batches_have_one_owner():
    """Only models.py opens a card.json or makes an onnxruntime session, and no module reaches
    into another's private loaders (the Reranker once built a half-made Encoder)."""
    opens_card = re.compile(r"card\.json.*(read_text|write_text|open\(|json\.load)|(read_text|open\().*card\.json")
    for path in PACKAGE.rglob("*.py"):
        if path.name == "models.py":
            continue
        src = path.read_text(encoding="utf-8")
        where = path.relative_to(REPO)
        assert not opens_card.search(src), f"{where} opens a card itself: use models.read_card / ModelCard.load"
        assert "InferenceSession(" not in src and "SessionOptions(" not in src, f"{where} makes its own session"
        assert "Encoder.__new__" not in src and "._load_" not in src, f"{where} half-builds an Encoder"
        for line in src.splitlines():
            m = re.match(r"\s*from \.+(encoder|models|rerank) import (.*)", line)
            assert not (m and re.search(r"(^|[ ,(])_\w", m.group(2))), f"{where}: {line.strip()}"


def test_import_edge_dse_models_loads_no_runtime():
    code = ("import sys, edge_dse, edge_dse.models, edge_dse.encoder, edge_dse.rerank; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'numpy', 'tokenizers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the card ------------------------------------------------------------------------------------
def test_shipped_cards_load_with_their_roles_and_labels():
    base = models.ModelCard.load(shipped("baseline"))
    assert (base.id, base.dim, base.pooling, base.max_length) == ("edge-dse/baseline-all-minilm-l6-v2-int8", 384, "mean", 256)
    assert base.kind == "bi-encoder" and base.query_prefix == "" and base.document_prefix == ""
    default = models.default_model_name()
    assert base.role == (models.DEFAULT if default == "baseline" else models.OPT_IN)
    assert models.label(base) == f"baseline ({models.ROLE_TITLES[base.role]})" and models.label(base, short=True) == "baseline"
    if (assets_dir() / "student" / "model.onnx").is_file():
        student = models.ModelCard.load(assets_dir() / "student")
        promoted = (student.data.get("promotion") or {}).get("default") is True
        assert student.role == (models.DEFAULT if promoted else models.OPT_IN)
        assert (default == "student") == promoted
    teacher = models.ModelCard.load(shipped("teacher"))
    # Named by its folder (its card says "asset", where it was built), in the teacher's role.
    assert teacher.kind == "cross-encoder" and teacher.role == models.TEACHER
    assert models.label(teacher) == "teacher (reranker)" and teacher.default_depth >= 1


def test_a_broken_card_is_one_line_that_names_the_fix(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(shipped("baseline"), folder)
    card = models.read_card(folder)
    for change, message in (({"pooling": "max"}, "unknown pooling 'max'"), ({"kind": "poly-encoder"}, "unknown kind"),
                            ({"dim": None}, "dim and max_length must be numbers")):
        models.write_card(folder, {**card, **change})
        with pytest.raises(EdgeDSEError, match=message):
            Encoder(folder)
    models.write_card(folder, {k: v for k, v in card.items() if k != "id"})
    with pytest.raises(EdgeDSEError, match="has no 'id'.*edge-dse export"):
        models.ModelCard.load(folder)
    (folder / "card.json").write_text("{not json")
    with pytest.raises(EdgeDSEError, match="unreadable"):
        Encoder.read_card(folder)


def test_the_blend_weight_follows_the_search_mode_and_falls_back_to_the_encoders():
    """A teacher's card may record a blend weight per search mode (its hits come in that mode's
    order); a mode without one uses encoder_weight, chosen on the encoder's order."""
    data = models.read_card(shipped("teacher"))

    def card(rerank: dict) -> models.ModelCard:
        return models.ModelCard.from_dict({**data, "rerank": rerank}, shipped("teacher"), role=models.TEACHER)

    by_mode = card({"encoder_weight": 1.5, "encoder_weight_by_mode": {"hybrid": 3}})
    assert by_mode.encoder_weight_by_mode == {"hybrid": 3.0}
    assert [by_mode.encoder_weight_for(m) for m in ("vector", "keyword", "hybrid")] == [1.5, 1.5, 3.0]
    assert [card({"encoder_weight": 1.5}).encoder_weight_for(m) for m in ("vector", "hybrid")] == [1.5, 1.5]
    assert card({}).encoder_weight_for("hybrid") == 0.0  # no blend at all: the teacher alone
    assert card({"encoder_weight_by_mode": {"hybrid": 0}}).encoder_weight_for("hybrid") == 0.0
    with pytest.raises(EdgeDSEError, match="unknown search mode 'semantic'"):
        by_mode.encoder_weight_for("semantic")
    for bad, message in (({"hybrid": -1}, "encoder_weight_by_mode.hybrid is -1"),
                         ({"hybrid": "3"}, "encoder_weight_by_mode.hybrid is '3'"),
                         ({"hybrid": True}, "encoder_weight_by_mode.hybrid is True"),
                         ({"semantic": 1.0}, "names 'semantic', not a search mode"),
                         ([3.0], r"encoder_weight_by_mode is \[3.0\], not \{mode: weight\}")):
        with pytest.raises(EdgeDSEError, match=message):
            card({"encoder_weight_by_mode": bad}).encoder_weight_for("vector")


# -- the models built from it --------------------------------------------------------------------
def test_the_cross_encoder_is_the_rerankers_scorer_and_no_encoder():
    teacher = shipped("teacher")
    with pytest.raises(EdgeDSEError, match="cross-encoder.*--teacher"):
        Encoder(teacher)
    ce, rr = CrossEncoder(teacher, threads=1), Reranker(teacher, threads=1)
    passages = [body for _, body, _ in TOPICS.values()]
    query = TOPICS["bike"][2]
    # Same batches, same scores (int8 activations are scaled per batch, so only the same batches compare).
    scores = ce.score(query, passages, batch_size=2)
    np.testing.assert_allclose(scores, rr.score(query, passages, batch_size=2), atol=1e-5)
    assert int(np.argmax(scores)) == list(TOPICS).index("bike")
    assert ce.max_length == rr.max_length == models.ModelCard.load(teacher).max_length


def test_a_card_outside_a_folder_runs_as_its_folder_does():
    """The export measures a graph before its asset folder exists: the run-time Encoder built
    from a card and two files gives the folder's vectors."""
    folder = shipped("baseline")
    card = models.read_card(folder)
    loose = models.ModelCard.from_dict({k: card[k] for k in ("id", "dim", "pooling", "max_length", "output")},
                                       Path("/nonexistent"), model_file=folder / "model.onnx",
                                       tokenizer_file=folder / "tokenizer.json")
    texts = [body for _, body, _ in TOPICS.values()]
    np.testing.assert_allclose(Encoder(loose, threads=1).encode(texts), Encoder(folder, threads=1).encode(texts), atol=1e-6)


# -- labels: the CLI and the UI name the model that ranked the hits -------------------------------
@pytest.fixture(scope="module")
def baseline_library(tmp_path_factory):
    """A library built on the baseline, and a teacher (the baseline declared a bi-encoder
    teacher, reranking 5 deep) that lifts hits from below the cut."""
    tmp = tmp_path_factory.mktemp("labels")
    docs = tmp / "docs"
    docs.mkdir()
    for key in TOPICS:
        write_topic(docs, key, ".md")
    teacher = tmp / "stand-in"
    shutil.copytree(shipped("baseline"), teacher)
    models.write_card(teacher, {**models.read_card(teacher), "kind": "bi-encoder", "id": "test/stand-in",
                                "name": "stand-in", "rerank": {"default_depth": 5}})
    with Library(tmp / "lib", model="baseline", progress=False) as lib:
        lib.add(docs)
        label = models.label(lib.model)
    return tmp / "lib", teacher, label


def test_the_cli_names_the_baseline_that_ranked_the_hits(baseline_library, capsys):
    lib, teacher, label = baseline_library
    assert label.startswith("baseline (")
    assert cli(["search", TOPICS["bike"][2], "-l", str(lib), "-k", "2", "--model", "baseline"]) == 0
    out = capsys.readouterr()  # the default mode, hybrid, names both rankers
    assert f"ranked by {label} + BM25" in out.err and "student" not in (out.out + out.err).lower()
    assert cli(["search", TOPICS["bike"][2], "-l", str(lib), "-k", "2", "--model", "baseline", "--mode", "vector",
                "--rerank", "--teacher", str(teacher)]) == 0
    out = capsys.readouterr()
    assert f"ranked by {label}; top 5 re-ordered by the stand-in (reranker)" in out.err
    assert "moves from the baseline order" in out.err and "student" not in (out.out + out.err).lower()
    assert cli(["search", TOPICS["bike"][2], "-l", str(lib), "--json", "--mode", "vector", "--rerank", "--teacher", str(teacher)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ranked_by"] == label and data["reranked_by"] == "stand-in (reranker)"
    assert cli(["status", "-l", str(lib)]) == 0
    assert f"model:    {label}: edge-dse/baseline-all-minilm-l6-v2-int8" in capsys.readouterr().out


def test_the_ui_names_the_baseline_that_ranked_the_hits(baseline_library):
    lib, teacher, label = baseline_library
    svc = Service(lib, teacher=teacher, model="baseline")
    try:
        query = TOPICS["plants"][2]
        res = svc.search(query, k=2, mode="vector", rerank=True)
        assert (res.ranked_by, res.ranked_by_short, res.reranked_by) == (label, "baseline", "stand-in (reranker)")
        first, teacher_col, line, _ = render_search(res, query=query, k=2, mode="vector")
        assert f"Search order: {label}" in first and "Reranked by the stand-in (reranker)" in teacher_col
        # A hit the teacher lifted from below the cut says which model had it there.
        lifted = replace(res.teacher[0], first_rank=4)
        assert "(baseline #4)" in hits_html([lifted], k=2, title="t", reranked=True, before=res.ranked_by_short)
        assert all(choice.startswith(("baseline ", "stand-in ")) for choice, _ in open_choices(res))
        plain = render_search(svc.search(query, k=2, mode="vector"), query=query, k=2, mode="vector")
        for html in (first, teacher_col, line, *plain):
            assert "student" not in html.lower(), html
        cards = render_cards(svc).split("\n---\n")
        base = next(c for c in cards if "`edge-dse/baseline-all-minilm-l6-v2-int8`" in c)
        assert f"### {label}:" in base and "used here as the search encoder of this library" in base
        assert "student" not in base.lower()
        if models.default_model_name() == "baseline":  # the Model tab once called the student the default
            assert not any("student (default encoder)" in c for c in cards)
        assert not any("student's" in c for c in cards)  # the teacher re-scores the search encoder's hits
    finally:
        svc.close()


def test_labels_follow_the_role_when_the_default_changes(tmp_path, monkeypatch):
    """A student promoted to default makes the baseline opt-in: every label follows its role."""
    assets = tmp_path / "assets"
    shutil.copytree(shipped("baseline"), assets / "baseline")
    shutil.copytree(assets / "baseline", assets / "student")
    models.write_card(assets / "student", {**models.read_card(assets / "student"), "id": "test/student",
                                           "name": "student", "promotion": {"default": True}})
    monkeypatch.setenv("EDGE_DSE_ASSETS", str(assets))
    assert models.default_model_name() == "student"
    assert models.label(models.ModelCard.load(assets / "student")) == "student (default encoder)"
    assert models.label(models.ModelCard.load(assets / "baseline")) == "baseline (opt-in encoder)"
    with Library(tmp_path / "lib", model="baseline", progress=False) as lib:
        assert lib.ranked_by("vector") == ("baseline (opt-in encoder)", "baseline")
        assert lib.ranked_by("hybrid")[1] == "baseline + BM25" and lib.ranked_by("keyword")[1] == "BM25"
    assert models.shipped_label("test/student") == "student (default encoder)"
    assert models.shipped_label("someone/else") == "someone/else"
