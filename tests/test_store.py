"""The store: SQLite catalog, HNSW cache, writer lock. Real files in tmp_path, real SQLite, real
hnswlib, real child processes (for locks and crashes). Vectors are random unit vectors: the
store must not care what they mean."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_dse.errors import CatalogCorruptError, EdgeDSEError, LibraryLockedError, ModelMismatchError
from edge_dse.store import AnnIndex, Catalog, WriterLock
from edge_dse.store import ann as ann_module

REPO = Path(__file__).resolve().parent.parent
DIM = 32


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def chunks(texts: list[str], heading: str = "") -> list[SimpleNamespace]:
    out, pos = [], 0
    for t in texts:
        out.append(SimpleNamespace(start=pos, end=pos + len(t), text=t, heading=heading))
        pos += len(t) + 1
    return out


def put(cat: Catalog, rng, path: str, n: int, folder: str = "/docs", dim: int = DIM, sha: str | None = None):
    vecs = unit(rng, n, dim)
    ids = cat.put_file(folder, path, 100, 1, sha or f"sha-{path}", chunks([f"{path} part {i}" for i in range(n)]), vecs)
    return ids, vecs


def child(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """A real second process running `code` with this checkout importable."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


@pytest.fixture
def cat(tmp_path):
    c = Catalog(tmp_path / "catalog.db")
    yield c
    c.close()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# -- catalog --------------------------------------------------------------------------------
def test_schema_is_created_once_and_reopens(tmp_path):
    path = tmp_path / "catalog.db"
    a = Catalog(path)
    b = Catalog(path)  # a second writer-mode open of an existing catalog: no error, no change
    assert a.get_meta("schema_version") == "1"
    assert a.catalog_id and a.catalog_id == b.catalog_id
    assert a.generation == 0
    catalog_id = a.catalog_id
    a.close(), b.close()
    c = Catalog(path)
    assert c.catalog_id == catalog_id and c.generation == 0
    tables = set(c.db.table_names())
    assert {"meta", "folders", "files", "chunks", "chunks_fts"} <= tables
    assert c.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    c.set_meta("model_id", "m1")
    assert c.get_meta("model_id") == "m1" and c.get_meta("nope", "d") == "d"
    assert c.counts() == {"folders": 0, "files": 0, "chunks": 0, "errors": 0}
    c.close()


def test_put_replace_remove_and_generation(cat, rng):
    cat.add_folder("/docs")
    cat.add_folder("/docs")
    assert cat.folders() == ["/docs"]
    g0 = cat.generation
    ids_a, vecs_a = put(cat, rng, "/docs/a.txt", 3)
    assert cat.generation == g0 + 1
    row = cat.file_state("/docs/a.txt")
    assert (row.status, row.n_chunks, row.sha256, row.error) == ("ok", 3, "sha-/docs/a.txt", None)
    np.testing.assert_array_equal(cat.get_vectors(ids_a), vecs_a)
    rows = cat.get_chunks(list(reversed(ids_a)) + [10**9])  # order kept, unknown id skipped
    assert [r.id for r in rows] == list(reversed(ids_a))
    assert rows[-1].text == "/docs/a.txt part 0" and rows[-1].start == 0

    ids_b, _ = put(cat, rng, "/docs/b.txt", 2)
    new_a, new_vecs = put(cat, rng, "/docs/a.txt", 2)  # replace: old chunks gone, ids never reused
    assert min(new_a) > max(ids_b) and cat.get_chunks(ids_a) == []
    assert cat.generation == g0 + 3
    assert cat.file_state("/docs/a.txt").n_chunks == 2
    assert list(cat.all_ids()) == sorted(ids_b + new_a)
    batches = list(cat.iter_vectors(batch=3))
    assert [len(i) for i, _ in batches] == [3, 1]
    assert np.concatenate([i for i, _ in batches]).tolist() == sorted(ids_b + new_a)
    assert all(v.dtype == np.float32 and v.shape[1] == DIM for _, v in batches)

    g = cat.generation
    cat.touch_file("/docs/a.txt", 5, 99)  # a new stat only: no chunk changed
    assert cat.generation == g and cat.file_state("/docs/a.txt").mtime_ns == 99
    assert cat.remove_file("/docs/a.txt") == 2
    assert cat.generation == g + 1 and cat.file_state("/docs/a.txt") is None
    assert cat.remove_file("/docs/nothing.txt") == 0 and cat.generation == g + 1
    assert set(cat.files_in("/docs")) == {"/docs/b.txt"}
    put(cat, rng, "/other/c.txt", 1, folder="/other")  # the folder row is made on demand
    assert cat.folders() == ["/docs", "/other"]
    assert cat.remove_folder("/docs") == 1
    assert cat.folders() == ["/other"] and cat.counts() == {"folders": 1, "files": 1, "chunks": 1, "errors": 0}
    # the FTS index followed the deletes (triggers)
    assert cat.keyword_search("docs", 10) == [] and len(cat.keyword_search("other", 10)) == 1


