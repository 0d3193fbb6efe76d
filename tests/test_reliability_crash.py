"""Crash safety: a real `edge-dse index` / `edge-dse sync` process, SIGKILLed at many points.

Each point copies a library template, starts the real command, watches the library from outside
and SIGKILLs the process at an observed state (no test hook in the product):
    commits N    the catalog's generation rose by N (one per committed file); N spread over the run
    time F       after a fraction F of a full run's duration (measured once): model load,
                 discovery, embedding
    save         a new HNSW file appeared in the library folder: the cache is being saved
    compaction   every change is committed and the deletions made the writer rebuild the HNSW
                 graph (the "sync" scenario deletes or rewrites half of the chunks)
After each kill: the library reopens; every committed file is whole (its hash is a version that
was written, its chunks are that version's, its unique token is found by keyword search) and no
chunk is duplicated; the HNSW cache, stale after the kill, is repaired by the next writer; the
next run of the command finishes the job and leaves exactly what a clean index of the folder holds.

CI runs 20 points. A stress run by hand, e.g. about 200 points (~2.5 s each):
    EDGE_DSE_CRASH_POINTS=200 python -m pytest -q -p no:cacheprovider tests/test_reliability_crash.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import shipped_model_dir
from edge_dse import Library
from edge_dse.ingest import chunk_text, extract
from edge_dse.store import AnnIndex

MODEL = str(shipped_model_dir())
N_FILES = 260  # ~310 chunks: two embedding groups of 256, so commits come in two bursts
MODIFIED = [i for i in range(N_FILES) if i % 5 in (1, 2)]  # rewritten by the "sync" scenario (40%)
DELETED = [i for i in range(N_FILES) if i % 10 == 3]       # deleted by it (10%)

# (scenario, trigger) -> points in a default run; EDGE_DSE_CRASH_POINTS scales them all.
DEFAULT_MIX = {
    ("index", "commits"): 8,
    ("index", "time"): 2,
    ("index", "save"): 2,
    ("sync", "commits"): 4,
    ("sync", "compaction"): 2,
    ("sync", "save"): 2,
}
COMPACTION_DELAYS = (0.0, 0.005, 0.02, 0.04)  # s; the rebuild, save and exit take ~0.1 s here


def crash_points() -> list[tuple[str, str, float]]:
    total = int(os.environ.get("EDGE_DSE_CRASH_POINTS", sum(DEFAULT_MIX.values())))
    scale = max(total, 20) / sum(DEFAULT_MIX.values())
    points = []
    for (scenario, trigger), n in DEFAULT_MIX.items():
        n = max(1, round(n * scale))
        changes = N_FILES if scenario == "index" else len(MODIFIED) + len(DELETED)
        for j in range(n):
            if trigger == "commits":  # spread strictly inside the run: 0 < N < all
                param = max(1, round((j + 1) / (n + 1) * changes))
            elif trigger == "time":  # a fraction of a full run; the first commit comes at ~0.6 here
                param = round(0.1 + 0.8 * j / max(1, n - 1), 3) if n > 2 else (0.15, 0.45)[j]
            elif trigger == "compaction":
                param = COMPACTION_DELAYS[j] if n <= len(COMPACTION_DELAYS) else round(0.04 * j / (n - 1), 4)
            else:
                param = 0.0005 * j  # save: kill at once, or a little later in the save
            points.append((scenario, trigger, param))
    return points


POINTS = crash_points()
OBSERVED: list[dict] = []  # what each kill saw, for the coverage check at the end


# -- the corpus: small files, each version with its own tokens ----------------------------------
WORDS = ("harbour violin glacier pepper ladder orchid tractor lantern walrus copper meadow rocket "
         "blanket canyon dentist eclipse falcon gravel hammock igloo jasmine kettle lemon marble nectar "
         "oyster parrot quartz saddle thunder umbrella volcano wagon yogurt zebra anchor biscuit cactus "
         "dolphin engine feather goblin helmet island jacket kayak ladle magnet napkin oxygen pillow "
         "quiver radish sandal tunnel unicorn vinegar whistle").split()


def content(i: int, version: str) -> str:
    """File i at a version. Every 10th file has three chunks (headings split them), so a
    half-committed multi-chunk file would show. Random words make each chunk's vector far from
    the others', so a vector stored with the wrong chunk would show too."""
    rng = np.random.default_rng(i * 7 + (version == "v2"))
    words = lambda: " ".join(rng.choice(WORDS, 5, replace=False))  # noqa: E731
    text = f"# Note {i}\n\nEntry {i} ({version}): token k{i:04d}{version}p0x, {words()}.\n"
    if i % 10 == 0:
        for part in (1, 2):
            text += f"\n## Part {part}\n\nMore of entry {i}: token k{i:04d}{version}p{part}x, {words()}.\n"
    return text


