"""Indexing through a real local Ray cluster (the cluster extra): same chunks and vectors as a local
sync, a crashing worker, a killed driver, the command line. Skipped only where ray is missing."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TOPICS, needs_ray, run_cli, shipped_model_dir
from edge_dse import Library
from edge_dse.errors import EdgeDSEError


def chunks_of(lib: Library) -> dict:
    """(path, start, end, heading, text) -> vector, for every chunk in a library."""
    import numpy as np

    rows = lib.catalog._conn.execute('SELECT path, "start", "end", heading, text, vector FROM chunks').fetchall()
    return {tuple(r[:5]): np.frombuffer(r[5], dtype=np.float32) for r in rows}


def local_index(folder: Path, path: Path) -> dict:
    with Library(path, model=shipped_model_dir(), progress=False) as lib:
        report = lib.add(folder)
        assert report.failed == 0, report.errors
        return chunks_of(lib)


def test_import_edge_dse_does_not_import_ray():
    code = "import sys, edge_dse, edge_dse.library, edge_dse.cli, edge_dse.cluster; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_ray_a_cluster_sync_names_the_extra(tmp_path, corpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where it is not installed
    with Library(tmp_path / "lib", model=shipped_model_dir(), progress=False) as lib:
        with pytest.raises(EdgeDSEError, match=r"cluster extra .*pip install 'edge-dse\[cluster\]'"):
            lib.add(corpus, cluster="auto")
        assert lib.catalog.counts()["files"] == 0


@needs_ray
@pytest.mark.parametrize("ship", ["path", "bytes"])
def test_ray_index_holds_the_same_chunks_and_vectors_as_a_local_one(ray_cluster, corpus, tmp_path, ship):
    """Every file type; real multi-chunk text too. Vectors differ only by int8 noise: the encoder
    quantises activations per batch, so a chunk's vector depends a little on the chunks batched
    with it. Measured on this corpus: min cosine 0.990, max abs diff 0.024 against a local sync."""
    import numpy as np

    from edge_dse.cluster import RayCluster
    from edge_dse.encoder import Encoder, passage_text

    for name in ("README.md", "bench/README.md"):
        (corpus / name.replace("/", "-")).write_bytes((REPO / name).read_bytes())
    local = local_index(corpus, tmp_path / "local")
    # group_bytes=1: one file per Ray task, so each file's batch can be re-made here exactly.
    spec = RayCluster(ship=ship, group_bytes=1 if ship == "path" else 64 * 1024)
    with Library(tmp_path / "ray", model=shipped_model_dir(), progress=False) as lib:
        report = lib.add(corpus, cluster=spec)
        assert (report.added, report.failed) == (len(list(corpus.iterdir())), 0), report.errors
        on_ray = chunks_of(lib)
        # By vectors: the copied README quotes this query word for word, which keyword search
        # (and so the default hybrid) rightly ranks first.
        assert lib.search(TOPICS["bike"][2], k=1, mode="vector")[0].path.endswith("bike.pdf")
    assert on_ray.keys() == local.keys()
    cosines = np.array([float(on_ray[k] @ local[k]) for k in local])
    max_abs = max(float(np.abs(on_ray[k] - local[k]).max()) for k in local)
    print(f"\nray ({ship}) vs local: {len(local)} chunks, min cosine {cosines.min():.4f}, "
          f"mean {cosines.mean():.5f}, max abs diff {max_abs:.4f}")
    # int8 noise: activations are quantised per batch, so the same chunk batched with other chunks
    # moves by about what int8 costs against fp32 (mean cosine 0.993, the baseline's card).
    assert cosines.min() > 0.98 and cosines.mean() > 0.99 and max_abs < 0.05
    if ship == "path":  # the same batches give the same vectors: the difference is batching alone
        encoder = Encoder(shipped_model_dir(), threads=1)
        for path in {k[0] for k in on_ray}:
            keys = sorted((k for k in on_ray if k[0] == path), key=lambda k: k[1])
            again = encoder.encode([passage_text(k[4], k[3]) for k in keys], kind="document")
            assert np.abs(again - np.stack([on_ray[k] for k in keys])).max() < 1e-5, path


@needs_ray
def test_ray_workers_cut_chunks_to_the_librarys_max_length(ray_cluster, corpus, tmp_path):
    """A library made with --max-length 64 gets the same 62-token chunks from the workers as from
    a local sync, not chunks cut to the model card's window."""
    from edge_dse.cluster import RayCluster

    (corpus / "README.md").write_text((REPO / "README.md").read_text(encoding="utf-8")[:8000], encoding="utf-8")
    spans = {}
    for where, cluster in (("local", None), ("ray", RayCluster())):
        with Library(tmp_path / where, model=shipped_model_dir(), max_length=64, progress=False) as lib:
            assert lib.add(corpus, cluster=cluster).failed == 0
            spans[where] = sorted(key[:3] for key in chunks_of(lib))
    assert spans["ray"] == spans["local"] and len(spans["local"]) > len(list(corpus.iterdir())) + 5


