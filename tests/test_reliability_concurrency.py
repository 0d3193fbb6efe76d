"""Concurrency with real processes: two writers at once, and readers searching in a loop while
a writer syncs a folder whose files keep changing."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import run_cli, shipped_model_dir
from edge_dse import Library
from edge_dse.ingest import chunk_text, extract

MODEL = str(shipped_model_dir())


def cli_popen(lib: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_dse.cli", "-q", "-l", str(lib), "--model", MODEL, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def make_folder(folder: Path, tag: str, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"{tag}-{i:03d}.txt").write_text(f"Note {i} of {tag}: token {tag}{i:03d}z, the weather report.\n",
                                                    encoding="utf-8")


def test_two_writers_at_once_one_proceeds_and_the_other_is_refused_or_waits(tmp_path):
    lib = tmp_path / "lib"
    for n, (a, b) in enumerate([("alpha", "beta"), ("gamma", "delta")]):  # a new library, then an existing one
        make_folder(tmp_path / a, a, 150)
        make_folder(tmp_path / b, b, 150)
        procs = [cli_popen(lib, "index", str(tmp_path / a)), cli_popen(lib, "index", str(tmp_path / b))]
        outs = [p.communicate(timeout=300) for p in procs]
        codes = [p.returncode for p in procs]
        assert sorted(codes) == [0, 1], (n, codes, [e for _, e in outs])
        winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
        err = outs[loser][1]
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"edge-dse: error: library {lib} is being written by another process (pid ")
        # the pid of the winner (or "unknown" in the microseconds before it writes its pid)
        assert f"(pid {procs[winner].pid}, since" in err or "(pid unknown" in err, err
        assert "retry with --wait SECONDS" in err

    # With --wait, the second writer waits for the first, then does its own work.
    make_folder(tmp_path / "eps", "eps", 150)
    make_folder(tmp_path / "zeta", "zeta", 150)
    procs = [cli_popen(lib, "--wait", "300", "index", str(tmp_path / f)) for f in ("eps", "zeta")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    with Library(lib, model=MODEL, progress=False, readonly=True) as reader:
        folders = reader.status()["folders_detail"]
        assert folders[str(tmp_path / "eps")] == folders[str(tmp_path / "zeta")] == 150
        for tag in ("eps", "zeta"):
            hits = reader.search(f"{tag}042z", mode="keyword")
            assert [h.path for h in hits] == [str(tmp_path / tag / f"{tag}-042.txt")]


# -- readers while a writer syncs -----------------------------------------------------------------
N_FILES, ROUNDS = 40, 4
WORDS = "harbour violin glacier pepper ladder orchid tractor lantern walrus copper meadow rocket".split()


def versioned(i: int, v: int) -> str:
    """File i at version v: three chunks (headings split them), every chunk tagged with the
    file and the version, so a reader can tell which version each hit comes from."""
    rng = random.Random(i * 100 + v)
    return "".join(f"# f{i:03d} v{v} part {p}\n\nf{i:03d} v{v} p{p}: {' '.join(rng.sample(WORDS, 6))}.\n\n"
                   for p in range(3))


READER = textwrap.dedent("""
    import json, os, random, sys, traceback
    from edge_dse import Library

    lib_dir, model, plan_path, stop_path, seed = sys.argv[1:6]
    plan = json.load(open(plan_path, encoding="utf-8"))
    # path -> {chunk text: version}: every chunk text a committed version of the file can hold
    allowed = {p: {t: v for v, texts in enumerate(vs) for t in texts} for p, vs in plan["versions"].items()}
    rng = random.Random(int(seed))
    stats = {"searches": 0, "hits": 0, "opens": 0}
    lib = None
    try:
        while not os.path.exists(stop_path):
            if stats["searches"] % 10 == 0:  # also open the library anew, mid-sync
                if lib is not None:
                    lib.close()
                lib = Library(lib_dir, model=model, readonly=True, progress=False)
                stats["opens"] += 1
            mode = rng.choice(["keyword", "keyword", "hybrid", "vector"])
            query = f"f{rng.randrange(plan['n_files']):03d}" if mode == "keyword" else rng.choice(plan["queries"])
            hits = lib.search(query, k=12, mode=mode)
            stats["searches"] += 1
            version_of = {}
            for h in hits:
                texts = allowed.get(h.path)
                assert texts is not None, f"a hit in a file never written: {h.path}"
                assert h.text in texts, f"a hit that is no committed version of {h.path}: {h.text!r}"
                v = texts[h.text]
                assert version_of.setdefault(h.path, v) == v, f"{h.path}: versions {version_of[h.path]}, {v} at once"
                stats["hits"] += 1
    except BaseException:
        stats["error"] = traceback.format_exc()
    print(json.dumps(stats), flush=True)