def path_of(docs: Path, i: int) -> Path:
    return docs / f"note-{i:04d}.md"


@dataclass
class Version:
    chunks: list[tuple]  # (start, end, heading, text)
    token: str


@dataclass
class CrashSetup:
    base: Path
    docs: Path
    pristine: Path  # the folder at v1, with the mtimes the "sync" template recorded
    templates: dict  # scenario -> library folder to copy
    clean: dict  # scenario -> the chunk table of a clean index of the folder at its final state
    clean_vectors: dict  # scenario -> {(path, start, end): vector}
    versions: dict  # path -> {sha256: Version}
    dim: int
    index_seconds: float = 0.0  # how long an uninterrupted `edge-dse index` of the folder takes

    def reset_folder(self, scenario: str) -> None:
        shutil.rmtree(self.docs, ignore_errors=True)
        shutil.copytree(self.pristine, self.docs)  # copy2 keeps mtimes: v1 files read as unchanged
        if scenario == "sync":
            apply_v2(self.docs)


def apply_v2(docs: Path) -> None:
    for i in MODIFIED:
        path_of(docs, i).write_text(content(i, "v2"), encoding="utf-8")
    for i in DELETED:
        path_of(docs, i).unlink()


def chunk_table(lib: Library) -> list[tuple]:
    return sorted(lib.catalog.db.execute('select path, "start", "end", heading, text from chunks'))


def vectors_of(lib: Library) -> dict:
    return {(p, s, e): np.frombuffer(v, dtype=np.float32)
            for p, s, e, v in lib.catalog.db.execute('select path, "start", "end", vector from chunks')}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, encoder) -> CrashSetup:
    base = tmp_path_factory.mktemp("crash")
    pristine, docs = base / "pristine", base / "docs"
    pristine.mkdir()
    versions: dict = {}
    for i in range(N_FILES):
        for version in ("v1", "v2"):
            text = content(i, version)
            chunks = chunk_text(extract(path_of(docs, i), text.encode()))
            versions.setdefault(str(path_of(docs, i)), {})[hashlib.sha256(text.encode()).hexdigest()] = Version(
                [(c.start, c.end, c.heading, c.text) for c in chunks], f"k{i:04d}{version}p0x")
        path_of(pristine, i).write_text(content(i, "v1"), encoding="utf-8")
    shutil.copytree(pristine, docs)

    templates, clean, clean_vectors = {"index": base / "tpl-index", "sync": base / "tpl-sync"}, {}, {}
    Library(templates["index"], model=encoder, progress=False).close()  # empty, model recorded
    with Library(templates["sync"], model=encoder, progress=False) as lib:  # v1 indexed, cache saved
        lib.add(docs)
        clean["index"], clean_vectors["index"] = chunk_table(lib), vectors_of(lib)
    apply_v2(docs)
    with Library(base / "clean-v2", model=encoder, progress=False) as lib:
        lib.add(docs)
        clean["sync"], clean_vectors["sync"] = chunk_table(lib), vectors_of(lib)
    shutil.rmtree(base / "clean-v2")
    shutil.copytree(templates["sync"], base / "synced")
    with Library(base / "synced", model=encoder, progress=False) as lib:  # the "sync" scenario, uninterrupted
        lib.sync()
        assert lib.ann_index().source == "rebuilt: compaction", lib.ann_index().source  # so its kills can land in one
        assert chunk_table(lib) == clean["sync"]
    shutil.rmtree(base / "synced")
    setup = CrashSetup(base, docs, pristine, templates, clean, clean_vectors, versions, encoder.dim)

    # One uninterrupted run of the real command: its duration scales the "time" points, and
    # it must give what the in-process index gave.
    setup.reset_folder("index")
    shutil.copytree(templates["index"], base / "full")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edge_dse.cli", "-q", "-l", str(base / "full"), "--model", MODEL,
                           "index", str(docs)], capture_output=True, text=True, timeout=300)
    setup.index_seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    with Library(base / "full", model=encoder, progress=False) as lib:
        assert chunk_table(lib) == clean["index"]
    shutil.rmtree(base / "full")
    return setup


