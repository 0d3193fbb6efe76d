"""The hybrid fusion, the default-mode rule, and the measurement they were chosen by
(`python -m bench.search modes`): the fusion the library runs is the one measured, and the shipped settings are
what the recorded run chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_dse import Library, modes

REPO = Path(__file__).resolve().parents[1]


def test_fuse_scales_each_list_and_mixes_by_the_weight():
    vector = [(1, 0.9), (2, 0.8), (3, 0.5)]
    keyword = [(3, 12.0), (4, 6.0), (1, 2.0)]
    fused = dict(modes.fuse(vector, keyword, vector_weight=0.6))
    # min-max within each list: vector 1 -> 1.0, 2 -> 0.75, 3 -> 0; keyword 3 -> 1, 4 -> 0.4, 1 -> 0
    assert fused == pytest.approx({1: 0.6, 2: 0.45, 3: 0.4, 4: 0.16})
    assert [c for c, _ in modes.fuse(vector, keyword, vector_weight=1.0)][:3] == [1, 2, 3]
    assert [c for c, _ in modes.fuse(vector, keyword, vector_weight=0.0)][:3] == [3, 4, 1]


def test_fuse_keeps_the_vector_order_without_keyword_hits_and_reads_only_depth():
    vector = [(7, 0.3), (8, 0.3), (9, 0.1)]
    assert [c for c, _ in modes.fuse(vector, [])] == [7, 8, 9]  # ties keep the vector order
    assert [c for c, _ in modes.fuse([], [(5, 1.0)])] == [5]
    assert modes.fuse([], []) == []
    assert [c for c, _ in modes.fuse(vector, [(9, 4.0), (1, 2.0)], depth=1)] == [7, 9]


def test_choose_default_takes_the_best_mean_that_loses_no_split_by_more_than_the_margin():
    table = {"vector": {"a": 0.90, "b": 0.30}, "keyword": {"a": 0.95, "b": 0.10}, "hybrid": {"a": 0.94, "b": 0.295}}
    assert modes.choose_default(table) == "hybrid"
    table["hybrid"]["b"] = 0.28  # now loses b by 0.02: vector loses a by 0.05, keyword b by 0.2
    assert modes.choose_default(table) == "hybrid"  # none qualifies: the smallest worst loss
    table["vector"]["a"] = 0.945
    assert modes.choose_default(table) == "vector"


def test_the_shipped_settings_are_what_the_recorded_measurement_chose():
    run = json.loads((REPO / "bench" / "results" / "modes.json").read_text())
    assert run["default"] == modes.DEFAULT_MODE and run["vector_weight"] == modes.VECTOR_WEIGHT
    assert run["max_split_loss"] == modes.MAX_SPLIT_LOSS
    assert modes.choose_default(run["table"]).split()[0] == modes.DEFAULT_MODE
    assert set(run["splits"]) == {"debian", "wordnet", "pydoc", "pydoc_faq"}
    assert run["hybrid_mismatches"] == 0


def topics_split(data: Path, n: int = 40) -> None:
    """A held-out split from the Python docs topics that ship inside Python (title -> text)."""
    from pydoc_data.topics import topics

    rows = []
    for key, text in sorted(topics.items()):
        title, _, body = text.strip().partition("\n")
        body = body.lstrip("*").strip()
        if 10 <= len(title) <= 120 and len(body) >= 250:
            rows.append({"query": title, "passage": body[:800], "doc_id": key, "source": "pydoc"})
    data.mkdir(parents=True, exist_ok=True)
    (data / "pydoc.test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:n]), encoding="utf-8")


def test_bench_measures_the_real_hybrid_search(tmp_path, capsys):
    from bench import search as bench_search

    topics_split(tmp_path / "data")
    out = tmp_path / "modes.json"
    assert bench_search.main(["modes", "--data", str(tmp_path / "data"), "--queries", "12", "--corpus", "30",
                              "--dev-queries", "8", "--rerank", "--json", str(out)]) == 0
    run = json.loads(out.read_text())
    split = run["splits"]["pydoc"]
    assert (split["reported_queries"], split["dev_queries"]) == (12, 8)
    assert run["hybrid_mismatches"] == 0  # Library.search("hybrid") is modes.fuse of its two lists
    assert run["vector_weight"] in bench_search.HYBRID_WEIGHTS and run["default"] in modes.MODES
    assert all(0.0 <= v <= 1.0 for v in split["reported"].values())
    assert split["reported"]["vector"] > 0.5  # titles find their own topic text
    reranked = {m.split(" + teacher@")[0] for m in split["reported"] if " + teacher@" in m}  # the shipped teacher
    assert reranked == {"vector", modes.DEFAULT_MODE}
    printed = capsys.readouterr().out
    assert "Reported queries" in printed and "default by the rule" in printed


def test_the_bench_names_the_fix_without_data(tmp_path):
    from bench import search as bench_search

    with pytest.raises(SystemExit, match="edge-dse distill"):
        bench_search.main(["modes", "--data", str(tmp_path)])


def test_library_hybrid_is_the_fusion_of_its_vector_and_keyword_lists(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    texts = {"bread.txt": "Sourdough bread needs a starter, flour, water and salt; the dough rises overnight.",
             "bike.txt": "To fix a bicycle puncture, take the tyre off the rim and patch the inner tube.",
             "tax.txt": "Income tax returns are due in April; keep receipts for deductible expenses.",
             "notes.txt": "Call the plumber about the leaking tap; buy lentils and rice for the soup."}
    for name, text in texts.items():
        (docs / name).write_text(text, encoding="utf-8")
    with Library(tmp_path / "lib", progress=False) as lib:
        lib.add(docs)
        for query in ("lentils plumber", "how do I repair a flat tyre", "flour", "deadline for paying taxes"):
            depth = modes.FUSION_DEPTH
            vec = [(h.chunk_id, h.score) for h in lib.search(query, k=depth, mode="vector")]
            kw = [(h.chunk_id, h.score) for h in lib.search(query, k=depth, mode="keyword")]
            hits = lib.search(query, k=3, mode="hybrid")
            fused = modes.fuse(vec, kw)[:3]  # (the hits' scores are rounded to 6 places)
            assert [h.chunk_id for h in hits] == [c for c, _ in fused]
            assert [h.score for h in hits] == pytest.approx([s for _, s in fused], abs=1e-5)
        assert Path(lib.search("lentils plumber", k=1, mode="hybrid")[0].path).name == "notes.txt"
