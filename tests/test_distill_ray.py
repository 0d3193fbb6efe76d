"""`edge-dse distill --ray`: stage 1's vectors and the teacher's scores computed on a real local Ray
cluster (the cluster extra) are the local run's, in the same files, and a stopped run resumes
with only the missing pieces. Real models: the shipped baseline encoder and teacher. The Ray
tests are skipped only where ray is missing."""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, TOPICS, needs_ray, shipped_model_dir
from edge_dse.distill import candidates as cand_mod
from edge_dse.distill import hpd_texts, hpd_vectors, pipeline
from edge_dse.distill.data import Pair, write_jsonl
from edge_dse.errors import EdgeDSEError

SHARD = 64  # small shards: a few hundred texts make several pieces
TEACHER = REPO / "assets" / "teacher"


class Stopped(Exception):
    """Ends a run the way a killed driver does: after some pieces were committed."""


def stopped_after(mapper, pieces_kept: int):
    """A map function that hands back `pieces_kept` results of `mapper`, then stops the run
    (closing mapper's iterator, as an interrupted run's exit does)."""
    def run(fn, pieces):
        results = mapper(fn, pieces)
        try:
            for _ in range(pieces_kept):
                yield next(results)
        finally:
            results.close()
        raise Stopped

    return run


def stdlib_pairs(limit: int = 80) -> list[Pair]:
    """Human-written pairs: a standard-library module's synopsis line and the start of its
    docstring (read with ast, never imported)."""
    pairs = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            doc = (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").strip()
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        synopsis, _, body = doc.partition("\n")
        body = " ".join(body.split())
        if path.name.startswith("_") or len(synopsis) < 10 or len(body) < 80:
            continue
        pairs.append(Pair(synopsis.strip(), body[:400], f"debian:{path.stem}", "debian"))
        if len(pairs) >= limit:
            break
    return pairs


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> tuple[Path, int]:
    """Stage 1's text set (hpd_texts) of the stdlib pairs, and a pair count needing ~250 texts."""
    root = tmp_path_factory.mktemp("hpd")
    (root / "data").mkdir()
    write_jsonl(stdlib_pairs(), root / "data" / "debian.train.jsonl")
    hpd_texts.build(root / "data", root / "texts", sources=("debian",), gcide_root=None, faq=None)
    _, pairs = hpd_texts.read(root / "texts")
    n_pairs = next((n for n in range(1, len(pairs) + 1) if len(hpd_texts.texts_in_order(pairs, n)) >= 250), len(pairs))
    assert len(hpd_texts.texts_in_order(pairs, n_pairs)) > 3 * SHARD, "too few texts for several shards"
    return root / "texts", n_pairs


def shards(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(folder.glob("shard-*.npy"))}


@pytest.fixture(scope="module")
def local_vectors(texts, tmp_path_factory) -> Path:
    text_dir, n_pairs = texts
    out = tmp_path_factory.mktemp("local") / "vectors"
    hpd_vectors.label(text_dir, out, hpd_vectors.onnx_labeller(shipped_model_dir(), max_length=128), n_pairs=n_pairs,
                      shard=SHARD, log=lambda line: None)
    return out


def assert_same_vectors(got: Path, want: Path) -> None:
    a, b = shards(got), shards(want)
    assert a.keys() == b.keys() and len(a) > 3, (a.keys(), b.keys())
    assert [len(v) for v in a.values()] == [len(v) for v in b.values()]
    worst = max(float(np.abs(a[k].astype(np.float32) - b[k].astype(np.float32)).max()) for k in a)
    print(f"\nray vs local vectors: {len(a)} shards, {sum(map(len, a.values()))} texts, max abs difference {worst:.5f}")
    # float16 unit vectors; one onnxruntime thread on a worker vs two here: rounding, nothing more
    assert worst < 2e-3
    assert json.loads((got / "info.json").read_text()) == json.loads((want / "info.json").read_text())


@needs_ray
def test_stage1_vectors_on_ray_are_the_local_ones(ray_cluster, texts, local_vectors, tmp_path):
    from edge_dse.distill.ray_steps import RayMap

    text_dir, n_pairs = texts
    logs: list[str] = []
    with RayMap(ray_cluster["address"]) as ray_map:
        n = hpd_vectors.label(text_dir, tmp_path / "vectors", hpd_vectors.onnx_labeller(shipped_model_dir(), max_length=128),
                              n_pairs=n_pairs, shard=SHARD, log=logs.append, mapper=ray_map)
    assert n == len(hpd_texts.texts_in_order(hpd_texts.read(text_dir)[1], n_pairs))
    assert len(logs) == len(shards(local_vectors))  # one commit a shard, in order
    assert sorted(p.name for p in (tmp_path / "vectors").iterdir()) == sorted(p.name for p in local_vectors.iterdir())
    assert_same_vectors(tmp_path / "vectors", local_vectors)


@needs_ray
def test_a_stopped_ray_labelling_keeps_its_shards_and_resumes_with_the_missing_ones(ray_cluster, texts, local_vectors, tmp_path):
    from edge_dse.distill.ray_steps import RayMap

    text_dir, n_pairs = texts
    out = tmp_path / "vectors"
    labeller = hpd_vectors.onnx_labeller(shipped_model_dir(), max_length=128)
    with RayMap(ray_cluster["address"]) as ray_map:
        with pytest.raises(Stopped):
            hpd_vectors.label(text_dir, out, labeller, n_pairs=n_pairs, shard=SHARD, log=lambda line: None,
                              mapper=stopped_after(ray_map, 1))
        kept = sorted(out.glob("shard-*.npy"))
        assert [p.name for p in kept] == ["shard-00000.npy"]  # committed; the pieces in flight are lost
        assert not list(out.glob(".*tmp*"))  # and nothing half-written
        before = kept[0].stat().st_mtime_ns, kept[0].read_bytes()
        logs: list[str] = []
        hpd_vectors.label(text_dir, out, labeller, n_pairs=n_pairs, shard=SHARD, log=logs.append, mapper=ray_map)
    assert (kept[0].stat().st_mtime_ns, kept[0].read_bytes()) == before  # kept, not recomputed
    assert len(logs) == len(shards(local_vectors)) - 1  # only the missing shards were computed
    assert_same_vectors(out, local_vectors)
    # and the folder is the local run's: a local run finds nothing to do
    again: list[str] = []
    hpd_vectors.label(text_dir, out, lambda batch: pytest.fail("a complete folder was labelled again"),
                      n_pairs=n_pairs, shard=SHARD, log=again.append)
    assert again == []


@needs_ray
def test_a_killed_driver_loses_only_the_shards_in_flight_and_a_local_run_resumes(ray_cluster, texts, tmp_path):
    text_dir, n_pairs = texts
    out = tmp_path / "vectors"
    total = -(-len(hpd_texts.texts_in_order(hpd_texts.read(text_dir)[1], n_pairs)) // 16)  # shards of 16: many pieces
    driver = ("import sys\nfrom pathlib import Path\nfrom edge_dse.distill import hpd_vectors\n"
              "from edge_dse.distill.ray_steps import RayMap\n"
              "with RayMap(sys.argv[3]) as ray_map:\n"
              "    hpd_vectors.label(Path(sys.argv[1]), Path(sys.argv[2]), hpd_vectors.onnx_labeller(sys.argv[4], max_length=128),\n"
              "                      n_pairs=int(sys.argv[5]), shard=16, mapper=ray_map)\n")
    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", driver, str(text_dir), str(out), ray_cluster["address"],
                                 str(shipped_model_dir()), str(n_pairs)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    try:
        while len(list(out.glob("shard-*.npy"))) < 2:  # the event: shards committed, as another process sees them
            assert proc.poll() is None, f"the driver ended first: {(tmp_path / 'driver.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no shard was committed through the cluster in 240 s"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    kept = sorted(p.name for p in out.glob("shard-*.npy"))
    assert 2 <= len(kept) < total, f"the kill did not land mid-run ({len(kept)} of {total} shards)"
    assert kept == [f"shard-{i:05d}.npy" for i in range(len(kept))]  # committed in order: no gap
    logs: list[str] = []
    n = hpd_vectors.label(text_dir, out, hpd_vectors.onnx_labeller(shipped_model_dir(), max_length=128), n_pairs=n_pairs,
                          shard=16, log=logs.append)  # a local run
    assert len(logs) == total - len(kept)  # it computed only what the killed run had not committed
    # The same as one uninterrupted local run at this shard size (a shard is the encoder's unit of
    # batching, and the int8 encoder's vectors move slightly with their batch-mates).
    reference = tmp_path / "reference"
    hpd_vectors.label(text_dir, reference, hpd_vectors.onnx_labeller(shipped_model_dir(), max_length=128),
                      n_pairs=n_pairs, shard=16, log=lambda line: None)
    assert_same_vectors(out, reference)


@needs_ray
def test_ray_map_hands_back_every_result_in_order_behind_a_slow_first_piece(ray_cluster):
    from edge_dse.distill.ray_steps import RayMap

    def square(i: int) -> int:  # pickled by value: the workers need no test module
        import time

        time.sleep(2.0 if i == 0 else 0.0)  # the other worker finishes (and holds) many pieces meanwhile
        return i * i

    with RayMap(ray_cluster["address"]) as ray_map:
        assert list(ray_map(square, range(20))) == [i * i for i in range(20)]
        assert list(ray_map(square, [])) == []


# -- the teacher's scores --------------------------------------------------------------------
@pytest.fixture(scope="module")
def lists(encoder, tmp_path_factory) -> tuple[Path, str, np.ndarray]:
    """Candidate lists (candidates.mine with the shipped encoder) of the topic queries."""
    pairs = [Pair(q, body, f"doc:{key}", "test") for key, (_, body, q) in TOPICS.items()]
    pairs.append(Pair("baking with a starter", TOPICS["bread"][1], "doc:bread", "test"))
    pairs.append(Pair("bread crust", "Bread crust gets crisp in a hot oven; a covered pot keeps steam in.", "doc:bread2", "test"))
    folder = tmp_path_factory.mktemp("cands")
    pool, cands = cand_mod.mine(pairs, encoder=encoder, n_bm25=2, n_dense=2, n_random=2, seed=1, cache_dir=folder / "v")
    cand_mod.write(pool, cands, folder, "topics.train")
    return folder, "topics.train", np.arange(len(cands))


def score_file(folder: Path) -> dict:
    with np.load(folder / "topics.train.teacher.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def local_scores(lists, tmp_path_factory) -> Path:
    cand_dir, split, rows = lists
    out = tmp_path_factory.mktemp("local-scores")
    pipeline.teacher_scores(TEACHER, cand_dir, split, rows, out, log=lambda line: None, chunk=3)
    return out


def assert_same_scores(got: Path, want: Path) -> None:
    a, b = score_file(got), score_file(want)
    assert a.keys() == b.keys() and np.array_equal(a["rows"], b["rows"]) and int(a["done"]) == int(b["done"]) == len(b["rows"])
    assert int(a["width"]) == int(b["width"])
    assert np.array_equal(np.isnan(a["scores"]), np.isnan(b["scores"]))  # the same candidates scored
    worst = float(np.nanmax(np.abs(a["scores"] - b["scores"])))
    print(f"\nray vs local teacher scores: {np.isfinite(b['scores']).sum()} pairs, max abs difference {worst:.5f}")
    assert worst < 1e-3


@needs_ray
def test_teacher_scores_on_ray_are_the_local_ones(ray_cluster, lists, local_scores, tmp_path):
    from edge_dse.distill.ray_steps import RayMap

    cand_dir, split, rows = lists
    logs: list[str] = []
    with RayMap(ray_cluster["address"]) as ray_map:
        got = pipeline.teacher_scores(TEACHER, cand_dir, split, rows, tmp_path, log=logs.append, chunk=3, mapper=ray_map)
    assert len(logs) == -(-len(rows) // 3)  # one commit a chunk of lists
    assert sorted(p.name for p in tmp_path.iterdir()) == ["topics.train.teacher.npz"]
    assert np.isfinite(got[:, 0]).all()  # every positive scored
    assert_same_scores(tmp_path, local_scores)


@needs_ray
def test_stopped_teacher_scoring_on_ray_resumes_with_the_missing_chunks(ray_cluster, lists, local_scores, tmp_path):
    from edge_dse.distill.ray_steps import RayMap

    cand_dir, split, rows = lists
    with RayMap(ray_cluster["address"]) as ray_map:
        with pytest.raises(Stopped):
            pipeline.teacher_scores(TEACHER, cand_dir, split, rows, tmp_path, log=lambda line: None, chunk=3,
                                    mapper=stopped_after(ray_map, 1))
        first = score_file(tmp_path)
        assert int(first["done"]) == 3  # the first chunk was committed
        logs: list[str] = []
        pipeline.teacher_scores(TEACHER, cand_dir, split, rows, tmp_path, log=logs.append, chunk=3, mapper=ray_map)
    assert len(logs) == -(-(len(rows) - 3) // 3)  # only the missing chunks were scored
    assert np.array_equal(score_file(tmp_path)["scores"][:3], first["scores"][:3], equal_nan=True)  # kept as saved
    assert_same_scores(tmp_path, local_scores)


# -- the command line ------------------------------------------------------------------------
def test_distill_ray_flag_sets_the_plan():
    assert pipeline.plan_from_args([])[0].ray is None
    assert pipeline.plan_from_args(["--ray"])[0].ray == "auto"
    assert pipeline.plan_from_args(["--ray", "ray://head:10001", "--tiny"])[0].ray == "ray://head:10001"
    assert pipeline.plan_from_args(["--ray=HEAD:6379"])[0].ray == "HEAD:6379"
    # where, not what: the command that re-makes a run's models does not name the cluster
    plan = pipeline.plan_from_args(["--ray", "HEAD:6379"])[0]
    assert "--ray" not in plan.command()


def test_distill_ray_without_the_cluster_extra_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from edge_dse import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where it is not installed
    assert cli.main(["distill", "--work", str(tmp_path / "work"), "--ray"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'edge-dse[cluster]'" in err[0] and "--ray" in err[0], err
    assert not (tmp_path / "work").exists()  # it failed before any step ran


def test_a_local_distill_step_never_imports_ray(texts, tmp_path):
    text_dir, n_pairs = texts
    code = ("import sys\nfrom pathlib import Path\nimport numpy as np\nfrom edge_dse.distill import hpd_vectors, pipeline\n"
            "plan, _ = pipeline.plan_from_args(['--work', sys.argv[3]])\n"
            "hpd_vectors.label(Path(sys.argv[1]), Path(sys.argv[2]), lambda b: np.ones((len(b), 4)), n_pairs=3, log=print)\n"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(text_dir), str(tmp_path / "v"), str(tmp_path / "w")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr
