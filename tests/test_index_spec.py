"""A library's IndexSpec (chunk size, HNSW build settings, what files it takes) is recorded when it
is made, kept when it is opened without settings, refused when it is opened with others, and
changed by `reindex`; ef_search and max_length reach hnswlib and the encoder. Real libraries of
real files, the shipped model, the real command line."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from edge_dse import Library
from edge_dse.encoder import passage_text
from edge_dse.errors import EdgeDSEError, IndexSpecMismatchError
from edge_dse.index_spec import IndexSpec

from conftest import REPO, run_cli, shipped_model_dir

MODEL = str(shipped_model_dir())
SPEC_FIELDS = ("chunk_tokens", "hnsw_m", "hnsw_ef_construction", "max_file_bytes", "ignore_dirs", "include_hidden")


@pytest.fixture(scope="module")
def long_doc(tmp_path_factory):
    """A folder holding one real multi-section document: the start of this repository's README."""
    folder = tmp_path_factory.mktemp("docs")
    (folder / "guide.md").write_text((REPO / "README.md").read_text(encoding="utf-8")[:20000], encoding="utf-8")
    return folder


def readme_headings() -> list[str]:
    """Real queries: the README's section titles."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    return [line.strip("# ").strip() for line in lines if line.startswith("#")]


def chunk_texts(lib: Library) -> list[str]:
    return [passage_text(r.text, r.heading) for r in lib.catalog.get_chunks(lib.catalog.all_ids())]


def test_max_length_reaches_the_encoder_and_the_spec_records_it(long_doc, tmp_path):
    chunks = {}
    for window in (64, 256):
        with Library(tmp_path / f"lib{window}", model=MODEL, max_length=window, progress=False) as lib:
            lib.add(long_doc)
            assert lib.encoder.max_length == window
            assert lib.spec.chunk_tokens == window - 2 and lib.status()["spec"]["chunk_tokens"] == window - 2
            texts = chunk_texts(lib)
            assert max(len(lib.encoder.token_starts(t)) for t in texts) <= window - 2  # each fits whole
            chunks[window] = texts
    assert len(chunks[64]) > len(chunks[256])  # more, shorter chunks
    assert max(map(len, chunks[64])) < max(map(len, chunks[256]))
    # Opened without a max length, a library keeps the window it records: queries are cut as its chunks.
    with Library(tmp_path / "lib64", model=MODEL, progress=False) as lib:
        assert lib.spec.chunk_tokens == 62 and lib.encoder.max_length == 64
        assert lib.search("how do I run the tests?", k=1)


def test_the_spec_is_recorded_and_other_settings_are_refused_naming_reindex(long_doc, tmp_path):
    with Library(tmp_path / "lib", model=MODEL, max_length=64, max_bytes=1_000_000, progress=False) as lib:
        lib.add(long_doc)
        recorded = lib.status()["spec"]
    assert set(recorded) == set(SPEC_FIELDS) and recorded["max_file_bytes"] == 1_000_000
    assert IndexSpec(**recorded) == lib.spec

    for other in ({"max_length": 128}, {"max_bytes": 2_000_000}, {"hnsw_m": 32}, {"ignore_dirs": [".git"]},
                  {"include_hidden": True}):
        with pytest.raises(IndexSpecMismatchError, match=r"`edge-dse reindex --library ") as refused:
            Library(tmp_path / "lib", model=MODEL, progress=False, **other)
        assert "\n" not in str(refused.value)
    with pytest.raises(IndexSpecMismatchError, match=r"chunk_tokens 62 recorded, 126 given.*--max-length 128`"):
        Library(tmp_path / "lib", model=MODEL, max_length=128, readonly=True)
    for out_of_range in (4, 100_000):
        with pytest.raises(EdgeDSEError, match="--max-length"):
            Library(tmp_path / "lib", model=MODEL, max_length=out_of_range, progress=False)
    # The recorded settings, given again, open it.
    with Library(tmp_path / "lib", model=MODEL, max_length=64, max_bytes=1_000_000, progress=False) as lib:
        assert lib.sync().unchanged == 1


def test_reindex_records_a_new_spec_and_rechunks(long_doc, tmp_path):
    with Library(tmp_path / "lib", model=MODEL, progress=False) as lib:
        lib.add(long_doc)
        before = lib.status()["chunks"]
    with Library(tmp_path / "lib", model=MODEL, max_length=64, hnsw_m=8, progress=False, allow_model_change=True) as lib:
        lib.reindex()
        status = lib.status()
        assert status["spec"]["chunk_tokens"] == 62 and status["spec"]["hnsw_m"] == 8
        assert status["chunks"] > before
        assert lib.ann_index().M == 8  # the graph is built as recorded
    with Library(tmp_path / "lib", model=MODEL, progress=False) as lib:  # opens with its new spec
        assert lib.spec.chunk_tokens == 62 and lib.search("how do I run the tests?", k=1)


def test_a_library_from_before_the_spec_opens_and_adopts_the_current_one(long_doc, tmp_path):
    with Library(tmp_path / "lib", model=MODEL, progress=False) as lib:
        lib.add(long_doc)
        made = lib.status()["spec"]
        # What a catalog made before the spec holds: the chunk size alone, recorded with the model.
        with lib.catalog.transaction():
            for key in SPEC_FIELDS[1:]:
                lib.catalog.delete_meta(key)
    with Library(tmp_path / "lib", model=MODEL, readonly=True) as lib:  # opens; a reader writes nothing
        assert lib.search("how do I run the tests?", k=1)
        assert set(lib.status()["spec"]) == {"chunk_tokens"}
    with Library(tmp_path / "lib", model=MODEL, progress=False) as lib:  # a writer records it
        assert lib.status()["spec"] == made

    # Older still: chunks cut by characters, no chunk size recorded. It opens, and no chunk size
    # is claimed for it until a reindex cuts it in tokens.
    with Library(tmp_path / "lib", model=MODEL, progress=False) as lib:
        lib.catalog.delete_meta("chunk_tokens")
    with Library(tmp_path / "lib", model=MODEL, progress=False) as lib:
        assert "chunk_tokens" not in lib.status()["spec"] and lib.status()["spec"]["hnsw_m"] == made["hnsw_m"]
        assert lib.search("how do I run the tests?", k=1)


def test_ef_search_reaches_hnswlib(long_doc, tmp_path):
    # A sparse graph (2 links per node, a tiny build list): the search's candidate list decides
    # how much of it is explored, so recall against exact search shows which ef was used.
    with Library(tmp_path / "lib", model=MODEL, max_length=64, hnsw_m=2, hnsw_ef_construction=4, progress=False) as lib:
        lib.add(long_doc)
        index = lib.ann_index()
        assert (index.M, index.ef_construction) == (2, 4)
        ids = np.asarray(lib.catalog.all_ids())
        vectors = lib.catalog.get_vectors(ids)
        queries = readme_headings()
        found = {1: 0, 2000: 0}
        for query in queries:
            exact = set(ids[np.argsort(-(vectors @ lib.encoder.encode([query], kind="query")[0]))[:10]].tolist())
            for ef in found:
                hits = lib.search(query, k=10, mode="vector", ef_search=ef)
                assert len(hits) == 10  # an ef below k is raised to k: every hit still comes back
                found[ef] += len(exact & {h.chunk_id for h in hits})
        assert found[2000] > found[1], found
        with pytest.raises(EdgeDSEError, match="--ef-search"):
            lib.search("tests", ef_search=0)

        # ef is hnswlib's per index object: searches of different ef from several threads at once
        # each get what they asked for, the same as one at a time.
        query_vectors = lib.encoder.encode(queries, kind="query")
        asked = [(qv, ef) for qv in query_vectors for ef in (1, 2000)] * 3
        alone = [index.search(qv, 10, ef_search=ef)[0].tolist() for qv, ef in asked]
        together: list = [None] * len(asked)

        def worker(start: int) -> None:
            for i in range(start, len(asked), 4):
                together[i] = index.search(asked[i][0], 10, ef_search=asked[i][1])[0].tolist()

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert together == alone
        assert index.ef_search == index.DEFAULTS["ef_search"]  # a search's ef does not stick


def one_line_error(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("edge-dse: error:"), proc.stderr
    return lines[0]


def test_cli_max_length_and_ef_search(long_doc, tmp_path):
    lib = ["-q", "--library", str(tmp_path / "lib"), "--model", MODEL]

    def status() -> dict:
        return json.loads(run_cli(*lib, "status", "--json").stdout)

    assert run_cli(*lib, "index", str(long_doc), "--max-length", "256").returncode == 0
    before = status()
    assert before["spec"]["chunk_tokens"] == 254

    assert "edge-dse reindex" in one_line_error(run_cli(*lib, "index", str(long_doc), "--max-length", "64"))
    assert "--max-length" in one_line_error(run_cli(*lib, "index", str(long_doc), "--max-length", "4"))
    assert "--ef-search" in one_line_error(run_cli(*lib, "search", "tests", "--ef-search", "0"))

    reindexed = run_cli(*lib[1:], "reindex", "--max-length", "64")
    assert reindexed.returncode == 0 and "chunks of up to 62 tokens" in reindexed.stderr, reindexed.stderr
    after = status()
    assert after["spec"]["chunk_tokens"] == 62 and after["model"]["chunk_tokens"] == "62"
    assert after["chunks"] > before["chunks"]

    found = run_cli(*lib, "search", "how do I run the tests?", "--ef-search", "50", "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)["hits"]) == 3


def test_cli_spec_flags_are_recorded_refused_and_named_in_the_rebuild_command(long_doc, tmp_path):
    """--hnsw-m, --hnsw-ef-construction, --max-file-mb, --ignore-dir and --include-hidden reach the
    library's spec on `index`; a different value later is refused with the reindex command that
    asks for it, and that command changes it."""
    (long_doc.parent / "spec-docs").mkdir(exist_ok=True)
    folder = long_doc.parent / "spec-docs"
    (folder / "guide.md").write_text((long_doc / "guide.md").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "generated").mkdir(exist_ok=True)
    (folder / "generated" / "report.md").write_text("# Generated\n\nA build output nobody wants in search.\n", encoding="utf-8")
    (folder / ".notes.md").write_text("# Hidden\n\nA hidden note.\n", encoding="utf-8")
    lib = ["-q", "--library", str(tmp_path / "lib"), "--model", MODEL]

    def status() -> dict:
        return json.loads(run_cli(*lib, "status", "--json").stdout)

    made = run_cli(*lib, "index", str(folder), "--hnsw-m", "8", "--hnsw-ef-construction", "64",
                   "--max-file-mb", "1", "--ignore-dir", "generated", "--include-hidden")
    assert made.returncode == 0, made.stderr
    spec = status()["spec"]
    assert (spec["hnsw_m"], spec["hnsw_ef_construction"], spec["max_file_bytes"]) == (8, 64, 2**20)
    assert "generated" in spec["ignore_dirs"] and ".git" in spec["ignore_dirs"] and spec["include_hidden"] is True
    assert status()["files"] == 2  # guide.md and the hidden note; generated/ never entered

    refused = one_line_error(run_cli(*lib, "index", str(folder), "--hnsw-m", "12", "--ignore-dir", "drafts"))
    assert "hnsw_m 8 recorded, 12 given; ignore_dirs ['generated'] recorded, ['drafts'] given" in refused
    assert refused.endswith("--hnsw-m 12 --ignore-dir drafts`"), refused  # --ignore-dir adds to the defaults
    assert "--max-file-mb" in one_line_error(run_cli(*lib, "index", str(folder), "--max-file-mb", "0"))
    bad_m = run_cli(*lib, "index", str(folder), "--hnsw-m", "0")
    assert bad_m.returncode == 2 and "--hnsw-m: '0' is not a whole number >= 1" in bad_m.stderr

    reindexed = run_cli(*lib[1:], "reindex", "--hnsw-m", "12")
    assert reindexed.returncode == 0, reindexed.stderr
    spec = status()["spec"]
    assert spec["hnsw_m"] == 12 and spec["hnsw_ef_construction"] == 64 and "generated" in spec["ignore_dirs"]
    with Library(tmp_path / "lib", model=MODEL, progress=False, readonly=True) as opened:
        assert opened.ann_index().M == 12


def test_rebuild_flags_name_each_changed_setting_or_its_api_argument():
    from dataclasses import replace

    from edge_dse.index_spec import rebuild_flags

    spec = replace(IndexSpec.default(126), hnsw_m=8, max_file_bytes=3 * 2**20, include_hidden=True,
                   ignore_dirs=tuple(sorted({*IndexSpec.default(126).ignore_dirs, "drafts"})))
    every = {"chunk_tokens", "hnsw_m", "hnsw_ef_construction", "max_file_bytes", "include_hidden", "ignore_dirs"}
    assert rebuild_flags(spec, every, max_length=128) == (
        " --max-length 128 --hnsw-m 8 --hnsw-ef-construction 200 --max-file-mb 3 --include-hidden --ignore-dir drafts")
    assert rebuild_flags(spec, {"hnsw_m"}, max_length=128) == " --hnsw-m 8"
    # What no flag can ask for is named as the Library argument.
    odd = replace(spec, max_file_bytes=1000, include_hidden=False, ignore_dirs=(".git",))
    assert rebuild_flags(odd, {"max_file_bytes", "include_hidden", "ignore_dirs"}, max_length=128) == (
        " (max_bytes=1000) (include_hidden=False) (ignore_dirs=['.git'])")
