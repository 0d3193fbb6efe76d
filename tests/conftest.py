"""Shared fixtures: the real shipped model, and folders of real files on disk."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
OUTPUT = REPO / "test-output"  # screenshots and other artefacts tests leave for people to look at

# Each document is about one thing, so that a paraphrased query has one right answer. The
# queries share few words with their documents: finding them needs the encoder, not keywords.
TOPICS = {
    "bread": (
        "Baking sourdough at home",
        "Feed the starter the night before. Mix flour, water and salt, then fold the dough every "
        "half hour for three hours. Shape the loaf, let it rise in the fridge overnight and bake it "
        "in a hot covered pot so the crust gets crisp.",
        "how to make a loaf with natural yeast",
    ),
    "bike": (
        "Fixing a flat tyre on a bicycle",
        "Take the wheel off the frame, lever the tyre from the rim and pull out the inner tube. Find "
        "the puncture by pumping air and listening for the hiss, patch it, then refit the tube and "
        "inflate it to the pressure written on the sidewall.",
        "repair a punctured inner tube on my cycle",
    ),
    "taxes": (
        "Filing your annual income tax return",
        "Collect the salary statements from your employer and the receipts for deductible expenses. "
        "Fill in the form before the deadline in spring; late submissions pay a penalty and interest "
        "on what is owed to the revenue office.",
        "when is the deadline to declare my earnings to the government",
    ),
    "plants": (
        "Caring for houseplants in winter",
        "Most indoor plants grow slowly in the dark months: water them less, keep them away from cold "
        "draughts and radiators, and wipe dust from the leaves so they catch what little light there is.",
        "keeping potted greenery alive during the cold season",
    ),
    "python": (
        "Sorting a list in Python",
        "Call sorted(items) to get a new sorted list, or items.sort() to sort in place. Pass key= to "
        "sort by a computed value and reverse=True for descending order. The sort is stable.",
        "order the elements of an array by a custom key in my programming language",
    ),
    "sleep": (
        "Getting better sleep",
        "Go to bed and wake at the same times every day, keep the bedroom dark and cool, and avoid "
        "coffee after lunch. Screens in the last hour before bed make falling asleep harder.",
        "tips for resting well at night and avoiding insomnia",
    ),
}


def shipped_model_dir() -> Path:
    """The model the tests run on: the shipped default, or $EDGE_DSE_TEST_MODEL (another asset)."""
    path = Path(os.environ.get("EDGE_DSE_TEST_MODEL", REPO / "assets" / "baseline"))
    assert (path / "model.onnx").is_file(), f"the shipped model is missing at {path}: re-make it with `edge-dse export`"
    return path


@pytest.fixture(scope="session")
def stand_in_teacher(tmp_path_factory) -> Path:
    """The shipped encoder declared a bi-encoder teacher: lets the rerank paths run whether or not
    assets/teacher exists (pass it explicitly)."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("teacher") / "stand-in"
    shutil.copytree(shipped_model_dir(), folder)
    card = json.loads((folder / "card.json").read_text())
    card.update(kind="bi-encoder", id="test/bi-teacher", name="stand-in teacher")
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="session")
def encoder():
    """The real shipped encoder, loaded once per test session."""
    from edge_dse import Encoder

    return Encoder(shipped_model_dir(), threads=2)


def write_docx(path: Path, title: str, body: str) -> None:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    document.add_paragraph(body)
    document.save(str(path))


def write_pdf(path: Path, title: str, body: str) -> None:
    """A real one-page PDF with a text layer (Helvetica), written by hand: no PDF library
    in the test extra can write text, and this keeps the fixture exact."""
    import textwrap

    lines = [title, ""] + textwrap.wrap(body, 80)
    escaped = [ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in lines]
    content = "BT /F1 11 Tf 14 TL 50 780 Td " + " ".join(f"({ln}) '" for ln in escaped) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)


