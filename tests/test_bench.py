"""`python -m bench all --tiny`: the whole comparison harness on tiny inputs, so it cannot rot.

Real text, small: the Python docs' topics that ship inside every Python (pydoc_data), written out
as .rst sources standing in for the full run's Python docs, and as a held-out split (title ->
text). The teacher is a stand-in cross-encoder (a random embedding bag built with onnx) so the
DSE section's code path runs without a distilled teacher.
Rows whose package is not installed here (sentence-transformers, Chroma: the bench extra) must
say "not available" with the install command. Behaviour only, never timings.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")  # the train extra has it; only the stand-in teacher needs it

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "assets" / "baseline"


def python_docs(folder: Path, limit: int = 60) -> list[tuple[str, str]]:
    """(title, text) of the Python docs' topics that every Python carries (pydoc_data, the text
    of `help("assert")`), written as .rst.txt sources like the full run's Python docs."""
    from pydoc_data.topics import topics

    pairs = []
    folder.mkdir(parents=True, exist_ok=True)
    for key, text in sorted(topics.items())[:limit]:
        title, _, body = text.strip().partition("\n")
        body = body.lstrip("*").strip()  # the title's underline
        if not 10 <= len(title) <= 120 or len(body) < 250:
            continue
        pairs.append((title, body[:1000]))
        (folder / f"{key}.rst.txt").write_text(f"{title}\n{'=' * len(title)}\n\n{body}\n", encoding="utf-8")
    return pairs


