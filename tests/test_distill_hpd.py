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
