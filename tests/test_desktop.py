"""The desktop program from source (`python -m edge_dse.desktop`): the same code the bundle runs,
checked here without building it (tests/test_bundle.py builds and runs the real bundle)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from edge_dse.desktop import _cli_command
from edge_dse.selftest import CASES, DOCS, run


def desktop(*args: str, home, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, EDGE_DSE_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "edge_dse.desktop", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


def test_selftest_searches_the_shipped_documents_and_says_whether_it_reranked(tmp_path):
    done = desktop("--selftest", home=tmp_path / "home")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("selftest: search ok") == len(CASES)
    if (REPO / "assets" / "teacher").is_dir():
        assert done.stdout.count("selftest: rerank ok") == len(CASES), done.stdout
    else:
        assert "rerank SKIPPED: no teacher ships" in done.stdout
    assert done.stdout.rstrip().endswith("selftest: PASSED")
    # A throwaway library: the user's library is not created by a selftest.
    assert not (tmp_path / "home").exists()


def test_selftest_reranks_with_a_teacher(tmp_path):
    # Any encoder asset serves as a (bi-encoder) teacher: the rerank path runs even before one ships.
    done = desktop("--selftest", "--teacher", str(REPO / "assets" / "baseline"), home=tmp_path / "home")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("selftest: rerank ok") == len(CASES)
    assert "SKIPPED" not in done.stdout


def test_selftest_fails_when_a_document_is_not_found(tmp_path, capsys):
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    # Swap two documents' contents: each query now finds the other file first.
    a, b = docs / "sleep.md", docs / "sourdough.txt"
    text_a, text_b = a.read_text(), b.read_text()
    a.write_text(text_b)
    b.write_text(text_a)
    assert run(docs=docs) == 1
    out = capsys.readouterr().out
    assert out.count("selftest: search FAIL") == 2 and out.rstrip().endswith("FAILED")


def test_selftest_fails_when_the_shipped_documents_are_missing(tmp_path, capsys):
    assert run(docs=tmp_path) == 1
    assert "shipped documents are incomplete" in capsys.readouterr().out


def test_cli_commands_pass_through_to_the_command_line(tmp_path):
    home = tmp_path / "home"
    indexed = desktop("index", str(DOCS), home=home)
    assert indexed.returncode == 0, indexed.stderr
    assert (home / "catalog.db").is_file()
    query, expected = CASES[0]
    found = desktop("--library", str(home), "search", query, "-k", "1", home=tmp_path / "elsewhere")
    assert found.returncode == 0, found.stderr
    assert expected in found.stdout.splitlines()[0]
    # A user mistake is the command line's one-line error, not a traceback.
    bad = desktop("index", str(tmp_path / "no-such-folder"), home=home)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "not a folder" in bad.stderr


@pytest.mark.parametrize("argv, command", [
    (["search", "bread"], "search"),
    (["--library", "search", "status"], "status"),  # an option's value is not the command
    (["-q", "--threads", "2", "index", "x"], "index"),
    (["--no-browser"], None),
    (["--selftest", "--teacher", "search"], None),  # --teacher is the app's own option
    ([], None),
])
def test_which_arguments_go_to_the_command_line(argv, command):
    assert _cli_command(argv) == command