# -- watching and killing -------------------------------------------------------------------------
def generation(con: sqlite3.Connection) -> int:
    try:
        return int(con.execute("select value from meta where key = 'generation'").fetchone()[0])
    except (sqlite3.Error, TypeError):
        return -1


def hnsw_files(lib_dir: Path) -> set[str]:
    try:
        return {n for n in os.listdir(lib_dir) if n.endswith(".hnsw")}
    except OSError:
        return set()


def run_and_kill(lib_dir: Path, docs: Path, scenario: str, trigger: str, param: float, g_final: int,
                 full_run_s: float) -> dict:
    """Start the real command, SIGKILL it at the observed state; returns what was seen."""
    command = ["index", str(docs)] if scenario == "index" else ["sync"]
    con = sqlite3.connect(f"file:{lib_dir / 'catalog.db'}?mode=ro", uri=True, timeout=10, isolation_level=None)
    g0, before = generation(con), hnsw_files(lib_dir)
    proc = subprocess.Popen([sys.executable, "-m", "edge_dse.cli", "-q", "-l", str(lib_dir), "--model", MODEL,
                             *command], stderr=subprocess.PIPE)
    started = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - started < 240:
            if trigger == "time":
                hit = time.monotonic() - started >= param * full_run_s
            elif trigger == "save":
                hit = bool(hnsw_files(lib_dir) - before)
            elif trigger == "commits":
                hit = generation(con) >= g0 + param
            else:  # compaction
                hit = generation(con) >= g_final
            if hit:
                if param and trigger in ("save", "compaction"):
                    time.sleep(param)
                proc.kill()
                break
            time.sleep(0.0002 if trigger == "save" else 0.001)
        proc.wait()
        g_kill = generation(con)
    finally:
        con.close()
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    assert "Traceback" not in stderr, stderr
    new = hnsw_files(lib_dir) - before
    try:
        in_use = json.loads((lib_dir / "ann.json").read_text())["hnsw_file"]
    except (OSError, ValueError, KeyError):
        in_use = None
    # A new HNSW file the sidecar does not name: the save was cut before its commit point.
    return {"rc": proc.returncode, "g0": g0, "committed": g_kill - g0, "mid_save": bool(new) and in_use not in new}