def test_more_ids_than_one_sqlite_statement_holds_come_back_whole_and_in_order(cat, rng):
    from edge_dse.store.catalog import _IN_BATCH

    ids, vecs = put(cat, rng, "/docs/long.txt", 2 * _IN_BATCH + 7)  # three batches
    asked = list(reversed(ids)) + [10**9]  # an id that does not exist: skipped, or a zero row
    assert [r.id for r in cat.get_chunks(asked)] == list(reversed(ids))
    got = cat.get_vectors(asked)
    np.testing.assert_array_equal(got[:-1], vecs[::-1])
    assert not got[-1].any()


def test_put_file_is_all_or_nothing(cat, rng):
    ids, vecs = put(cat, rng, "/docs/a.txt", 3)
    g = cat.generation
    with pytest.raises(ValueError):
        cat.put_file("/docs", "/docs/a.txt", 1, 2, "new", chunks(["x", "y"]), unit(rng, 3))
    with pytest.raises(ModelMismatchError):  # another dimension than the catalog holds
        cat.put_file("/docs", "/docs/b.txt", 1, 2, "new", chunks(["x"]), unit(rng, 1, DIM * 2))
    assert cat.generation == g and cat.all_ids().tolist() == ids
    with pytest.raises(KeyError):  # a failure half-way through a nested transaction
        with cat.transaction():
            put(cat, rng, "/docs/c.txt", 2)
            with cat.transaction():
                cat.remove_file("/docs/a.txt")
                raise KeyError("boom")
    assert cat.generation == g and cat.all_ids().tolist() == ids and cat.file_state("/docs/c.txt") is None
    assert cat.put_file("/docs", "/docs/empty.txt", 0, 1, "e", [], np.zeros((0, 0))) == []
    assert cat.file_state("/docs/empty.txt").n_chunks == 0


def test_put_error_keeps_previous_chunks(cat, rng):
    ids, _ = put(cat, rng, "/docs/a.txt", 3)
    g = cat.generation
    cat.put_error("/docs", "/docs/a.txt", None, None, "PermissionError: denied")
    row = cat.file_state("/docs/a.txt")
    assert (row.status, row.error, row.n_chunks, row.size) == ("error", "PermissionError: denied", 3, 100)
    assert cat.all_ids().tolist() == ids and cat.generation == g
    cat.put_error("/docs", "/docs/new.bin", 7, 8, "binary file")
    assert cat.file_state("/docs/new.bin").size == 7
    assert cat.errors() == [("/docs/a.txt", "PermissionError: denied"), ("/docs/new.bin", "binary file")]
    assert cat.counts()["errors"] == 2
    put(cat, rng, "/docs/a.txt", 1)  # fixed: back to ok, the reason cleared
    assert cat.file_state("/docs/a.txt").status == "ok" and cat.file_state("/docs/a.txt").error is None
    assert cat.counts()["errors"] == 1


def test_chunks_for_hash_reuses_content(cat, rng):
    ids, vecs = put(cat, rng, "/docs/a.txt", 3, sha="same")
    found = cat.chunks_for_hash("same")
    assert found is not None
    rows, found_vecs = found
    assert [r.id for r in rows] == ids and [r.text for r in rows] == [f"/docs/a.txt part {i}" for i in range(3)]
    np.testing.assert_array_equal(found_vecs, vecs)
    # a rename reuses them as they are (ChunkRow has .start .end .text .heading)
    new_ids = cat.put_file("/docs", "/docs/renamed.txt", 100, 2, "same", rows, found_vecs)
    assert len(new_ids) == 3 and cat.get_chunks(new_ids)[0].text == rows[0].text
    assert cat.chunks_for_hash("unknown") is None


