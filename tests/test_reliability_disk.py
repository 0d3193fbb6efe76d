"""Disk trouble, with real files and the real `edge-dse` process: a full disk (a small tmpfs,
mounted when we may), a damaged HNSW cache, a damaged catalog."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, shipped_model_dir
from edge_dse import Library
from edge_dse.errors import EdgeDSEError
from edge_dse.store import AnnIndex

MODEL = str(shipped_model_dir())
RECOVERY = ("delete the library folder", "edge-dse index")


def cli(lib: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("-l", str(lib), "--model", MODEL, *args)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-dse: error:"), proc.stderr
    return lines[0]


def make_notes(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"note-{i:04d}.txt").write_text(
            f"Record {i}: unique token zq{i:04d}x.\nA short note about the weather, the garden and the bread "
            f"we baked on day {i}.\n", encoding="utf-8")


def token_paths(lib: Library, i: int) -> list[str]:
    return [Path(h.path).name for h in lib.search(f"zq{i:04d}x", k=3, mode="keyword")]


# -- a full disk ----------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a tmpfs of that size under tmp_path; skips where mounting is not allowed."""
    mounted = []

    def mount(size: str, name: str = "disk") -> Path:
        where = tmp_path / name
        where.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def grow(where: Path, size: str = "64m") -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True, capture_output=True)


def test_disk_full_during_a_sync_is_one_line_and_keeps_what_was_committed(tmp_path, small_disk, encoder):
    docs = tmp_path / "docs"
    make_notes(docs, 300)  # ~1.5 MB of catalog: a 512 KB disk fills after a few dozen files
    disk = small_disk("512k")
    lib_dir = disk / "lib"

    error = one_line_error(cli(lib_dir, "index", str(docs)))
    assert "disk" in error and "full" in error and "edge-dse sync" in error, error

    with Library(lib_dir, model=encoder, progress=False, readonly=True) as lib:  # opens on the full disk
        ok = [Path(p).name for p, r in lib.catalog.files_in(str(docs)).items() if r.status == "ok"]
        assert 0 < len(ok) < 300
        for name in ok:  # every committed file is whole and found
            assert token_paths(lib, int(name[5:9])) == [name]
        assert lib.search("baked bread on day 3", k=3, mode="vector")
    found = cli(lib_dir, "search", "--mode", "hybrid", f"zq{ok[0][5:9]}x")
    assert found.returncode == 0 and ok[0] in found.stdout, found.stderr
    assert cli(lib_dir, "status").returncode == 0

    grow(disk)  # space freed: the next sync finishes the job
    done = cli(lib_dir, "sync")
    assert done.returncode == 0, done.stderr
    with Library(lib_dir, model=encoder, progress=False) as lib:
        assert lib.catalog.counts() == {"folders": 1, "files": 300, "chunks": 300, "errors": 0}
        assert token_paths(lib, 299) == ["note-0299.txt"]
        ann = AnnIndex.open(lib_dir, encoder.dim, lib.catalog, rebuild_if_stale=False)
        assert ann.generation == lib.catalog.generation and len(ann) == 300


def test_disk_full_in_the_library_api_then_freed_the_same_library_goes_on(tmp_path, small_disk, encoder):
    docs = tmp_path / "docs"
    make_notes(docs, 300)
    disk = small_disk("512k")
    lib = Library(disk / "lib", model=encoder, progress=False)
    with pytest.raises(EdgeDSEError, match="disk full"):
        lib.add(docs)
    grow(disk)
    report = lib.sync()  # the same object: no transaction left open by the failed commit
    assert report.failed == 0 and lib.catalog.counts()["files"] == 300
    assert token_paths(lib, 0) == ["note-0000.txt"]
    lib.close()


