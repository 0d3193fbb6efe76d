"""Stage 1's pieces on real text: the text set's shapes and sources, GCIDE and Debian FAQ
parsing, the uncentred projection, and the length-bucketed batches."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from edge_dse.distill import hpd_texts, hpd_vectors
from edge_dse.distill.data import Pair, write_jsonl

pytest.importorskip("torch")
from edge_dse.distill import hpd  # noqa: E402


def _dictd(folder, entries):
    """A dictd dictionary (index of base64 offsets into a gzipped body), as dict-gcide ships it."""
    def b64(n):
        digits = ""
        while True:
            digits = hpd_texts._GCIDE_B64[n % 64] + digits
            n //= 64
            if not n:
                return digits
    body, index = b"", []
    for key, text in entries:
        raw = text.encode()
        index.append(f"{key}\t{b64(len(body))}\t{b64(len(raw))}")
        body += raw
    (folder / "gcide.index").write_text("\n".join(index) + "\n")
    (folder / "gcide.dict.dz").write_bytes(gzip.compress(body))


def test_gcide_first_definitions_without_etymology(tmp_path):
    _dictd(tmp_path, [
        ("Apple", 'Apple \\Ap"ple\\ ([a^]p"p\'l), n. [OE. appel, AS. [ae]ppel; of\n   unknown origin.]\n'
                  "   1. The fleshy pome or fruit of a rosaceous tree ({Pyrus\n      malus}).\n      [1913 Webster]\n\n"
                  "   2. (bot.) Any tree genus {Pyrus}.\n"),
        ("Pyrus malus", 'Apple \\Ap"ple\\ ...'),  # the same entry under another key would be read once
        ("Exculpable", 'Exculpable \\Ex*cul"pa*ble\\\n   Capable of being exculpated; deserving exculpation. --Sir G.\n   Buck.\n   [1913 Webster]\n'),
    ])
    entries = dict(hpd_texts.gcide_entries(tmp_path))
    assert entries["Apple"] == "The fleshy pome or fruit of a rosaceous tree (Pyrus malus)."
    assert entries["Exculpable"] == "Capable of being exculpated; deserving exculpation."


def test_debian_faq_questions_with_wrapped_headings(tmp_path):
    text = ("1. Definitions\n\n1.1. What is Debian GNU/Linux and who makes\n    it?\n\n"
            "    Debian GNU/Linux is a particular distribution of the Linux operating system, made by volunteers "
            "who care about free software.\n\n1.2. Where is the list?\n\n    Short.\n")
    path = tmp_path / "faq.txt.gz"
    path.write_bytes(gzip.compress(text.encode()))
    pairs = list(hpd_texts.debian_faq_pairs(path))
    assert [(p.a, p.shape) for p in pairs] == [("What is Debian GNU/Linux and who makes it?", "faq")]
    assert pairs[0].b.startswith("Debian GNU/Linux is a particular distribution")


def test_text_set_has_every_shape_and_any_prefix_is_balanced(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pairs = [Pair(f"Tool number {i} for parsing logs", f"This package parses server log files, number {i}, quickly.",
                  f"debian:tool{i}", "debian") for i in range(300)]
    write_jsonl(pairs, data / "debian.train.jsonl")
    manifest = hpd_texts.build(data, tmp_path / "texts", sources=("debian",), gcide_root=None, faq=None)
    texts, rows = hpd_texts.read(tmp_path / "texts")
    shapes = {f"{r[2]}/{r[3]}" for r in rows[:100]}
    assert {"debian/title", "debian/question", "debian/keyword"} <= shapes
    assert manifest["texts"] == len(texts) == len(set(texts))  # each text once
    order = hpd_texts.texts_in_order(rows, 10)
    assert len(order) == len(set(order)) and set(order) == {i for r in rows[:10] for i in r[:2]}


def test_mixed_order_gives_every_prefix_the_sources_shares():
    import random

    pairs = ([hpd_texts.TextPair(f"q{i}", f"p{i}", "wordnet", "title") for i in range(3000)]
             + [hpd_texts.TextPair(f"q{i}", f"p{i}", "pydoc", "title") for i in range(300)])
    mixed = hpd_texts.mixed_order(pairs, {"wordnet": 0.5, "pydoc": 0.5}, random.Random(0))
    assert sorted(mixed, key=repr) == sorted(pairs, key=repr)  # a reordering: nothing lost or doubled
    share = sum(p.source == "pydoc" for p in mixed[:400]) / 400
    assert 0.4 < share < 0.6  # a uniform shuffle would give ~0.09
    assert all(p.source == "wordnet" for p in mixed[-1000:])  # pydoc ran out; wordnet fills the rest
    with pytest.raises(ValueError, match="pydoc"):
        hpd_texts.mixed_order(pairs, {"wordnet": 1.0}, random.Random(0))


def test_pydoc_windows_cut_at_paragraphs_and_stay_under_the_size():
    body = "\n\n".join(f"Paragraph {i} " + "word " * (30 + 20 * (i % 3)) for i in range(12)) + "\n\n" + "long " * 400
    windows = hpd_texts._windows(body, 600)
    assert all(200 <= len(w) <= 600 for w in windows)
    assert windows[0].startswith("Paragraph 0") and "\n\nParagraph 1" in windows[0]  # whole paragraphs together
    assert sum(w.count("Paragraph") for w in windows) == 12 and windows[-1].startswith("long")


def test_projection_keeps_dot_products_of_unit_vectors(tmp_path):
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(64, 64)))[0][:, :8]  # vectors living in an 8-d subspace
    x = rng.normal(size=(500, 8)) @ basis.T + 3 * basis[:, 0]  # plus a shared direction (uncentred)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    proj = hpd_vectors.projection(x, 8)
    y = hpd_vectors.project(x, proj)
    assert np.allclose(y @ y.T, x @ x.T, atol=1e-4)


def test_shards_resume_and_load_in_first_use_order(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl([Pair(f"query {i}", f"passage {i} text", f"debian:p{i}", "debian") for i in range(50)], data / "debian.train.jsonl")
    hpd_texts.build(data, tmp_path / "texts", sources=("debian",), gcide_root=None, faq=None)
    texts, rows = hpd_texts.read(tmp_path / "texts")
    calls = []

    def embed(batch):
        calls.append(len(batch))
        return np.array([[len(t), 1.0] for t in batch], dtype=np.float32)

    n = hpd_vectors.label(tmp_path / "texts", tmp_path / "vec", embed, n_pairs=20, shard=hpd_vectors.SHARD)
    again = hpd_vectors.label(tmp_path / "texts", tmp_path / "vec", embed, n_pairs=20)
    assert n == again == len(hpd_texts.texts_in_order(rows, 20)) and len(calls) == 1  # the second run labelled nothing
    vecs = hpd_vectors.load(tmp_path / "vec", n).astype(np.float32)
    first = texts[hpd_texts.texts_in_order(rows, 20)[0]]
    expect = np.array([len(first), 1.0]) / np.linalg.norm([len(first), 1.0])
    assert np.allclose(vecs[0], expect, atol=1e-3)


def test_bucketed_batches_cover_every_pair_once_with_similar_lengths():
    rng = np.random.default_rng(1)
    lengths = [int(v) for v in rng.integers(5, 2000, size=1001)]
    batches = hpd.bucketed_batches(lengths, 32, seed=0, epoch=0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1001)) and len(batches) == -(-1001 // 32)
    assert all(len(b) == 32 for b in batches[:-1])
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches[:-1]])
    assert spread < 0.2 * (max(lengths) - min(lengths))  # bucketed: little padding
    assert batches != hpd.bucketed_batches(lengths, 32, seed=0, epoch=1)  # each epoch its own order
    assert batches == hpd.bucketed_batches(lengths, 32, seed=0, epoch=0)  # and the same on resume


def test_pruned_ffn_keeps_the_busiest_units_and_reloads(tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from edge_dse.distill import student as student_mod
    from edge_dse.distill import train_common as tc

    base = tc.make_tiny_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(str(base))
    texts = ["the package parses log files", "a dictionary of English words and their meanings"] * 4
    model = student_mod.layer_dropped(base, (0, 1))
    width = model.config.intermediate_size
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**enc).last_hidden_state
        silent = model.encoder.layer[0].output.dense.weight
        silent[:, :width // 2] = 0  # half the units of layer 0 write nothing: they must be the ones dropped
    kept = student_mod.prune_ffn(model, tok, width // 2, texts)
    assert kept[0] == list(range(width // 2, width))
    assert model.config.intermediate_size == width // 2 == model.encoder.layer[1].intermediate.dense.out_features
    model.save_pretrained(str(tmp_path / "pruned"))
    again = AutoModel.from_pretrained(str(tmp_path / "pruned"))
    with torch.no_grad():
        out = again(**enc).last_hidden_state
    assert out.shape == before.shape and torch.allclose(out, model(**enc).last_hidden_state, atol=1e-5)
    cut = student_mod.cut_base(base, tc.StudentSettings(keep_layers=(1,), ffn_units=width // 4), tok, texts)
    assert len(cut.encoder.layer) == 1 and cut.encoder.layer[0].intermediate.dense.out_features == width // 4
    whole = student_mod.cut_base(base, tc.StudentSettings(keep_layers=(1,)), tok, texts)
    assert whole.encoder.layer[0].intermediate.dense.out_features == width


def test_ffn_activity_counts_real_tokens_only(tmp_path):
    import torch

    from edge_dse.distill import student as student_mod
    from edge_dse.distill import train_common as tc
    from transformers import AutoTokenizer

    base = tc.make_tiny_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(str(base))
    model = student_mod.layer_dropped(base, (0, 1))
    texts = ["tar", "a dictionary of English words and their meanings, with examples of each in use"]
    one_by_one = student_mod.ffn_activity(model, tok, texts, batch=1)  # no padding at all
    padded = student_mod.ffn_activity(model, tok, texts, batch=2)  # "tar" padded to the long text's length
    for a, b in zip(one_by_one, padded):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_student_shape_flags_set_the_plan_and_its_command():
    from edge_dse.distill import pipeline

    plan, _ = pipeline.plan_from_args(["--student-layers", "0,2,4,5", "--student-dim", "384", "--hpd-labeller", "baseline",
                                       "--hpd-pairs", "57700", "--stages", "1"])
    assert plan.student_settings == {"keep_layers": (0, 2, 4, 5), "dim": 384, "matryoshka": (128, 256)}
    assert plan.student_id == "l4-384"
    command = plan.command()
    assert "--student-layers 0,2,4,5 --student-dim 384" in command and "--hpd-labeller baseline" in command
    assert pipeline.plan_from_args(command.split()[2:])[0] == plan  # the command re-makes the same plan
    pruned = pipeline.plan_from_args(["--student-ffn", "768"])[0]
    assert pruned.student_settings["ffn_units"] == 768 and pruned.student_id == "l3-256-f768"
    assert "--student-ffn 768" in pruned.command() and pipeline.plan_from_args(pruned.command().split()[2:])[0] == pruned
    assert "ffn_units" not in plan.student_settings
    default = pipeline.plan_from_args([])[0]
    assert "--student" not in default.command() and default.student_settings["matryoshka"] == (128,)
    topic = pipeline.plan_from_args(["--hpd-topic-share", "0.5"])[0]
    assert "--hpd-topic-share 0.5" in topic.command() and pipeline.plan_from_args(topic.command().split()[2:])[0] == topic
    mixed = pipeline.plan_from_args(["--hpd-text-mix"])[0]
    assert mixed.command().startswith("edge-dse distill --hpd-text-mix") and not default.hpd_text_mix
    assert (mixed.text_dir.name, mixed.vectors_dir("mpnet").name) == ("texts-mix", "mpnet-mix")  # never the uniform set's files
    assert (default.text_dir.name, default.vectors_dir("mpnet").name) == ("texts", "mpnet")
    for bad in (["--student-layers", "2,0"], ["--student-layers", "0,6"], ["--student-dim", "512"], ["--hpd-topic-share", "2"]):
        with pytest.raises(SystemExit):
            pipeline.plan_from_args(bad)


def test_pydoc_windows_come_from_training_files_only(tmp_path):
    import random

    from edge_dse.distill import data as data_mod

    def rst(title, paragraphs):
        return f"{title}\n{'=' * len(title)}\n\n" + "\n\n".join(paragraphs) + "\n"

    owner = {}
    for i in range(20):
        body = [f"Module {i} paragraph {k} explains how the parser reads its input and what it returns. " * 3 for k in range(6)]
        (tmp_path / "library").mkdir(exist_ok=True)
        (tmp_path / "library" / f"mod{i}.rst.txt").write_text(rst(f"The mod{i} module", body))
        owner[f"Module {i} "] = f"pydoc:library/mod{i}.rst.txt"
    (tmp_path / "faq").mkdir()
    (tmp_path / "faq" / "general.rst.txt").write_text(rst("Why is Python slow?", ["Module 99 answer, the dev set. " * 20]))
    pairs = list(hpd_texts.pydoc_passage_pairs(tmp_path, random.Random(0)))
    assert pairs and {p.shape for p in pairs} <= {"sentence", "question", "keyword"} and {p.source for p in pairs} == {"pydoc"}
    for p in pairs:
        assert len(p.b) <= 1000 and "Module 99" not in p.b  # chunk-sized; never the FAQ
        doc = next(d for prefix, d in owner.items() if p.b.startswith(prefix))
        assert not data_mod.is_held_out(doc)  # never a held-out file
    held_out = [d for d in owner.values() if data_mod.is_held_out(d)]
    assert held_out and len({next(d for pre, d in owner.items() if p.b.startswith(pre)) for p in pairs}) == 20 - len(held_out)


def test_topic_batches_hold_neighbours_and_cover_every_pair_once():
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:4]  # four far-apart topics, 16 pairs each
    vectors = np.repeat(centres, 16, axis=0) + rng.normal(scale=0.05, size=(64, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    topic = np.repeat(np.arange(4), 16)
    batches = hpd.topic_batches(vectors, 16, seed=0, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(64))
    assert all(len(set(topic[b])) == 1 for b in batches)  # each batch one topic: hard in-batch negatives
    assert batches == hpd.topic_batches(vectors, 16, seed=0, epoch=0)  # a resumed run sees the same
    lengths = [int(x) for x in rng.integers(10, 500, 64)]
    for share in (0.0, 0.5, 1.0):
        mixed = hpd.epoch_batches(lengths, vectors, 10, seed=0, epoch=1, topic_share=share)
        assert len(mixed) == 7 and sorted(i for b in mixed for i in b) == list(range(64))  # ceil(64 / 10) steps