# A user may type anything into the search box: none of these may raise.
HOSTILE = [
    "", " ", "\t\n\r", '"', '""', '"unbalanced', "'", "''", "*", "foo*", "*foo", "NEAR", "NEAR(a b)",
    "a NEAR/3 b", "NEAR(cats dogs, 2)", "AND", "OR", "NOT", "a AND", "OR b", "NOT NOT", "AND OR NOT",
    "(", ")", "(a OR b", "a) OR (b", "^cats", "^", "-", "-cats", "cats-dogs", "text:cats", "heading:x",
    "{text heading}: cats", ":", "+", "a + b", "\\", "%", "_", "__init__", "😀", "cats 😀 🐈", "東京都",
    "Ñandú café", "العربية", "עברית", "\x00", "a\x00b", "\x01\x02\x1f\x7f", "\ud800", "a\udfffb",
    "';DROP TABLE chunks;--", "rank", "bm25(chunks_fts)", "chunks_fts", "rowid:1", "col:", "\u200b",
    "x" * 1_000_000, "cats " * 200_000, " ".join(f"w{i}" for i in range(100_000)),
]


def test_space_is_reclaimed_past_the_threshold(cat, rng):
    cat.add_folder("/docs")
    for i in range(40):
        put(cat, rng, f"/docs/f{i}.txt", 20)
    cat._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    full = cat.path.stat().st_size
    assert not cat.reclaim_space()  # nothing free yet: no VACUUM
    for i in range(35):
        cat.remove_file(f"/docs/f{i}.txt")
    assert cat.free_fraction() > 0.5
    assert cat.reclaim_space()
    assert cat.free_fraction() == 0 and cat.path.stat().st_size < full / 2
    assert len(cat.all_ids()) == 5 * 20  # what was kept is still there, vectors and text
    assert cat.get_chunks([int(cat.all_ids()[0])])[0].text.endswith("part 0")


@pytest.fixture(scope="module")
def searchable(tmp_path_factory):
    cat = Catalog(tmp_path_factory.mktemp("kw") / "catalog.db")
    rng = np.random.default_rng(0)
    docs = {
        "/d/cats.md": ("Cats", ["Cats sleep most of the day and hunt at night.", "A cat purrs when content."]),
        "/d/dogs.md": ("Dogs", ["Dogs and cats can live together.", "Walking the dog twice a day."]),
        "/d/cafe.md": ("Café", ["The café serves coffee, tea and cake.", "Indexing rotated logs nightly."]),
        "/d/tokyo.md": ("東京", ["東京都 は 日本 の 首都", "NEAR operators AND OR NOT are plain words here."]),
    }
    for path, (heading, texts) in docs.items():
        cat.put_file("/d", path, 1, 1, path, chunks(texts, heading), unit(rng, len(texts)))
    yield cat
    cat.close()


@pytest.mark.parametrize("query", HOSTILE, ids=lambda q: repr(q[:20]) + (f"..{len(q)}" if len(q) > 20 else ""))
def test_keyword_search_survives_hostile_input(searchable, query):
    result = searchable.keyword_search(query, 5)
    assert isinstance(result, list) and len(result) <= 5
    assert all(isinstance(cid, int) and isinstance(score, float) for cid, score in result)
    if not query.strip():
        assert result == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_keyword_search_any_text(searchable, query):
    result = searchable.keyword_search(query, 3)
    scores = [s for _, s in result]
    assert len(result) <= 3 and scores == sorted(scores, reverse=True)


def test_keyword_search_finds_and_ranks(searchable):
    def paths(query, k=10):
        return [r.path for r in searchable.get_chunks([cid for cid, _ in searchable.keyword_search(query, k)])]

    assert paths("purrs") == ["/d/cats.md"]
    assert paths("index logs") == ["/d/cafe.md"]  # porter stemming: indexing, logs
    assert paths("cafe") == ["/d/cafe.md", "/d/cafe.md"]  # diacritics folded, the heading counts
    assert paths('"NEAR" operators*') == ["/d/tokyo.md"]  # syntax is plain words
    assert paths("東京都") == ["/d/tokyo.md"]
    # AND first: the chunk with both words leads; then chunks with either word fill up to k
    result = searchable.keyword_search("dogs cats", 10)
    first = searchable.get_chunks([result[0][0]])[0]
    assert "Dogs and cats" in first.text
    assert len(result) > 1 and len({cid for cid, _ in result}) == len(result)
    scores = [s for _, s in result]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    assert len(searchable.keyword_search("dogs cats", 1)) == 1
    assert searchable.keyword_search("zebra", 10) == [] and searchable.keyword_search("cats", 0) == []


def test_corrupt_catalog_names_the_fix(tmp_path, rng):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all\n" * 200)
    for readonly in (False, True):
        with pytest.raises(CatalogCorruptError) as err:
            Catalog(garbage, readonly=readonly)
        assert "restore it from a backup" in str(err.value) and "edge-dse index" in str(err.value)
    # a real catalog with damaged pages in the middle
    path = tmp_path / "catalog.db"
    c = Catalog(path)
    for f in range(20):
        put(c, rng, f"/docs/{f}.txt", 5)
    c.close()
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page * 3 : page * 6] = np.random.default_rng(0).bytes(page * 3)
    path.write_bytes(bytes(data))
    with pytest.raises(CatalogCorruptError, match="unreadable"):
        Catalog(path)
    with pytest.raises(EdgeDSEError, match="no catalog"):
        Catalog(tmp_path / "missing.db", readonly=True)


def test_readonly_sees_writer_commits(tmp_path, rng):
    writer = Catalog(tmp_path / "catalog.db")
    reader = Catalog(tmp_path / "catalog.db", readonly=True)
    assert reader.generation == 0 and len(reader.all_ids()) == 0
    ids, _ = put(writer, rng, "/docs/a.txt", 2)
    assert reader.generation == writer.generation == 1
    assert [r.id for r in reader.get_chunks(ids)] == ids
    assert len(reader.keyword_search("part", 10)) == 2
    with pytest.raises(EdgeDSEError, match="read-only"):
        reader.set_meta("x", "y")
    with pytest.raises(sqlite3.OperationalError):  # even raw SQL cannot write through it
        reader.db.execute("DELETE FROM chunks")
    writer.close()
    reader.close()


CRASH_CHILD = """
import sys
import numpy as np
from types import SimpleNamespace as C
from edge_dse.store.catalog import Catalog

cat = Catalog(sys.argv[1])
i = int(sys.argv[2])
while True:
    n = 1 + i % 7
    texts = [f"file {i} chunk {j} " + "x" * (50 * j) for j in range(n)]
    parts = [C(start=j, end=j + 1, text=t, heading=f"h{i}") for j, t in enumerate(texts)]
    vecs = np.random.default_rng(i).normal(size=(n, 16)).astype(np.float32)
    cat.put_file("/f", f"/f/{i % 23}.txt", i, i, f"sha{i}", parts, vecs)
    print(i, flush=True)
    i += 1
"""