def test_a_transaction_too_big_for_the_disk_fails_as_disk_full(small_disk):
    """A file of thousands of chunks spills its transaction to the WAL before COMMIT: SQLite
    then rolls back by itself, and the error must still say "disk is full" (a second ROLLBACK
    would fail and put "cannot rollback" in its place), so the user is told what to do."""
    import sqlite3
    from types import SimpleNamespace

    from edge_dse.store import Catalog

    disk = small_disk("1m")
    cat = Catalog(disk / "catalog.db")
    chunks = [SimpleNamespace(start=i, end=i + 1, text=f"chunk {i} " * 20, heading="") for i in range(3000)]
    vectors = np.random.default_rng(0).random((3000, 384), dtype=np.float32)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        cat.put_file("/f", "/f/big.txt", 1, 1, "sha", chunks, vectors)
    cat.put_file("/f", "/f/small.txt", 1, 1, "sha2", chunks[:2], vectors[:2])  # the catalog writes on
    assert cat.counts()["chunks"] == 2
    cat.close()


def test_disk_full_while_saving_the_hnsw_cache(tmp_path, small_disk, encoder):
    docs = tmp_path / "docs"
    make_notes(docs, 300)
    with Library(tmp_path / "built", model=encoder, progress=False) as lib:
        lib.add(docs)
    disk = small_disk("8m")
    lib_dir = disk / "lib"
    lib_dir.mkdir()
    shutil.copy(tmp_path / "built" / "catalog.db", lib_dir / "catalog.db")  # the catalog, no cache
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(bytes(free - 200 * 1024))  # room for SQLite's -shm, not for the cache

    error = one_line_error(cli(lib_dir, "sync"))
    assert "disk" in error and "full" in error, error
    assert not (lib_dir / "ann.json").exists()
    found = cli(lib_dir, "search", "-k", "1", "the bread we baked on day 7")  # exact search, no cache
    assert found.returncode == 0 and found.stdout.strip(), found.stderr

    (disk / "filler").unlink()
    assert cli(lib_dir, "sync").returncode == 0
    names = sorted(n for n in os.listdir(lib_dir) if n.startswith("ann"))
    assert len(names) == 3, names  # the half-written files of the failed save are gone
    with Library(lib_dir, model=encoder, progress=False, readonly=True) as lib:
        ann = AnnIndex.open(lib_dir, encoder.dim, lib.catalog, rebuild_if_stale=False)
        assert ann.source == "loaded" and len(ann) == 300


# -- a damaged HNSW cache -------------------------------------------------------------------------
def flip_bit(path: Path, fraction: float, bit: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * fraction)] ^= 1 << bit
    path.write_bytes(bytes(data))