@needs_ray
def test_a_sync_with_nothing_new_never_reaches_the_cluster(corpus, tmp_path, monkeypatch):
    from edge_dse.cluster import RayIndexer

    with Library(tmp_path / "lib", model=shipped_model_dir(), progress=False) as lib:
        lib.add(corpus)
        monkeypatch.setattr(RayIndexer, "_connect", lambda self: pytest.fail("connected with nothing to embed"))
        report = lib.sync(cluster="HEAD.invalid:6379")
        assert report.unchanged == len(list(corpus.iterdir())) and report.chunks == 0


@needs_ray
def test_a_crashing_worker_retries_the_file_then_records_it_failed(ray_cluster, corpus, tmp_path):
    (corpus / "poison.txt").write_text("This file crashes the worker that extracts it.\n", encoding="utf-8")
    with Library(tmp_path / "ray", model=shipped_model_dir(), progress=False) as lib:
        report = lib.add(corpus, cluster=ray_cluster["address"])
        assert report.failed == 1 and report.added == len(list(corpus.iterdir())) - 1, report.errors
        [(path, reason)] = lib.catalog.errors()
        assert path.endswith("poison.txt") and reason.startswith("failed on the cluster:"), reason
        assert {k[0] for k in chunks_of(lib)} == {str(p) for p in corpus.iterdir() if p.name != "poison.txt"}
        tries = len(ray_cluster["poison_log"].read_text().splitlines())
        assert tries >= 2  # in its group (Ray's retry), then alone: it was retried before failing
        # A crash is the cluster's failure, not the file's: the next sync tries it again.
        again = lib.sync(cluster=ray_cluster["address"])
        assert (again.unchanged, again.failed) == (report.added, 1), again.summary()
        assert len(ray_cluster["poison_log"].read_text().splitlines()) > tries


@needs_ray
def test_a_killed_driver_loses_no_committed_file_and_a_local_sync_resumes(ray_cluster, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    topics = list(TOPICS.values())
    for i in range(40):  # one task each (group_bytes=1): commits come one file at a time
        title, body, _ = topics[i % len(topics)]
        (folder / f"note-{i:02}.md").write_text(f"# {title} ({i})\n\n" + f"{body} Note {i}.\n\n" * 4, encoding="utf-8")
    lib_path = tmp_path / "lib"
    driver = (
        "import sys\nfrom edge_dse import Library\nfrom edge_dse.cluster import RayCluster\n"
        "lib = Library(sys.argv[1], model=sys.argv[2], progress=False)\n"
        "lib.add(sys.argv[3], cluster=RayCluster(address=sys.argv[4], group_bytes=1))\n"
    )
    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", driver, str(lib_path), str(shipped_model_dir()), str(folder),
                                 ray_cluster["address"]], stdout=log, stderr=subprocess.STDOUT)
    committed = 0
    deadline = time.monotonic() + 240
    try:
        while committed < 2:  # the event: files committed in the catalog, read as another process would
            assert proc.poll() is None, f"the driver ended first: {(tmp_path / 'driver.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no file was committed through the cluster in 240 s"
            try:
                with sqlite3.connect(f"file:{lib_path / 'catalog.db'}?mode=ro", uri=True) as db:
                    committed = db.execute("SELECT count(*) FROM files WHERE status = 'ok'").fetchone()[0]
            except sqlite3.Error:
                pass  # not created yet
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Library(lib_path, model=shipped_model_dir(), progress=False) as lib:
        kept = lib.catalog.counts()["files"]
        assert 2 <= kept < 40, f"the kill did not land mid-run ({kept} files committed)"
        report = lib.sync()  # a normal, local sync
        assert (report.unchanged, report.added, report.failed) == (kept, 40 - kept, 0), report.summary()
        resumed = chunks_of(lib)
    assert resumed.keys() == local_index(folder, tmp_path / "local").keys()


@needs_ray
def test_cli_index_with_ray(ray_cluster, corpus, tmp_path):
    env = {"EDGE_DSE_HOME": str(tmp_path / "home")}
    done = run_cli("index", str(corpus), "--ray", ray_cluster["address"], "--ship-bytes",
                   "--model", str(shipped_model_dir()), env=env)
    assert done.returncode == 0, done.stderr
    assert f"{len(list(corpus.iterdir()))} added" in done.stderr and "0 failed" in done.stderr
    again = run_cli("reindex", "--ray", ray_cluster["address"], "--model", str(shipped_model_dir()), env=env)
    assert again.returncode == 0 and f"{len(list(corpus.iterdir()))} added" in again.stderr, again.stderr
    found = run_cli("search", TOPICS["bread"][2], "-k", "1", env=env)
    assert found.returncode == 0 and "bread.md" in found.stdout, found.stdout + found.stderr
    # `--ray FOLDER FOLDER2`: argparse reads the first folder as the address; say how to write it.
    wrong = run_cli("sync", "--ray", str(corpus), env=env)
    assert wrong.returncode == 1 and "put --ray after the folders" in wrong.stderr, wrong.stderr