def test_crash_mid_write_loses_nothing_committed(tmp_path):
    """SIGKILL a writer while it commits files in a loop: every commit it reported is there,
    whole; the one in flight is either wholly there or wholly absent."""
    path = tmp_path / "catalog.db"
    Catalog(path).close()
    next_i, reported = 0, {}
    for stop_after in (40, 90, 150):
        proc = child(CRASH_CHILD, str(path), str(next_i))
        last = next_i - 1
        for line in proc.stdout:
            last = int(line)
            reported[last % 23] = last
            if last >= stop_after:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close(), proc.stderr.close()

        cat = Catalog(path)  # quick_check on open: the file is sound
        assert cat.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        files = cat.files_in("/f")
        in_flight = last + 1  # may have committed without getting to print
        committed = last + (1 if files.get(f"/f/{in_flight % 23}.txt", None) and files[f"/f/{in_flight % 23}.txt"].sha256 == f"sha{in_flight}" else 0)
        assert cat.generation == committed + 1  # one generation per committed put_file
        for slot, i in reported.items():
            row = files[f"/f/{slot}.txt"]
            assert row.sha256 in (f"sha{i}", f"sha{in_flight}")
        n_total = 0
        for p, row in files.items():
            i = int(row.sha256[3:])
            n = 1 + i % 7
            rows = cat.db.execute('SELECT id, text, "start" FROM chunks WHERE path = ? ORDER BY id', (p,)).fetchall()
            assert row.n_chunks == n and [r[1].split(" x")[0].strip() for r in rows] == [f"file {i} chunk {j}" for j in range(n)]
            np.testing.assert_array_equal(cat.get_vectors([r[0] for r in rows]),
                                          np.random.default_rng(i).normal(size=(n, 16)).astype(np.float32))
            n_total += n
        assert cat.counts()["chunks"] == n_total  # no orphan chunks from a half-written file
        cat.close()
        next_i = committed + 1


# -- ANN index ------------------------------------------------------------------------------
def exact_top(cat: Catalog, query: np.ndarray, k: int) -> list[int]:
    ids = cat.all_ids()
    scores = cat.get_vectors(ids) @ query
    return ids[np.argsort(-scores, kind="stable")[:k]].tolist()


def fill(cat, rng, n_files: int, per_file: int = 10, start: int = 0, dim: int = DIM) -> None:
    with cat.transaction():
        for f in range(start, start + n_files):
            put(cat, rng, f"/docs/{f}.txt", per_file, dim=dim)


def assert_matches_exact(index: AnnIndex, cat: Catalog, rng, k: int = 10, queries: int = 20) -> None:
    live = set(cat.all_ids().tolist())
    assert set(index.ids().tolist()) == live and len(index) == len(live)
    hits = total = 0
    for q in unit(rng, queries):
        ids, scores = index.search(q, k)
        assert ids.dtype == np.int64 and scores.dtype == np.float32
        assert set(ids.tolist()) <= live  # a deleted chunk is never returned
        assert list(scores) == sorted(scores, reverse=True)
        truth = exact_top(cat, q, k)
        hits += len(set(ids.tolist()) & set(truth))
        total += len(truth)
    assert hits / total >= 0.97


def test_ann_open_builds_then_loads(tmp_path, cat, rng):
    fill(cat, rng, 30)
    index = AnnIndex.open(tmp_path, DIM, cat)
    assert index.source.startswith("rebuilt") and index.generation == cat.generation and len(index) == 300
    meta = json.loads((tmp_path / "ann.json").read_text())
    assert meta["generation"] == cat.generation and meta["dim"] == DIM and meta["count"] == 300
    assert (tmp_path / meta["hnsw_file"]).is_file()
    assert_matches_exact(index, cat, rng)
    # a stored vector finds itself first, with cosine ~1
    some = cat.all_ids()[17]
    ids, scores = index.search(cat.get_vectors([some])[0], 1)
    assert ids.tolist() == [some] and abs(scores[0] - 1) < 1e-4
    again = AnnIndex.open(tmp_path, DIM, cat)
    assert again.source == "loaded" and np.array_equal(again.ids(), index.ids())
    assert again.ef_search == AnnIndex.DEFAULTS["ef_search"]
    assert len(again.search(unit(rng, 1)[0], 1000)[0]) == 300  # k capped to the live count


def test_ann_refresh_after_adds_and_removes(tmp_path, cat, rng):
    fill(cat, rng, 40)
    index = AnnIndex.open(tmp_path, DIM, cat)
    fill(cat, rng, 5, start=40)
    removed = set()
    for f in (1, 7, 12):  # 30 of 450: under the compaction threshold
        removed |= {r.id for r in cat.get_chunks(cat.all_ids()) if r.path == f"/docs/{f}.txt"}
        cat.remove_file(f"/docs/{f}.txt")
    index.refresh(cat)
    assert index.generation == cat.generation and index.deleted == 30  # incremental, no rebuild
    assert not (set(index.ids().tolist()) & removed)
    assert_matches_exact(index, cat, rng)
    for q in unit(rng, 10):  # even asking for everything, deleted ids never come back
        assert not set(index.search(q, 10_000)[0].tolist()) & removed
    index.save()
    reopened = AnnIndex.open(tmp_path, DIM, cat)
    assert reopened.source == "loaded" and reopened.deleted == 30
    assert_matches_exact(reopened, cat, rng)