@pytest.mark.parametrize("point", range(len(POINTS)), ids=[f"{k}-{s}-{t}-{p:g}" for k, (s, t, p) in enumerate(POINTS)])
def test_a_killed_writer_loses_nothing_and_the_next_sync_finishes(setup, encoder, point):
    scenario, trigger, param = POINTS[point]
    g_final = N_FILES if scenario == "index" else N_FILES + len(MODIFIED) + len(DELETED)
    for attempt in range(3):  # a save lasts milliseconds: the watcher may miss it, then try again
        lib_dir = setup.base / f"lib-{point}-{attempt}"
        setup.reset_folder(scenario)
        shutil.copytree(setup.templates[scenario], lib_dir)
        seen = run_and_kill(lib_dir, setup.docs, scenario, trigger, param, g_final, setup.index_seconds)
        if seen["rc"] == -9:
            break
        shutil.rmtree(lib_dir)
    assert seen["rc"] == -9, f"the process ended ({seen['rc']}) before it could be killed at {trigger} {param}"
    if trigger == "commits":
        assert param <= seen["committed"] < g_final - seen["g0"], seen

    # Reopening works (quick_check on open) and the file is sound.
    lib = Library(lib_dir, model=encoder, progress=False)
    try:
        check_committed_state(lib, setup)
        info = lib.status()
        seen.update(trigger=trigger, scenario=scenario, stale=info["index_generation"] != info["generation"],
                    sidecar=(lib_dir / "ann.json").is_file())
        OBSERVED.append(seen)

        # The HNSW cache, stale after most kills, is brought in line by the next writer.
        lib.search("garden entry", k=3, mode="vector")
        check_cache_current(lib, setup.dim)

        # Running the command again does the rest (`index` again: a kill may even have come before
        # the folder was recorded); the result is a clean index of the folder.
        ok_before = sum(r.status == "ok" for r in lib.catalog.files_in(str(setup.docs)).values())
        report = lib.add(setup.docs) if scenario == "index" else lib.sync()
        assert report.failed == 0, report.errors
        if scenario == "index":
            assert (report.added, report.unchanged) == (N_FILES - ok_before, ok_before), report.summary()
        assert chunk_table(lib) == setup.clean[scenario]
        # Each chunk's vector is its own text's: the clean index's vector for the same chunk is
        # its nearest (int8 dynamic quantisation makes vectors vary a little with the batch).
        clean = setup.clean_vectors[scenario]
        keys = sorted(clean)
        sims = np.stack([vectors_of(lib)[key] for key in keys]) @ np.stack([clean[key] for key in keys]).T
        assert (sims.argmax(axis=1) == np.arange(len(keys))).all() and sims.diagonal().min() > 0.95
        check_cache_current(lib, setup.dim)
        names = sorted(n for n in os.listdir(lib_dir) if n.startswith("ann"))
        assert len(names) == 3 and not any(n.endswith(".tmp") for n in names), names  # stale saves cleaned up
        hits = lib.search("token k0150v1p0x", k=3, mode="hybrid")
        assert hits[0].path == str(path_of(setup.docs, 150))
    finally:
        lib.close()
    shutil.rmtree(lib_dir)


def check_committed_state(lib: Library, setup: CrashSetup) -> None:
    cat = lib.catalog
    assert cat.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = cat.files_in(str(setup.docs))
    chunks = list(cat.db.execute('select path, "start", "end", heading, text from chunks order by id'))
    keys = [c[:3] for c in chunks]
    assert len(keys) == len(set(keys)), "duplicate chunks"
    by_path: dict[str, list[tuple]] = {}
    for path, *rest in chunks:
        by_path.setdefault(path, []).append(tuple(rest))
    assert set(by_path) <= set(rows), "chunks of a file the catalog does not list"
    for path, row in rows.items():
        assert row.status == "ok", (path, row.error)
        version = setup.versions[path].get(row.sha256)
        assert version is not None, f"{path}: a hash no written version has"
        assert by_path.get(path, []) == version.chunks and row.n_chunks == len(version.chunks), path
        hits = lib.search(version.token, k=3, mode="keyword")
        assert hits and hits[0].path == path, (path, version.token)


def check_cache_current(lib: Library, dim: int) -> None:
    saved = AnnIndex.open(lib.path, dim, lib.catalog, rebuild_if_stale=False)
    assert saved.source == "loaded" and saved.generation == lib.catalog.generation, saved.source
    assert np.array_equal(saved.ids(), lib.catalog.all_ids())


def test_the_kills_landed_all_over_the_run():
    """The points above are only worth their number if the kills hit different states."""
    if len(OBSERVED) < len(POINTS):
        pytest.skip("runs only after every crash point ran")
    index_commits = {o["committed"] for o in OBSERVED if o["scenario"] == "index" and o["trigger"] == "commits"}
    assert len(index_commits) >= 0.8 * DEFAULT_MIX[("index", "commits")], sorted(index_commits)
    assert any(o["committed"] == 0 for o in OBSERVED), "no kill before the first commit"
    assert any(o["stale"] and o["committed"] == N_FILES for o in OBSERVED if o["scenario"] == "index"), \
        "no kill between the last commit and the cache save"
    assert any(o["mid_save"] for o in OBSERVED if o["trigger"] == "save"), "no kill in the middle of a save"
    assert any(o["stale"] for o in OBSERVED if o["trigger"] == "compaction"), "no kill before the compacted cache was saved"