def tiny_cross_encoder(folder: Path) -> Path:
    """A valid cross-encoder asset: (query, passage) token ids -> one logit (random weights)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.normal(size=(30522, 8)).astype(np.float32), "emb"),
            numpy_helper.from_array(rng.normal(size=(8, 1)).astype(np.float32), "w"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "ax2"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1")]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["h"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "ax2"], ["m3"]),
             helper.make_node("Mul", ["h", "m3"], ["hm"]),
             helper.make_node("ReduceSum", ["hm", "ax1"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny-cross-encoder",
                              [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"]) for n in ("input_ids", "attention_mask")],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 1])], init)
    folder.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(folder / "model.onnx"))
    (folder / "tokenizer.json").write_bytes((BASELINE / "tokenizer.json").read_bytes())
    (folder / "card.json").write_text(json.dumps({"id": "test/tiny-cross-encoder", "dim": 1, "kind": "cross-encoder",
                                                  "max_length": 256, "output": "logits"}))
    return folder


def tables(text: str) -> dict[str, list[list[str]]]:
    """{section: rows of its first table (header first)}, every row split into cells."""
    out = {}
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        name, _, body = part.partition("\n")
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines() if line.startswith("|")]
        out[name.strip()] = [rows[0]] + rows[2:]
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    pairs = python_docs(tmp / "docs")
    assert len(pairs) >= 20
    (tmp / "data").mkdir()
    (tmp / "data" / "debian.test.jsonl").write_text("".join(
        json.dumps({"query": q, "passage": p, "doc_id": str(i), "source": "debian"}) + "\n" for i, (q, p) in enumerate(pairs)))
    teacher = tiny_cross_encoder(tmp / "teacher")
    env = {**os.environ, "EDGE_DSE_BENCH_DOCS": str(tmp / "docs"), "EDGE_DSE_BENCH_WORK": str(tmp / "work")}
    out = tmp / "report.md"
    cmd = [sys.executable, "-m", "bench", "all", "--tiny", "--teacher", str(teacher), "--student", str(BASELINE),
           "--student-fp32", str(tmp / "no-such-student"), "--mpnet", str(tmp / "no-such-mpnet"),
           "--mpnet-int8", str(tmp / "no-such-mpnet-int8"), "--data", str(tmp / "data"), "--out", str(out)]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return out.read_text(encoding="utf-8"), tables(out.read_text(encoding="utf-8"))


def number(cell: str) -> float:
    value = float(cell.rstrip("x"))
    assert math.isfinite(value), cell
    return value


def test_every_section_prints_one_well_formed_table(report):
    text, t = report
    assert list(t) == ["encode", "dse", "search", "sync", "targets"]
    for name, rows in t.items():
        assert len(rows) >= 2, name
        assert all(len(r) == len(rows[0]) for r in rows), name
    assert "command: `python -m bench all --tiny" in text and "machine:" in text


def test_encode_rows_measured_or_say_why(report):
    from bench.encode import ROWS

    rows = {r[0]: r for r in report[1]["encode"][1:]}
    assert list(rows) == [label for label, *_ in ROWS]
    ours = rows["all-MiniLM-L6-v2 int8 ONNX (our export, assets/baseline)"]
    header = report[1]["encode"][0]
    assert all(number(c) > 0 for c in ours[1:5])
    assert 0 <= number(ours[header.index("nDCG@10 debian.test")]) <= 1
    assert rows["all-mpnet-base-v2 int8 ONNX (our export)"][1].startswith("not available: no model at")
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        torch_row = rows["all-MiniLM-L6-v2 (sentence-transformers, torch fp32)"]
        assert torch_row[1] == "not available: sentence-transformers is not installed: pip install -e '.[bench]' (its own venv: bench/README.md)"
        assert ours[header.index("docs/s vs torch MiniLM")] == "n/a"  # no baseline row: no made-up ratio


def test_dse_search_and_sync_have_finite_figures(report):
    t = report[1]
    assert [r[0] for r in t["dse"][1:]] == ["50", "100"]
    assert all(number(r[-1]) > 0 for r in t["dse"][1:])
    search = {r[0]: r for r in t["search"][1:]}
    assert list(search) == ["edge_dse", "exact numpy", "chroma"]
    recall = t["search"][0].index("recall@10 vs exact")
    for engine in ("edge_dse", "exact numpy"):
        assert 0 <= number(search[engine][recall]) <= 1
        assert number(search[engine][3]) > 0  # p50 ms end-to-end
    assert number(search["exact numpy"][recall]) == 1.0
    try:
        import chromadb  # noqa: F401
    except ImportError:
        assert search["chroma"][1].startswith("not available: chromadb is not installed: pip install -e '.[bench]'")
        assert t["sync"][2][1].startswith("not available: chromadb")
    sync = t["sync"][1]
    assert sync[0] == "edge_dse" and number(sync[1]) > 0 and number(sync[2]) > 0
    assert len(t["targets"]) == 5


def test_a_missing_teacher_is_a_row_not_a_crash(tmp_path):
    from bench.dse import section

    text, facts = section([10], 5, 1, teacher=str(tmp_path / "none"), student=str(BASELINE))
    assert "not available: no teacher model at" in text and facts == {}


def test_real_passages_go_past_the_docs_and_their_vectors_cache_is_extended(tmp_path, monkeypatch):
    """The search section's real text: the docs first (a stable prefix), then distinct passages
    of the held-out/training splits; a larger request embeds only the passages not cached yet."""
    import bench.common as common
    import bench.search as search
    from edge_dse import Encoder

    python_docs(tmp_path / "docs")
    monkeypatch.setattr(common, "PYDOC_SOURCES", tmp_path / "docs")
    monkeypatch.setattr(search, "WORK", tmp_path / "work")
    data = tmp_path / "data"
    data.mkdir()
    extra = [f"Package {i} does one small thing well, and this description says which thing it is." for i in range(30)]
    (data / "debian.train.jsonl").write_text("".join(json.dumps({"query": "q", "passage": p}) + "\n" for p in extra + extra[:5]))
    docs_only, counts = common.real_passages(10_000)
    assert docs_only and counts == {"Python docs": len(docs_only)}
    texts, counts = common.real_passages(len(docs_only) + 20, data)
    assert texts[: len(docs_only)] == docs_only and len(set(texts)) == len(texts) == len(docs_only) + 20
    assert counts == {"Python docs": len(docs_only), f"{data} splits": 20}

    class Counting(Encoder):  # the real encoder, counting what it is asked to embed
        embedded = 0

        def encode(self, texts, **kw):
            Counting.embedded += len(texts)
            return super().encode(texts, **kw)

    enc = Counting(BASELINE, threads=1)
    _, first, _ = search.real_vectors(enc, len(docs_only))
    _, more, _ = search.real_vectors(enc, len(docs_only) + 20, data)
    assert Counting.embedded == len(docs_only) + 20 and more.shape == (len(docs_only) + 20, enc.dim)
    np.testing.assert_array_equal(more[: len(docs_only)], first)
    _, again, _ = search.real_vectors(enc, len(docs_only) + 20, data)
    assert Counting.embedded == len(docs_only) + 20 and np.array_equal(again, more)


def test_cuts_prints_a_smaller_cut_beside_the_baseline(tmp_path):
    """`python -m bench.encode cuts`: a cut is made (layers dropped, FFN pruned), exported to int8
    and timed beside the baseline; the table names both, with sizes and a ratio of 1 for the
    baseline. A second run reuses the cut kept in --work."""
    pytest.importorskip("torch")
    python_docs(tmp_path / "docs")
    env = {**os.environ, "EDGE_DSE_BENCH_DOCS": str(tmp_path / "docs")}
    cmd = [sys.executable, "-m", "bench.encode", "cuts", "--cut", "0,5:384", "--docs", "12", "--repeats", "1",
           "--threads", "1", "--work", str(tmp_path / "cuts")]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    (name, rows), = tables(run.stdout).items()
    assert name.startswith("Student cuts: int8 docs/s at 256 tokens, 1 threads, 12 Python-docs passages")
    assert [r[0] for r in rows[1:]] == ["baseline (6 layers, 1536 FFN units)", "layers 0,5, 384 FFN units"]
    base, cut = rows[1], rows[2]
    assert number(base[3]) == 1.0 and number(base[2]) > 0 and number(cut[2]) > 0
    assert number(cut[1]) < number(base[1])  # 2 of 6 layers, a quarter of the FFN: a smaller file
    made = (tmp_path / "cuts" / "0-5-ffn384" / "asset" / "model.onnx").stat().st_mtime_ns
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and (tmp_path / "cuts" / "0-5-ffn384" / "asset" / "model.onnx").stat().st_mtime_ns == made