def test_ann_stale_generation_is_refreshed(tmp_path, cat, rng):
    fill(cat, rng, 20)
    AnnIndex.open(tmp_path, DIM, cat)
    fill(cat, rng, 3, start=20)
    index = AnnIndex.open(tmp_path, DIM, cat)
    assert index.source == "refreshed" and index.generation == cat.generation and len(index) == 230
    assert json.loads((tmp_path / "ann.json").read_text())["generation"] == cat.generation
    # a sidecar claiming another generation is not trusted either
    meta = json.loads((tmp_path / "ann.json").read_text())
    meta["generation"] = 999
    (tmp_path / "ann.json").write_text(json.dumps(meta))
    index = AnnIndex.open(tmp_path, DIM, cat)
    assert index.generation == cat.generation and index.source != "loaded"
    assert_matches_exact(index, cat, rng)


@pytest.mark.parametrize("damage", ["truncate", "garbage_middle", "garbage_whole", "delete", "sidecar", "ids"])
def test_ann_damaged_files_are_rebuilt(tmp_path, cat, rng, damage):
    fill(cat, rng, 20)
    AnnIndex.open(tmp_path, DIM, cat)
    meta = json.loads((tmp_path / "ann.json").read_text())
    hnsw = tmp_path / meta["hnsw_file"]
    data = hnsw.read_bytes()
    if damage == "truncate":
        hnsw.write_bytes(data[: len(data) // 2])
    elif damage == "garbage_middle":  # loads "fine" in hnswlib and segfaults a search: the CRC catches it
        hnsw.write_bytes(data[:200] + os.urandom(2000) + data[2200:])
    elif damage == "garbage_whole":
        hnsw.write_bytes(os.urandom(len(data)))
    elif damage == "delete":
        hnsw.unlink()
    elif damage == "sidecar":
        (tmp_path / "ann.json").write_text("{not json")
    elif damage == "ids":
        (tmp_path / meta["ids_file"]).write_bytes(b"\x93NUMPY garbage")
    reader = AnnIndex.open(tmp_path, DIM, cat, rebuild_if_stale=False)  # a reader: empty, no crash
    assert reader.source.startswith("empty") and len(reader) == 0 and reader.generation == -1
    assert len(reader.search(unit(rng, 1)[0], 5)[0]) == 0
    index = AnnIndex.open(tmp_path, DIM, cat)
    assert index.source.startswith("rebuilt") and len(index) == 200
    assert_matches_exact(index, cat, rng)
    assert AnnIndex.open(tmp_path, DIM, cat).source == "loaded"


def test_ann_dim_change_and_new_catalog_rebuild(tmp_path, cat, rng):
    fill(cat, rng, 10)
    AnnIndex.open(tmp_path, DIM, cat)
    for f in range(10):  # the library re-indexed with a model of another dimension
        cat.remove_file(f"/docs/{f}.txt")
    fill(cat, rng, 10, start=10, dim=48)
    index = AnnIndex.open(tmp_path, 48, cat)
    assert index.source.startswith("rebuilt: dim") and index.dim == 48 and len(index) == 100
    with pytest.raises(ModelMismatchError):  # asked for a dim the catalog's vectors do not have
        AnnIndex.open(tmp_path, 64, cat)
    # a catalog deleted and made anew restarts generations and ids: its old cache must not fit
    cat.close()
    for p in tmp_path.glob("catalog.db*"):
        p.unlink()
    fresh = Catalog(tmp_path / "catalog.db")
    fill(fresh, rng, 10, dim=48)
    index = AnnIndex.open(tmp_path, 48, fresh)
    assert index.source == "rebuilt: built for another catalog" and len(index) == 100
    fresh.close()


def test_ann_notices_a_catalog_restored_from_backup(tmp_path, rng):
    """After a restore, ids and generation numbers recur with other contents: the index must
    not take the restored catalog for the one it was built from."""
    cat = Catalog(tmp_path / "catalog.db")
    fill(cat, rng, 10)
    backup = sqlite3.connect(tmp_path / "backup.db")
    cat.db.conn.backup(backup)
    backup.close()
    fill(cat, rng, 3, start=10)  # 3 more commits after the backup, then the index is saved
    AnnIndex.open(tmp_path, DIM, cat)
    saved = json.loads((tmp_path / "ann.json").read_text())
    cat.close()
    for p in tmp_path.glob("catalog.db*"):
        p.unlink()
    (tmp_path / "backup.db").rename(tmp_path / "catalog.db")
    cat = Catalog(tmp_path / "catalog.db")
    fill(cat, rng, 3, start=20)  # other files, reusing the same ids and reaching the same generation
    assert cat.generation == saved["generation"] and cat.catalog_id == saved["catalog_id"]
    index = AnnIndex.open(tmp_path, DIM, cat)
    assert index.source.startswith("rebuilt: the catalog's history changed")
    assert_matches_exact(index, cat, rng)
    cat.close()


def test_ann_compacts_after_many_deletes(tmp_path, cat, rng):
    fill(cat, rng, 20)
    index = AnnIndex.open(tmp_path, DIM, cat)
    for f in range(3):
        cat.remove_file(f"/docs/{f}.txt")
    index.refresh(cat)
    assert index.deleted == 30 and index.elements == 200  # tombstones: memory not freed yet
    for f in range(3, 8):
        cat.remove_file(f"/docs/{f}.txt")
    index.refresh(cat)  # 80 of 200 deleted > 25%: rebuilt without them
    assert index.source == "rebuilt: compaction" and index.deleted == 0 and index.elements == 120
    assert_matches_exact(index, cat, rng)


def test_ann_grows_past_capacity(tmp_path, cat, rng):
    fill(cat, rng, 10)
    index = AnnIndex.open(tmp_path, DIM, cat)
    assert index.capacity == ann_module.MIN_CAPACITY
    fill(cat, rng, 130, start=10)  # 1400 vectors > 1024
    index.refresh(cat)
    assert index.capacity >= 1400 and len(index) == 1400 and index.deleted == 0
    assert_matches_exact(index, cat, rng, queries=10)


def test_ann_reader_never_writes(tmp_path, cat, rng):
    empty = AnnIndex.open(tmp_path, DIM, cat, rebuild_if_stale=False)
    assert empty.generation == -1 and len(empty) == 0 and not (tmp_path / "ann.json").exists()
    fill(cat, rng, 10)
    AnnIndex.open(tmp_path, DIM, cat)
    saved_generation = cat.generation
    fill(cat, rng, 2, start=10)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.glob("ann*"))
    stale = AnnIndex.open(tmp_path, DIM, cat, rebuild_if_stale=False)
    assert stale.source == "loaded" and stale.generation == saved_generation != cat.generation
    assert len(stale) == 100  # the caller sees what it lacks: catalog ids minus stale.ids()
    assert len(np.setdiff1d(cat.all_ids(), stale.ids())) == 20
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.glob("ann*")) == before