""")


def write_atomically(path: Path, text: str) -> None:
    """As editors save: a reader of the folder sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def test_readers_never_fail_nor_see_a_half_written_file_while_a_writer_syncs(tmp_path, encoder):
    folder, lib_dir = tmp_path / "docs", tmp_path / "lib"
    folder.mkdir()
    paths = [folder / f"doc-{i:03d}.md" for i in range(N_FILES)]
    plan = {"n_files": N_FILES, "queries": ["violin harbour", "copper walrus meadow", "f007 v2 p1", "rocket"],
            "versions": {str(p): [[c.text for c in chunk_text(extract(p, versioned(i, v).encode()))]
                                  for v in range(ROUNDS + 1)] for i, p in enumerate(paths)}}
    (tmp_path / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    for i, p in enumerate(paths):
        p.write_text(versioned(i, 0), encoding="utf-8")
    with Library(lib_dir, model=encoder, progress=False) as lib:
        lib.add(folder)

    stop = tmp_path / "stop"
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(lib_dir), MODEL, str(tmp_path / "plan.json"),
                                 str(stop), str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for seed in (1, 2)]
    try:
        rng = random.Random(0)
        for v in range(1, ROUNDS + 1):
            sync = cli_popen(lib_dir, "sync")
            time.sleep(rng.uniform(0, 0.4))
            # Change files while the sync runs: rewrite a third, delete two, bring back the deleted.
            for i in rng.sample(range(N_FILES), N_FILES // 3):
                write_atomically(paths[i], versioned(i, v))
            for p in paths:
                if not p.exists():
                    write_atomically(p, versioned(paths.index(p), v))
            for i in rng.sample(range(N_FILES), 2):
                paths[i].unlink()
            during = run_cli("-l", str(lib_dir), "--model", MODEL, "search", "--json", "--mode", "hybrid", "violin")
            assert during.returncode == 0 and "Traceback" not in during.stderr, during.stderr
            assert json.loads(during.stdout)["hits"]
            _, err = sync.communicate(timeout=300)
            assert sync.returncode == 0, err
        final = cli_popen(lib_dir, "sync")  # nothing changes now: the library must catch up exactly
        assert final.wait(timeout=300) == 0, final.stderr.read()
    finally:
        stop.touch()
        results = []
        for r in readers:
            out, err = r.communicate(timeout=120)
            results.append((out, err))
    for out, err in results:
        assert out.strip(), err
        stats = json.loads(out.strip().splitlines()[-1])
        assert "error" not in stats, stats["error"]
        assert stats["searches"] >= 20 and stats["hits"] > 0 and stats["opens"] >= 2, stats

    with Library(lib_dir, model=encoder, progress=False) as lib, \
            Library(tmp_path / "fresh", model=encoder, progress=False) as fresh:
        fresh.add(folder)
        table = 'select path, "start", "end", heading, text from chunks'
        assert sorted(lib.catalog.db.execute(table)) == sorted(fresh.catalog.db.execute(table))
