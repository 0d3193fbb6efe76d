"""Privacy: the real `edge-dse` opens no network connection and writes nothing outside the
library folder (no telemetry, no caches in HOME, XDG dirs, TMPDIR or the working folder)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import TOPICS, TYPE_OF_TOPIC, shipped_model_dir, write_topic

MODEL = shipped_model_dir()


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file under `folder` with its size, mtime and hash: to tell that nothing changed."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, digest)
    return out


def names(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def docs(tmp_path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for key, suffix in TYPE_OF_TOPIC.items():
        write_topic(folder, key, suffix)
    return folder


def test_index_and_search_work_with_no_network_at_all(tmp_path, docs):
    """`unshare -n`: a network namespace with no interface, not even loopback up."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("cannot make a network namespace here (unshare -n)")
    lib = tmp_path / "lib"

    def offline(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["unshare", "-n", sys.executable, "-m", "edge_dse.cli", "-l", str(lib),
                               "--model", str(MODEL), *args], capture_output=True, text=True, timeout=300)

    indexed = offline("index", str(docs))
    assert indexed.returncode == 0 and "6 added" in indexed.stderr, indexed.stderr
    for mode in ("vector", "hybrid", "keyword"):
        query = TOPICS["bike"][2] if mode != "keyword" else "puncture"
        found = offline("search", "--mode", mode, "-k", "1", query)
        assert found.returncode == 0 and "bike.pdf" in found.stdout, (mode, found.stderr)
    assert offline("status").returncode == 0


AUDIT = textwrap.dedent("""
    import sys
    NETWORK = ("socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto",
               "socket.sendmsg", "socket.__new__", "urllib.Request", "http.client.connect", "ftplib.connect",
               "smtplib.connect", "webbrowser.open")
    seen = []
    def hook(event, args):
        # socket.gethostname is allowed: the writer lock records the host name of its holder.
        if event in NETWORK:
            seen.append(event)
    sys.addaudithook(hook)
    from edge_dse.cli import main
    code = main(sys.argv[1:])
    print("NETWORK-EVENTS:", sorted(set(seen)), file=sys.stderr)
    sys.exit(code)
""")


def test_no_python_code_touches_the_network_or_writes_outside_the_library(tmp_path, docs):
    """Python's audit hooks see every socket made from Python; HOME, the XDG dirs, TMPDIR and the
    working folder point at empty folders that must stay empty. Without --library the library
    goes to the user data dir: the only thing allowed to appear."""
    home = tmp_path / "home"
    dirs = {"HOME": home, "TMPDIR": tmp_path / "tmp", "XDG_CACHE_HOME": home / ".cache",
            "XDG_CONFIG_HOME": home / ".config", "XDG_DATA_HOME": home / ".local" / "share",
            "XDG_STATE_HOME": home / ".local" / "state", "XDG_RUNTIME_DIR": tmp_path / "run"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "EDGE_DSE_HOME"))}
    env.update({k: str(v) for k, v in dirs.items()}, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    before_docs, before_model = snapshot(docs), snapshot(MODEL)
    before_outside = {name: names(d) for name, d in dirs.items()}

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-c", AUDIT, "--model", str(MODEL), *args], capture_output=True,
                              text=True, env=env, cwd=cwd, timeout=300)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "NETWORK-EVENTS: []" in proc.stderr, (args, proc.stderr)
        return proc

    run("index", str(docs))
    assert "taxes.docx" in run("search", TOPICS["taxes"][2]).stdout
    run("search", "--mode", "hybrid", "sourdough")
    run("status")
    (docs / "sleep.rst").unlink()
    before_docs = snapshot(docs)
    run("sync")
    run("remove", str(docs))

    library = dirs["XDG_DATA_HOME"] / "edge_dse" / "library"
    assert library.is_dir(), "the default library is in the user data dir"
    allowed = {"catalog.db", "catalog.db-wal", "catalog.db-shm", "ann.json", "write.lock"}
    for name in os.listdir(library):
        assert name in allowed or (name.startswith("ann.") and name.endswith((".hnsw", ".ids.npy"))), name
    shutil.rmtree(dirs["XDG_DATA_HOME"] / "edge_dse")
    assert {name: names(d) for name, d in dirs.items()} == before_outside, "files written outside the library"
    assert os.listdir(cwd) == [], "files written to the working folder"
    assert snapshot(docs) == before_docs, "the indexed folder was changed"
    assert snapshot(MODEL) == before_model, "the model folder was changed"


