"""The command line, run as a user runs it: a child process, real files."""

from __future__ import annotations

import json

import numpy as np

from conftest import TOPICS, run_cli, shipped_model_dir


def test_index_search_status_remove_round_trip(tmp_path, corpus):
    env = {"EDGE_DSE_HOME": str(tmp_path / "home")}
    indexed = run_cli("index", str(corpus), env=env)
    assert indexed.returncode == 0, indexed.stderr
    assert "7 added" in indexed.stderr

    found = run_cli("search", TOPICS["bike"][2], "-k", "3", env=env)
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[0].split()[2].endswith("bike.pdf")

    as_json = json.loads(run_cli("search", "lentils", "--json", "--mode", "keyword", env=env).stdout)
    assert as_json["hits"][0]["path"].endswith("notes.txt") and as_json["mode"] == "keyword"
    assert set(as_json["hits"][0]) >= {"rank", "score", "path", "text", "start", "end", "heading"}

    status = run_cli("status", "--json", env=env)
    info = json.loads(status.stdout)
    assert info["files"] == 7 and info["folders"] == 1 and info["index_generation"] == info["generation"]

    # global options also work after the command, as users type them
    after = run_cli("search", "lentils", "--mode", "keyword", "--library", str(tmp_path / "home"), "-k", "1")
    assert after.returncode == 0 and after.stdout.split()[2].endswith("notes.txt"), after.stderr

    removed = run_cli("remove", str(corpus), env=env)
    assert removed.returncode == 0 and "7 files" in removed.stderr
    assert run_cli("search", "lentils", env=env).stdout.strip() == "no results"


def test_user_mistakes_are_one_line_errors(tmp_path):
    env = {"EDGE_DSE_HOME": str(tmp_path / "home")}
    cases = [
        ("search", "anything"),                  # no library yet
        ("index", str(tmp_path / "missing")),    # no such folder
        ("--model", "no-such-model", "index", str(tmp_path)),
        ("remove", str(tmp_path)),
        ("embed", str(tmp_path / "x.txt"), "--out", str(tmp_path / "v.npy")),
        ("embed", str(tmp_path), "--out", str(tmp_path / "v.csv")),
    ]
    for args in cases:
        proc = run_cli(*args, env=env)
        assert proc.returncode == 1, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edge-dse: error:"), (args, proc.stderr)


def test_embed_writes_vectors_and_metadata(tmp_path, corpus):
    files = [str(corpus / "bread.md"), str(corpus / "taxes.docx")]
    out = tmp_path / "vectors.npy"
    proc = run_cli("--model", str(shipped_model_dir()), "embed", *files, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    vectors = np.load(out)
    meta = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert vectors.shape[0] == len(meta) >= 2 and {m["path"] for m in meta} == set(files)
    as_jsonl = tmp_path / "vectors.jsonl"
    assert run_cli("embed", *files, "--out", str(as_jsonl)).returncode == 0
    rows = [json.loads(line) for line in as_jsonl.read_text().splitlines()]
    assert np.allclose(np.array([r["vector"] for r in rows]), vectors, atol=1e-5)


def test_status_into_a_pipe_nobody_reads_stops_quietly(tmp_path, corpus):
    """`edge-dse status | head -1`: the reader is gone before the output is written."""
    import subprocess
    import sys

    assert run_cli("-q", "-l", str(tmp_path / "lib"), "--model", str(shipped_model_dir()), "index", str(corpus)).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "edge_dse.cli", "-l", str(tmp_path / "lib"), "status"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # no reader left: the first write fails with EPIPE
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and stderr == ""


def test_a_library_that_cannot_be_written_is_a_one_line_error(tmp_path, corpus):
    import os
    import shutil
    import subprocess
    import sys

    import pytest

    # root writes anywhere; a user namespace takes that power away, so the writes fail for real.
    prefix = ["unshare", "--user"] if os.geteuid() == 0 else []
    if prefix and shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: cannot make a folder unwritable")

    def cli(*args):
        return subprocess.run(prefix + [sys.executable, "-m", "edge_dse.cli", "--model", str(shipped_model_dir()), *args],
                              capture_output=True, text=True, timeout=300)

    locked_parent = tmp_path / "ro"
    locked_parent.mkdir()
    locked_parent.chmod(0o555)
    lib = tmp_path / "lib"
    assert cli("-q", "-l", str(lib), "index", str(corpus)).returncode == 0
    (lib / "write.lock").chmod(0o444)
    try:
        new = cli("-l", str(locked_parent / "lib"), "index", str(corpus))
        sync = cli("-l", str(lib), "sync")
    finally:
        locked_parent.chmod(0o755)
    assert new.returncode == 1 and new.stderr == (f"edge-dse: error: cannot create the library at {locked_parent / 'lib'}: "
                                                   f"permission denied on {locked_parent / 'lib'}: pick a folder you can "
                                                   "write with --library DIR (or $EDGE_DSE_HOME)\n")
    assert sync.returncode == 1 and sync.stderr == (f"edge-dse: error: cannot write the library at {lib}: permission "
                                                    f"denied on {lib / 'write.lock'}: give yourself write access to the "
                                                    "folder and its files\n")
