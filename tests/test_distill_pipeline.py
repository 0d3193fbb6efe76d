"""`edge-dse distill --tiny`: the whole pipeline on tiny random models, the real code path.

The text is real: a Debian-style description index written from the standard library's own
module docstrings (a synopsis line, then the description), so that BM25, the bi-encoder labels,
the teacher, the student and both ONNX exports all see human-written text.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")

from conftest import stdlib_docstrings  # noqa: E402
from edge_dse import Encoder, Reranker  # noqa: E402
from edge_dse.distill import evaluate, pipeline  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow]


def stdlib_descriptions(folder: Path, limit: int = 160) -> Path:
    """A Translation-en index: one record per standard-library module with a long docstring
    (read with ast, never imported: importing every module has side effects)."""
    records = []
    for stem, synopsis, body in stdlib_docstrings(limit):
        body = "\n".join(line.strip() for line in body.splitlines())
        lines = [f" {line}" if line else " ." for line in body.splitlines()]
        records.append(f"Package: {stem}\nDescription-md5: {len(records):04x}\nDescription-en: {synopsis}\n" + "\n".join(lines))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "deb.example_debian_dists_bookworm_main_i18n_Translation-en").write_text("\n\n".join(records) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    apt = stdlib_descriptions(root / "apt")
    plan = pipeline.Plan.tiny_plan(root / "work", roots={"debian": apt}, sources=("debian",))
    logs: list[str] = []
    out = pipeline.run(plan, install=True, assets=root / "assets", log=logs.append)
    return plan, out, logs, root


def test_every_step_ran_and_wrote_its_output(tiny_run):
    plan, out, logs, root = tiny_run
    work = plan.work
    assert (work / "data" / "debian.train.jsonl").is_file() and (work / "data" / "debian.test.jsonl").is_file()
    assert (work / "candidates" / "debian.train.candidates.jsonl").is_file()
    with np.load(work / "teacher-lists" / "hpd.labels.npz") as z:
        assert z["scores__baseline"].shape[0] == len(z["rows"]) > 0  # the tiny plan labels with the baseline
    with np.load(work / "scores" / "debian.train.teacher.npz") as z:
        assert int(z["done"]) == len(z["rows"]) > 0 and np.isfinite(z["scores"][:, 0]).all()
    for name in ("teacher", "student"):
        assert (root / "assets" / name / "model.onnx").is_file() and (root / "assets" / name / "card.json").is_file()
    assert any("teacher: step" in line for line in logs) and any("student: step" in line for line in logs)


def test_the_teacher_grew_along_its_curve_then_ran_two_rounds(tiny_run):
    plan, out, logs, root = tiny_run
    card = json.loads((root / "assets" / "teacher" / "card.json").read_text())
    runs = [p["run"] for p in card["curve"]]
    assert runs == [f"lists-{n}" for n in plan.teacher_sizes] + ["round-2"]
    for point in card["curve"]:  # every point measured as a reranker on dev queries of every held-out split
        assert set(plan.test_splits) <= set(point) and "mean_gain" in point
    assert [r["round"] for r in card["rounds"]] == [1, 2] and card["chosen"] in runs
    round2 = json.loads((plan.work / "teacher" / "round-2" / "train.json").read_text())["config"]
    assert round2["init"] == str(plan.work / "teacher" / card["rounds"][0]["run"] / "model")
    with np.load(Path(round2["extra_scores"]) / "hpd.teacher.npz") as z:  # round 1's own scores joined its labels
        assert int(z["done"]) == len(z["rows"]) == card["rounds"][0]["lists"] and np.isfinite(z["scores"][:, 0]).all()
    assert card["max_length"] == 64 and card["made_by"].startswith("edge-dse distill --tiny")
    # every point tried the blends with the encoder's order; the chosen point's weight is the card's
    from edge_dse.distill.teacher import ENCODER_WEIGHTS

    for point in card["curve"]:
        assert set(point["by_weight"]) == {str(w) for w in ENCODER_WEIGHTS} and point["encoder_weight"] in ENCODER_WEIGHTS
    chosen = next(p for p in card["curve"] if p["run"] == card["chosen"])
    assert card["rerank"]["encoder_weight"] == chosen["encoder_weight"] == Reranker(root / "assets" / "teacher").encoder_weight
    # and the exported teacher's own weight for the hybrid's hits, chosen on the hybrid's dev hits
    hybrid = card["rerank"]["by_mode"]["hybrid"]
    w = card["rerank"]["encoder_weight_by_mode"]["hybrid"]
    assert w == hybrid["encoder_weight"] in ENCODER_WEIGHTS and set(hybrid["by_weight"]) == {str(x) for x in ENCODER_WEIGHTS}
    assert set(plan.test_splits) <= set(hybrid) and hybrid["lists"] > 0 and hybrid["teacher"] == card["id"]
    assert Reranker(root / "assets" / "teacher").model.encoder_weight_for("hybrid") == w
    assert f"- hybrid: **{w}**" in (root / "assets" / "teacher" / "card.md").read_text()


def test_until_teacher_makes_and_installs_the_teacher_alone(tiny_run, tmp_path):
    plan, _, _, root = tiny_run
    from dataclasses import replace

    logs: list[str] = []
    out = pipeline.run(replace(plan, until="teacher"), install=True, assets=tmp_path, log=logs.append)
    assert set(out) == {"teacher"} and sorted(p.name for p in tmp_path.iterdir()) == ["teacher"]
    assert not any(line.startswith(("distill: candidates", "distill: student")) for line in logs), logs
    assert "--until teacher" in replace(plan, until="teacher").command()


def test_a_teacher_made_before_the_weights_per_mode_gets_them_and_is_not_retrained(tiny_run, tmp_path):
    """A teacher card from before the weights per search mode (the shipped teacher's): `edge-dse
    distill` skips the teacher's training and export but adds them, card.md re-rendered."""
    plan, _, _, root = tiny_run
    from dataclasses import replace

    from edge_dse.distill.cards import write_cards
    from edge_dse.distill.teacher import render_teacher_card_md
    from edge_dse.models import read_card

    asset = plan.work / "teacher" / "asset"
    made = read_card(asset)
    older = {**made, "rerank": {k: v for k, v in made["rerank"].items() if k not in ("encoder_weight_by_mode", "by_mode")}}
    write_cards(asset, older, render_teacher_card_md)
    assert "- hybrid: **" not in (asset / "card.md").read_text()
    model = (asset / "model.onnx").stat().st_mtime_ns
    logs: list[str] = []
    pipeline.run(replace(plan, until="teacher"), install=True, assets=tmp_path, log=logs.append)
    assert "distill: teacher: done, skipped" in logs and "distill: teacher blend by search mode: running" in logs
    assert not any("teacher: step" in line for line in logs)  # no training
    assert (asset / "model.onnx").stat().st_mtime_ns == model
    for card_dir in (asset, tmp_path / "teacher"):  # recorded in the work folder's card, and installed
        card = read_card(card_dir)
        assert card["rerank"]["encoder_weight_by_mode"] == made["rerank"]["encoder_weight_by_mode"]  # the same dev lists
        assert {k: v for k, v in card.items() if k != "rerank"} == {k: v for k, v in older.items() if k != "rerank"}
        assert (card_dir / "card.md").read_text() == render_teacher_card_md(card)
        assert "- hybrid: **" in (card_dir / "card.md").read_text()
    logs.clear()
    pipeline.run(replace(plan, until="teacher"), log=logs.append)
    assert "distill: teacher blend by search mode: done, skipped" in logs


def test_stage_one_ran_and_stage_two_started_from_it(tiny_run):
    plan, out, logs, root = tiny_run
    hpd_dir = plan.work / "hpd"
    manifest = json.loads((hpd_dir / "texts" / "manifest.json").read_text())
    assert manifest["pairs"] > 0 and {"debian/title", "debian/question"} <= set(manifest["by_source_shape"])
    assert any(line.startswith("hpd: step") for line in logs)
    stage1 = json.loads((hpd_dir / "student" / "train.json").read_text())
    assert stage1["pairs"] == min(plan.hpd_pairs, manifest["pairs"]) and len(stage1["curve"]) == 2  # start and end
    # Stage 1a first learned the base model's own space (plan.hpd_warm_pairs), and stage 1 began there.
    warm = json.loads((hpd_dir / "warm" / "train.json").read_text())
    assert warm["pairs"] == min(plan.hpd_warm_pairs, manifest["pairs"]) > 0 and warm["config"]["init"] is None
    assert warm["stage"].endswith(f"the {plan.hpd_warm_labeller} model's embedding space")
    assert stage1["config"]["init"] == str(hpd_dir / "warm" / "model")
    assert any(line.startswith(f"distill: stage 1 vectors ({plan.hpd_warm_labeller})") for line in logs)
    assert (hpd_dir / "student" / "asset" / "model.onnx").is_file()
    stage2 = json.loads((plan.work / "student" / "train.json").read_text())
    assert stage2["config"]["init"] == str(hpd_dir / "student" / "model") and stage2["config"]["hpd_weight"] > 0
    card = json.loads((root / "assets" / "student" / "card.json").read_text())
    assert card["max_length"] == 64 and "stage 2" in card["role"]
    # Its source names the base model it was cut from (and that model's licence), not a work folder.
    assert card["source"]["model"].startswith("layers ") and " of tiny-bert," in card["source"]["model"]
    # The student's card holds the records of the stages it grew from, and renders them.
    earlier = card["training"]["earlier_stages"]
    assert [e["name"].split(":")[0] for e in earlier] == ["stage 1a", "stage 1"]
    assert earlier[0]["pairs"] == warm["pairs"] and earlier[1]["curve"] == stage1["curve"]
    assert "### Before this: stage 1a" in (root / "assets" / "student" / "card.md").read_text()
    # The shape trials ran first (plan.hpd_trial_pairs each), and stage 1's record on both cards carries them.
    from edge_dse.distill.hpd import SHAPE_TRIALS

    trials = json.loads((hpd_dir / "trials.json").read_text())
    assert [t["trial"] for t in trials] == [name for name, _ in SHAPE_TRIALS]
    assert all(t["pairs"] == plan.hpd_trial_pairs and t["steps"] > 0 and "mean" in t["end"] for t in trials)
    assert earlier[1]["trials"] == trials and "trials" not in earlier[0]
    assert json.loads((hpd_dir / "student" / "asset" / "card.json").read_text())["training"]["trials"] == trials
    assert "| layers 0,2,5, 768 FFN units | 32 |" in (root / "assets" / "student" / "card.md").read_text()


def test_no_held_out_text_is_trained_on(tiny_run):
    """Stage 1's texts come from the training side only: no held-out passage or query is among them."""
    plan, *_ = tiny_run
    texts = set(map(json.loads, (plan.work / "hpd" / "texts" / "texts.jsonl").read_text().splitlines()))
    held_out = [json.loads(line) for line in (plan.work / "data" / "debian.test.jsonl").read_text().splitlines()]
    assert held_out and not any(p["passage"][:1500].rsplit(None, 1)[0] in texts or p["passage"] in texts for p in held_out)


@pytest.mark.parametrize("stage", ["stage 1", "stage 2"])
def test_exported_student_matches_the_pytorch_student(tiny_run, stage):
    plan, out, _, root = tiny_run
    asset = plan.work / "hpd" / "student" / "asset" if stage == "stage 1" else root / "assets" / "student"
    model_dir = plan.work / "hpd" / "student" / "model" if stage == "stage 1" else out["student_model"]
    card = json.loads((asset / "card.json").read_text())
    assert card["dim"] == 16 and card["output"] == "token_embeddings"  # the projection is in the graph
    assert card["export"]["fp32_onnx_vs_torch"]["min"] >= 0.9999
    # The int8 asset, through the run-time Encoder, against the PyTorch student (Dense included).
    from edge_dse.distill.onnx_export import torch_embed
    from edge_dse.distill.sources import read_source_info

    texts = [p["passage"] for p in map(json.loads, (plan.work / "data" / "debian.test.jsonl").read_text().splitlines())][:30]
    info = read_source_info(model_dir)
    ref = torch_embed(Path(info["transformer_dir"]), texts, max_length=card["max_length"], pooling="mean",
                      normalize=True, dense_dir=info["dense_dir"])
    got = Encoder(asset).encode(texts)
    assert got.shape == ref.shape == (len(texts), 16)
    assert float((got * ref).sum(1).mean()) >= 0.99


def test_teacher_asset_reranks_like_the_pytorch_teacher(tiny_run):
    plan, out, _, root = tiny_run
    from edge_dse.distill.teacher import torch_scores

    rr = Reranker(root / "assets" / "teacher")
    assert rr.kind == "cross-encoder"
    query = "read and write files"
    passages = [p["passage"] for p in map(json.loads, (plan.work / "data" / "debian.train.jsonl").read_text().splitlines())][:12]
    got = rr.score(query, passages)
    ref = torch_scores(plan.work / "teacher" / rr.card["chosen"] / "model", [(query, p) for p in passages], rr.max_length)
    assert np.abs(got - ref).max() < 0.05 * max(1.0, float(np.abs(ref).max()))


def test_a_second_run_skips_every_step(tiny_run):
    plan, _, _, root = tiny_run
    logs: list[str] = []
    before = (root / "assets" / "student" / "model.onnx").stat().st_mtime_ns
    pipeline.run(plan, log=logs.append)
    assert not any("running" in line for line in logs), logs
    assert any("skipped" in line for line in logs)
    assert (root / "assets" / "student" / "model.onnx").stat().st_mtime_ns == before


def test_eval_prints_every_row_on_the_held_out_split(tiny_run, capsys):
    plan, out, _, root = tiny_run
    evaluate.main(["--data", str(plan.work / "data"), "--splits", "debian.test", "--queries", "10", "--corpus", "50",
                   "--student", str(out["student"]), "--teacher", str(out["teacher"]),
                   "--student-fp32", str(out["student_model"]), "--mpnet", str(root / "none")])
    text = capsys.readouterr().out
    for row in ("BM25", "student int8", "student fp32 (torch)", "all-MiniLM-L6-v2 (torch)", "teacher rerank@50"):
        assert row in text, text
    assert "no all-mpnet-base-v2 folder" in text


def test_eval_records_its_table_and_the_promotion_verdict_in_the_card(tiny_run, tmp_path):
    plan, out, _, root = tiny_run
    asset = tmp_path / "student"
    shutil.copytree(out["student"], asset)
    evaluate.main(["--data", str(plan.work / "data"), "--splits", "debian.test", "--queries", "10", "--corpus", "50",
                   "--student", str(asset), "--teacher", str(root / "none"), "--no-torch",
                   "--card", str(asset), "--promote", str(asset)])
    card = json.loads((asset / "card.json").read_text())
    assert "student int8" in card["evaluation"]["table"] and isinstance(card["promotion"]["default"], bool)
    # card.md is rendered after the verdict is written, so it shows it beside the table.
    assert "Default encoder? **" in (asset / "card.md").read_text()