def write_topic(folder: Path, key: str, suffix: str) -> Path:
    """Write topic `key` as a real file of type `suffix`; returns its path."""
    title, body, _ = TOPICS[key]
    path = folder / f"{key}{suffix}"
    if suffix == ".md":
        path.write_text(f"# {title}\n\n{body}\n", encoding="utf-8")
    elif suffix == ".rst":
        path.write_text(f"{title}\n{'=' * len(title)}\n\n{body}\n", encoding="utf-8")
    elif suffix == ".html":
        path.write_text(f"<html><head><title>x</title><script>var tracking = 1;</script></head>"
                        f"<body><h1>{title}</h1><p>{body}</p></body></html>", encoding="utf-8")
    elif suffix == ".py":
        path.write_text(f'"""{title}.\n\n{body}\n"""\n\n\ndef main():\n    return 0\n', encoding="utf-8")
    elif suffix == ".docx":
        write_docx(path, title, body)
    elif suffix == ".pdf":
        write_pdf(path, title, body)
    else:
        path.write_text(f"{title}\n\n{body}\n", encoding="utf-8")
    return path


# One topic per file type, so every type is proven to be extracted, embedded and found.
TYPE_OF_TOPIC = {"bread": ".md", "bike": ".pdf", "taxes": ".docx", "plants": ".html", "python": ".py", "sleep": ".rst"}


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A folder with one real file of each type (md, pdf, docx, html, py, rst) plus a .txt."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for key, suffix in TYPE_OF_TOPIC.items():
        write_topic(folder, key, suffix)
    (folder / "notes.txt").write_text("Shopping list: eggs, milk, lentils.\n\nCall the plumber on Tuesday.\n", encoding="utf-8")
    return folder


@pytest.fixture
def library(tmp_path, encoder):
    from edge_dse import Library

    lib = Library(tmp_path / "lib", model=encoder, progress=False)
    yield lib
    lib.close()


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `edge-dse` command line in a child process."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "edge_dse.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_ui(lib: Path, *args: str, home: Path | None = None, log_path: Path | None = None,
               env: dict | None = None, entry: str = "edge_dse.cli"):
    """The real `edge-dse ui LIBRARY ARGS` in a child process, on a free port, up and answering;
    yields (url, port, process) and stops it after. Its output goes to a file, not a pipe nobody
    reads while the tests run: a full pipe would stall the app. No traceback may show in it.
    `entry` is the module run as `edge-dse` (a test's hooks, e.g. rerank_hooks, then the CLI)."""
    port = free_port()
    log_path = log_path or lib.parent / f"ui-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", entry, "ui", str(lib), "--port", str(port), *args],
                                stdout=log, stderr=subprocess.STDOUT, text=True,
                                # the folder picker starts at home
                                env=dict(os.environ, HOME=str(home or lib.parent), **(env or {})))
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        try:
            while True:
                assert proc.poll() is None, f"edge-dse ui exited {proc.returncode}: {log_path.read_text()}"
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "edge-dse ui did not come up in 180 s"
                time.sleep(0.5)
            yield url, port, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    out = log_path.read_text()
    assert "Traceback" not in out, out


needs_ray = pytest.mark.skipif(find_spec("ray") is None,
                               reason="the cluster extra is not installed (pip install -e '.[cluster]'): no Ray to test")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A real local Ray cluster (2 CPUs) for the test module that asks, stopped after it (so a
    session runs one cluster at a time). Its workers crash on files named poison*
    (cluster_hooks.py: test_cluster.py's crashing worker). Ray 2.60 turns token auth on and writes
    ~/.ray/auth_token: auth is off and HOME is a temporary folder, so nothing lands in the real home."""
    import ray

    from cluster_hooks import POISON_LOG

    log = tmp_path_factory.mktemp("poison") / "tries.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path_factory.mktemp("ray-home")))
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={
            "worker_process_setup_hook": "cluster_hooks.crash_on_poison",
            "env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
                         POISON_LOG: str(log)},
        })
        try:
            yield {"address": context.address_info["gcs_address"], "poison_log": log}
        finally:
            ray.shutdown()


def stdlib_docstrings(limit: int) -> list[tuple[str, str, str]]:
    """Real human-written text for the distillation tests: (module, synopsis line, rest) of the
    standard-library modules with a long docstring, read with ast, never imported (importing
    every module has side effects)."""
    import ast
    import sysconfig

    found = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        if path.name.startswith("_") or len(found) >= limit:
            continue
        try:
            doc = (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").strip()
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        synopsis, _, body = doc.partition("\n")
        if len(synopsis) >= 10 and len(body.strip()) >= 150:
            found.append((path.stem, synopsis.strip(), body.strip()))
    return found