HNSW_DAMAGE = {
    "truncated to half": lambda m: os.truncate(m["hnsw"], os.path.getsize(m["hnsw"]) // 2),
    "truncated to nothing": lambda m: os.truncate(m["hnsw"], 0),
    "last byte cut": lambda m: os.truncate(m["hnsw"], os.path.getsize(m["hnsw"]) - 1),
    "bit flip at 25%": lambda m: flip_bit(m["hnsw"], 0.25),
    "bit flip at 50%": lambda m: flip_bit(m["hnsw"], 0.50, 7),
    "bit flips at 75% and 90%": lambda m: (flip_bit(m["hnsw"], 0.75), flip_bit(m["hnsw"], 0.9, 0)),
    "bit flip in the ids": lambda m: flip_bit(m["ids"], 0.9),
    "sidecar cut short": lambda m: os.truncate(m["sidecar"], 40),
}


@pytest.fixture(scope="module")
def built_library(tmp_path_factory, encoder):
    base = tmp_path_factory.mktemp("ann-damage")
    make_notes(base / "docs", 200)
    with Library(base / "lib", model=encoder, progress=False) as lib:
        lib.add(base / "docs")
        expected = [h.path for h in lib.search("the bread we baked on day 42", k=3, mode="vector")]
    return base / "lib", expected


@pytest.mark.parametrize("damage", HNSW_DAMAGE)
def test_a_truncated_or_bit_flipped_hnsw_cache_is_rebuilt(tmp_path, built_library, encoder, damage):
    template, expected = built_library
    lib_dir = tmp_path / "lib"
    shutil.copytree(template, lib_dir)
    meta = json.loads((lib_dir / "ann.json").read_text())
    HNSW_DAMAGE[damage]({"hnsw": lib_dir / meta["hnsw_file"], "ids": lib_dir / meta["ids_file"],
                         "sidecar": lib_dir / "ann.json"})
    with Library(lib_dir, model=encoder, progress=False, readonly=True) as reader:  # never writes: exact search
        assert [h.path for h in reader.search("the bread we baked on day 42", k=3, mode="vector")] == expected
    with Library(lib_dir, model=encoder, progress=False) as writer:  # a writer rebuilds the cache
        assert [h.path for h in writer.search("the bread we baked on day 42", k=3, mode="vector")] == expected
        ann = AnnIndex.open(lib_dir, encoder.dim, writer.catalog, rebuild_if_stale=False)
        assert ann.source == "loaded" and ann.generation == writer.catalog.generation
        assert np.array_equal(ann.ids(), writer.catalog.all_ids())


def test_a_damaged_hnsw_cache_through_the_command_line(tmp_path, built_library):
    template, expected = built_library
    lib_dir = tmp_path / "lib"
    shutil.copytree(template, lib_dir)
    flip_bit(lib_dir / json.loads((lib_dir / "ann.json").read_text())["hnsw_file"], 0.5)
    found = cli(lib_dir, "search", "--json", "-k", "3", "the bread we baked on day 42")
    assert found.returncode == 0, found.stderr
    assert [h["path"] for h in json.loads(found.stdout)["hits"]] == expected
    assert cli(lib_dir, "sync").returncode == 0
    status = json.loads(cli(lib_dir, "status", "--json").stdout)
    assert status["index_generation"] == status["generation"]


# -- a damaged catalog ----------------------------------------------------------------------------
def overwrite_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    middle = len(data) // page // 2 * page
    data[middle : middle + 3 * page] = np.random.default_rng(0).bytes(3 * page)
    path.write_bytes(bytes(data))


def overwrite_inside(needle: bytes, everywhere: bool = False):
    """Damage a record's bytes (invalid UTF-8) without touching any page structure: quick_check
    on open cannot see it; the first query that reads the record does."""
    def damage(path: Path) -> None:
        data = path.read_bytes()
        assert needle in data, needle
        data = data.replace(needle, needle[:-2] + b"\xff\xfe", -1 if everywhere else 1)
        path.write_bytes(data)
    return damage


CATALOG_DAMAGE = {
    "garbage pages in the middle": (overwrite_pages, True),
    "truncated to half": (lambda p: os.truncate(p, os.path.getsize(p) // 2), True),
    "invalid text in a chunk": (overwrite_inside(b"unique token zq0007x.\nA short"), False),
    "invalid text in a path": (overwrite_inside(b"note-0011.txt", everywhere=True), False),
}


@pytest.mark.parametrize("damage", CATALOG_DAMAGE)
def test_a_damaged_catalog_is_a_one_line_error_naming_the_recovery(tmp_path, built_library, damage):
    template, _ = built_library
    lib_dir = tmp_path / "lib"
    shutil.copytree(template, lib_dir)
    make, always_fails = CATALOG_DAMAGE[damage]
    make(lib_dir / "catalog.db")
    commands = [("search", "--mode", "keyword", "zq0007x"), ("search", "--mode", "vector", "bread day 7"),
                ("search", "--mode", "hybrid", "note 11"), ("status",), ("sync",)]
    failed = 0
    for command in commands:
        proc = cli(lib_dir, *command)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, (command, proc.stderr)
        if proc.returncode == 1:
            error = one_line_error(proc)
            assert all(r in error for r in RECOVERY) and str(lib_dir) in error, (command, error)
            failed += 1
    assert failed == len(commands) if always_fails else failed >= 1, damage