SAVE_CHILD = """
import sys
import numpy as np
from types import SimpleNamespace as C
from pathlib import Path
from edge_dse.store import AnnIndex, Catalog

folder = Path(sys.argv[1])
cat = Catalog(folder / "catalog.db")
index = AnnIndex.open(folder, 32, cat)
rng = np.random.default_rng(0)
for i in range(10_000):
    v = rng.normal(size=(5, 32)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cat.put_file("/f", f"/f/{i % 50}.txt", 1, 1, str(i), [C(start=0, end=1, text="t", heading="")] * 5, v)
    index.refresh(cat)
    index.save()
    print(i, flush=True)
"""


def test_ann_killed_while_saving_recovers(tmp_path, rng):
    proc = child(SAVE_CHILD, str(tmp_path))
    for line in proc.stdout:
        if int(line) >= 25:
            break
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close(), proc.stderr.close()
    cat = Catalog(tmp_path / "catalog.db")
    reader = AnnIndex.open(tmp_path, DIM, cat, rebuild_if_stale=False)  # whatever is there loads or is refused
    assert reader.source == "loaded" or reader.source.startswith("empty")
    index = AnnIndex.open(tmp_path, DIM, cat)
    assert index.generation == cat.generation
    assert_matches_exact(index, cat, rng, queries=10)
    index.save()
    assert len(list(tmp_path.glob("ann.*.hnsw"))) == 1 and not list(tmp_path.glob("*.tmp"))
    cat.close()



