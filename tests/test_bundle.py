"""The desktop bundle, built the way the README says from a clean copy of the checkout, then run
as a user runs it: the selftest, the command line, the UI with an API call, a second start.

Slow (a build venv, hnswlib compiled from source, PyInstaller: minutes) and needs the package
registry and g++; run it alone with `python -m pytest -m bundle`. .ci/run runs it with the rest.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = [pytest.mark.bundle, pytest.mark.slow]

# A query of the selftest set whose document is unmistakable.
QUERY, EXPECTED = "making bread with a natural leaven", "sourdough.txt"


def clean_copy(dest: Path) -> Path:
    """The checkout as a fresh clone would have it (tracked and not-ignored files): no venv,
    no build/ or dist/ left from an earlier build."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked archive)
        shutil.copytree(REPO, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "work", "test-output", "__pycache__", "*.egg-info"))
        return dest
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(checkout copy, bundle folder, build output): one build for every test of this module."""
    checkout = clean_copy(tmp_path_factory.mktemp("checkout"))
    done = subprocess.run([sys.executable, "bundle/build.py"], cwd=checkout, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return checkout, checkout / "dist" / "edge-dse-app", done.stdout


@pytest.fixture
def user_env(tmp_path):
    """A user with an empty home: the library, caches and temp files all land under tmp_path."""
    for name in ("home", "tmp", "library"):
        (tmp_path / name).mkdir()
    env = dict(os.environ, HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"),
               XDG_DATA_HOME=str(tmp_path / "home" / ".local" / "share"),
               XDG_CACHE_HOME=str(tmp_path / "home" / ".cache"), EDGE_DSE_HOME=str(tmp_path / "library"))
    for name in ("ORT_DISABLE_TELEMETRY", "GRADIO_ANALYTICS_ENABLED"):  # the bundle must switch them off itself
        env.pop(name, None)
    return env


def app(bundle: Path, *args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(bundle / "edge-dse-app"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=env["HOME"])


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_the_build_is_portable_and_holds_no_training_stack(built):
    checkout, bundle, output = built
    assert "hnswlib compiled without -march=native" in output
    internal = bundle / "_internal"
    for package in ("torch", "transformers", "optimum"):
        assert not (internal / package).exists(), f"{package} is in the bundle"
    # Whatever assets/ held at build time ships, folder by folder.
    shipped = {p.name for p in (checkout / "assets").iterdir() if p.is_dir()}
    assert shipped and {p.name for p in (internal / "assets").iterdir() if p.is_dir()} == shipped


def test_selftest_passes_and_leaves_no_telemetry(built, user_env, tmp_path):
    checkout, bundle, _ = built
    before = snapshot(bundle)
    done = app(bundle, "--selftest", env=user_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("selftest: PASSED")
    if (checkout / "assets" / "teacher").is_dir():
        assert "selftest: rerank ok" in done.stdout and "SKIPPED" not in done.stdout
    else:
        assert "rerank SKIPPED: no teacher ships" in done.stdout
    assert snapshot(bundle) == before, "the selftest wrote inside the bundle"
    # onnxruntime's telemetry files (under ~/.cache/Microsoft, written on plain import) would be here, had it not been switched off.
    assert not (tmp_path / "home" / ".cache" / "Microsoft").exists()
    assert not list((tmp_path / "tmp").glob(".ses*"))


def test_selftest_reranks_inside_the_bundle(built, user_env):
    # Until a teacher ships, a shipped encoder stands in as a (bi-encoder) teacher, so the frozen
    # rerank path runs today too.
    _, bundle, _ = built
    done = app(bundle, "--selftest", "--teacher", str(bundle / "_internal" / "assets" / "baseline"), env=user_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "selftest: rerank ok" in done.stdout and "SKIPPED" not in done.stdout


def test_the_library_lives_in_the_user_data_dir(built, user_env, tmp_path):
    _, bundle, _ = built
    env = dict(user_env)
    del env["EDGE_DSE_HOME"]  # the real default: platformdirs' user data dir
    before = snapshot(bundle)
    docs = bundle / "_internal" / "edge_dse" / "selftest_docs"
    indexed = app(bundle, "index", str(docs), env=env)
    assert indexed.returncode == 0, indexed.stderr
    assert (tmp_path / "home" / ".local" / "share" / "edge_dse" / "library" / "catalog.db").is_file()
    found = app(bundle, "search", QUERY, "-k", "1", env=env)  # a new process reuses the library
    assert found.returncode == 0, found.stderr
    assert EXPECTED in found.stdout.splitlines()[0]
    assert snapshot(bundle) == before, "the library was written inside the bundle"


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)


def _post_json(url: str, data: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(data).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def call_api(base: str, name: str, *inputs) -> list:
    """One call of the UI's named API over plain HTTP (gradio's /gradio_api/call protocol)."""
    event = _post_json(f"{base}gradio_api/call/{name}", {"data": list(inputs)})["event_id"]
    with urllib.request.urlopen(f"{base}gradio_api/call/{name}/{event}", timeout=120) as response:
        stream = response.read().decode()
    assert "event: complete" in stream, stream
    return json.loads(stream.split("event: complete\ndata:", 1)[1].splitlines()[0])


def test_the_ui_starts_serves_a_search_and_stops(built, user_env):
    _, bundle, _ = built
    # First start: the command line builds the library; the UI below is the second start.
    indexed = app(bundle, "index", str(bundle / "_internal" / "edge_dse" / "selftest_docs"), env=user_env)
    assert indexed.returncode == 0, indexed.stderr
    proc = subprocess.Popen([str(bundle / "edge-dse-app"), "--no-browser"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=user_env, cwd=user_env["HOME"])
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True).start()
    try:
        seen, url = [], None
        while url is None:
            line = lines.get(timeout=180)
            seen.append(line)
            match = re.search(r"UI at (http://\S+/)", line)
            url = match and match.group(1)
        assert url.startswith("http://127.0.0.1:"), url
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
            assert "edge_dse" in response.read().decode()
        student_html = call_api(url, "search", QUERY, 3, "vector", False)[0]
        assert EXPECTED in student_html, student_html
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc in (0, -signal.SIGINT, 130), "".join(seen)