# -- files swapped between the scan and the read -----------------------------------------------
# A real sync in a child process, paused between its scan and its reads (the window an attacker
# races for): it prints "scanned" and waits for a line on stdin while the test swaps files.
PAUSED_SYNC = """
import json, sys
import edge_dse.ingest as ingest
from edge_dse import Library

scan = ingest.discover

def discover(*args, **kwargs):
    found = list(scan(*args, **kwargs))
    print("scanned", flush=True)
    sys.stdin.readline()
    return found

ingest.discover = discover
with Library(sys.argv[1], model=sys.argv[2], progress=False) as lib:
    report = lib.sync()
print(json.dumps(report.errors), flush=True)
"""


def sync_with_a_swap(lib_dir: Path, swap) -> list[list[str]]:
    """Sync in a child process; `swap()` runs after its scan, before it reads. The errors it
    reported. A sync that hangs is killed and fails the test (the timeout is only a safety net)."""
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_SYNC, str(lib_dir), str(MODEL)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "scanned", proc.stderr.read()
        swap()
        out, err = proc.communicate("go\n", timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the sync hung on a file swapped in after its scan")
    assert proc.returncode == 0 and "Traceback" not in err, err
    return json.loads(out)


@pytest.fixture
def indexed(tmp_path, encoder):
    """A folder of two notes, indexed; a secret outside it; notes.txt then rewritten, so the
    next sync reads it again."""
    from edge_dse import Library

    folder, secret = tmp_path / "docs", tmp_path / "home" / ".ssh" / "id_rsa"
    folder.mkdir()
    secret.parent.mkdir(parents=True)
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY----- zebracornsecret -----END OPENSSH PRIVATE KEY-----\n")
    (folder / "notes.txt").write_text("Plant the tulip bulbs in autumn, pointed end up.\n")
    write_topic(folder, "bread", ".md")
    with Library(tmp_path / "lib", model=encoder, progress=False) as lib:
        lib.add(folder)
    (folder / "notes.txt").write_text("Plant the tulip bulbs in autumn, pointed end up, ten cm deep.\n")
    return tmp_path / "lib", folder, secret


def replaced(path: Path, make):
    """A swap: `path` deleted, and `make(path)` (a symlink, a FIFO) put in its place."""
    def swap():
        path.unlink()
        make(path)

    return swap


def keyword_paths(lib_dir: Path, query: str) -> list[str]:
    from edge_dse import Library

    with Library(lib_dir, model=MODEL, readonly=True, progress=False) as lib:
        return [Path(h.path).name for h in lib.search(query, mode="keyword")]


def test_a_symlink_to_a_secret_swapped_in_after_the_scan_is_not_read(indexed):
    lib_dir, folder, secret = indexed
    notes = folder / "notes.txt"

    errors = sync_with_a_swap(lib_dir, replaced(notes, lambda p: p.symlink_to(secret)))
    assert [Path(p).name for p, _ in errors] == ["notes.txt"] and "symlink" in errors[0][1]
    assert keyword_paths(lib_dir, "zebracornsecret") == []  # the key's text was never read
    assert keyword_paths(lib_dir, "tulip") == []  # a file refused by rule loses what was indexed of it
    assert keyword_paths(lib_dir, "sourdough") == ["bread.md"]


def test_a_file_that_became_a_symlink_out_of_the_folder_loses_its_chunks(indexed, encoder):
    from edge_dse import Library

    lib_dir, folder, secret = indexed
    notes = folder / "notes.txt"
    notes.unlink()
    notes.symlink_to(secret)
    with Library(lib_dir, model=encoder, progress=False) as lib:
        report = lib.sync()
        assert [(Path(p).name, why) for p, why in report.errors] == [("notes.txt", "symlink points outside the folder")]
        assert lib.status()["errors_detail"] == [(str(notes), "symlink points outside the folder")]
    assert keyword_paths(lib_dir, "tulip") == [] and keyword_paths(lib_dir, "zebracornsecret") == []


def test_a_fifo_swapped_in_after_the_scan_does_not_hang_the_sync(indexed, encoder):
    from edge_dse import Library

    lib_dir, folder, _ = indexed
    notes = folder / "notes.txt"

    errors = sync_with_a_swap(lib_dir, replaced(notes, os.mkfifo))
    assert [(Path(p).name, why) for p, why in errors] == [("notes.txt", "not a regular file (pipe, socket or device)")]
    assert keyword_paths(lib_dir, "tulip") == []
    with Library(lib_dir, model=encoder, progress=False) as lib:  # the writer lock was let go
        assert lib.sync().failed == 1