def test_save_with_nothing_new_still_drops_files_of_a_save_killed_after_its_commit(tmp_path, rng):
    # The state a writer leaves when killed between the sidecar rename and its clean-up:
    # the committed index plus the previous save's files.
    cat = Catalog(tmp_path / "catalog.db")
    fill(cat, rng, 5)
    AnnIndex.open(tmp_path, DIM, cat)
    for suffix in (".hnsw", ".ids.npy"):
        (tmp_path / f"ann.0123456789abcdef{suffix}").write_bytes(b"left by a killed writer")
    index = AnnIndex.open(tmp_path, DIM, cat)
    assert index.source == "loaded"
    index.save()
    assert len(list(tmp_path.glob("ann.*.hnsw"))) == 1 and len(list(tmp_path.glob("ann.*.ids.npy"))) == 1
    assert not list(tmp_path.glob("ann.0123456789abcdef*"))
    cat.close()

# -- writer lock ----------------------------------------------------------------------------
HOLDER = """
import sys, time
from edge_dse.store.lock import WriterLock
lock = WriterLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
lock.release()
print("released", flush=True)
"""


def test_lock_excludes_another_process_and_names_it(tmp_path):
    path = tmp_path / "write.lock"
    proc = child(HOLDER, str(path), "30")
    assert proc.stdout.readline().strip() == "locked"
    lock = WriterLock(path)
    with pytest.raises(LibraryLockedError) as err:
        lock.acquire()
    message = str(err.value)
    assert f"pid {proc.pid}" in message and str(tmp_path) in message and "--wait" in message
    t0 = time.monotonic()
    with pytest.raises(LibraryLockedError):
        lock.acquire(timeout=0.4)  # waits, then gives up
    assert time.monotonic() - t0 >= 0.4
    # the holder dies without releasing (SIGKILL): the OS drops its lock
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close(), proc.stderr.close()
    lock.acquire(timeout=5)
    assert lock.held and json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_wait_succeeds_when_holder_finishes(tmp_path):
    path = tmp_path / "write.lock"
    proc = child(HOLDER, str(path), "0.5")
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(LibraryLockedError):  # acquire() without a timeout fails now
        WriterLock(path).acquire()
    lock = WriterLock(path)
    lock.acquire(timeout=10)
    assert lock.held
    lock.release()
    assert proc.wait(timeout=10) == 0
    proc.stdout.close(), proc.stderr.close()


def test_lock_in_one_process(tmp_path):
    path = tmp_path / "lib" / "write.lock"
    a, b = WriterLock(path), WriterLock(path)
    a.acquire()
    a.acquire()  # re-entrant on the same object
    with pytest.raises(LibraryLockedError, match=f"pid {os.getpid()}"):
        b.acquire()  # another object on the same file: excluded, even in this process
    a.release()
    with pytest.raises(LibraryLockedError):
        b.acquire()
    a.release()
    assert not a.held and path.read_text() == ""  # no stale owner left behind
    with b:
        assert b.held
    assert not b.held
    b.release()  # releasing what is not held is harmless


def test_a_reader_during_library_creation_is_told_to_retry_not_that_it_is_damaged(tmp_path):
    # The state a reader meets between a writer creating catalog.db and committing its schema.
    sqlite3.connect(tmp_path / "catalog.db").close()
    with pytest.raises(EdgeDSEError, match="still being created") as info:
        Catalog(tmp_path / "catalog.db", readonly=True)
    assert not isinstance(info.value, CatalogCorruptError)
    # A catalog that lost some of its tables is damaged.
    con = sqlite3.connect(tmp_path / "catalog.db")
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    con.commit()
    con.close()
    with pytest.raises(CatalogCorruptError, match="missing tables"):
        Catalog(tmp_path / "catalog.db", readonly=True)
