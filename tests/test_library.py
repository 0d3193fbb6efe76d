"""The library end to end: real files, real SQLite, real HNSW, the real shipped model."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TOPICS, TYPE_OF_TOPIC, run_cli, shipped_model_dir, write_topic
from edge_dse import Library
from edge_dse.errors import EdgeDSEError, LibraryLockedError, ModelMismatchError


def paths_of(hits) -> list[str]:
    return [Path(h.path).name for h in hits]


def chunk_rows(lib: Library) -> list[tuple]:
    return list(lib.catalog.db.execute('select path, "start", "end" from chunks'))


def test_each_file_type_is_indexed_and_found_by_meaning(library, corpus):
    report = library.add(corpus)
    assert report.failed == 0, report.errors
    assert report.added == len(TYPE_OF_TOPIC) + 1
    for key, suffix in TYPE_OF_TOPIC.items():
        hits = library.search(TOPICS[key][2], k=3, mode="vector")
        assert paths_of(hits)[0] == key + suffix, (key, [(h.path, h.score) for h in hits])
        assert hits[0].score > hits[-1].score


def test_hit_offsets_point_into_the_extracted_text(library, corpus):
    from edge_dse.ingest import extract

    library.add(corpus)
    for hit in library.search("bicycle tyre puncture", k=5, mode="hybrid"):
        assert extract(Path(hit.path)).text[hit.start : hit.end] == hit.text
        assert hit.rank >= 1 and hit.chunk_id > 0


def test_keyword_mode_finds_exact_words_and_hybrid_merges(library, corpus):
    library.add(corpus)
    assert paths_of(library.search("lentils plumber", mode="keyword"))[0] == "notes.txt"
    hybrid = library.search("lentils plumber", mode="hybrid")
    assert paths_of(hybrid)[0] == "notes.txt"
    assert {"encode_ms", "ann_ms", "keyword_ms", "fetch_ms"} <= set(hybrid.timings)


def test_edit_delete_and_rename_between_syncs(library, corpus):
    library.add(corpus)
    (corpus / "bread.md").write_text("# Chess openings\n\nThe Sicilian defence answers 1.e4 with c5.\n", encoding="utf-8")
    (corpus / "bike.pdf").unlink()
    (corpus / "finance").mkdir()
    (corpus / "taxes.docx").rename(corpus / "finance" / "taxes-2026.docx")

    report = library.sync()
    assert (report.updated, report.removed, report.reused) == (1, 2, 1), report.summary()
    assert report.chunks >= 1  # only the edited file was embedded again

    files = set(library.catalog.files_in(str(corpus)))
    assert str(corpus / "bike.pdf") not in files and str(corpus / "taxes.docx") not in files
    assert str(corpus / "finance" / "taxes-2026.docx") in files
    every_hit = library.search("bicycle tyre sourdough bread", k=50, mode="hybrid")
    assert "bike.pdf" not in paths_of(every_hit)
    assert not any("sourdough" in h.text for h in every_hit)  # the old text of the edited file is gone
    assert paths_of(library.search("opening moves in a board game", k=1, mode="vector")) == ["bread.md"]
    assert paths_of(library.search(TOPICS["taxes"][2], k=1, mode="vector")) == ["taxes-2026.docx"]
    rows = chunk_rows(library)
    assert len(rows) == len(set(rows)), "duplicate chunks after a sync"


def test_unchanged_files_are_skipped_and_a_touch_costs_no_embedding(library, corpus):
    library.add(corpus)
    again = library.sync()
    assert again.unchanged == again.seen and again.chunks == 0
    os.utime(corpus / "bread.md", ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    touched = library.sync()
    assert touched.chunks == 0 and touched.updated == 0 and touched.unchanged == touched.seen


def test_deleted_chunks_never_come_back_after_reopen(tmp_path, corpus, encoder):
    lib = Library(tmp_path / "lib", model=encoder, progress=False)
    lib.add(corpus)
    (corpus / "sleep.rst").unlink()
    lib.sync()
    lib.close()
    reopened = Library(tmp_path / "lib", model=encoder, progress=False, readonly=True)
    hits = reopened.search(TOPICS["sleep"][2], k=50, mode="vector")
    assert "sleep.rst" not in paths_of(hits) and hits


def test_hnsw_cache_is_rebuilt_when_missing_or_unreadable(tmp_path, corpus, encoder):
    lib = Library(tmp_path / "lib", model=encoder, progress=False)
    lib.add(corpus)
    expected = paths_of(lib.search(TOPICS["plants"][2], k=3, mode="vector"))
    lib.close()
    ann_files = sorted(p for p in (tmp_path / "lib").iterdir() if p.name.startswith("ann"))
    assert ann_files, "no HNSW cache was saved"
    for damage in ("delete", "garbage"):
        for p in ann_files:
            if damage == "delete":
                p.unlink(missing_ok=True)
            else:
                p.write_bytes(b"\x00garbage" * 10)
        lib = Library(tmp_path / "lib", model=encoder, progress=False)
        assert paths_of(lib.search(TOPICS["plants"][2], k=3, mode="vector")) == expected, damage
        lib.close()


def test_a_reader_sees_every_committed_file_even_with_a_stale_index(tmp_path, corpus, encoder):
    writer = Library(tmp_path / "lib", model=encoder, progress=False)
    writer.add(corpus)
    reader = Library(tmp_path / "lib", model=encoder, progress=False, readonly=True)
    assert reader.search("lentils", mode="keyword")
    # A new file committed by the writer, with the HNSW file left behind (as mid-sync).
    new = write_topic(corpus, "bike", ".md")
    from edge_dse.ingest import chunk_text, extract

    chunks = chunk_text(extract(new))
    vectors = encoder.encode([c.text for c in chunks])
    writer.catalog.put_file(str(corpus), str(new), new.stat().st_size, new.stat().st_mtime_ns, "x" * 64, chunks, vectors)
    hits = reader.search(TOPICS["bike"][2], k=2, mode="vector")
    assert "bike.md" in paths_of(hits)


FTS_HOSTILE = ['"', '""', "'", "*", "a*", "NEAR", "NEAR(a b)", "AND", "OR NOT", "(", ")", "^", "-x", "col:umn",
               "sour\"dough", "bread AND", "🍞 sourdough", "хлеб", "面包", "\x00\x07\x1b", "   ", "", "a" * 5000,
               "sourdough " * 3000]


@pytest.mark.parametrize("mode", ["keyword", "hybrid", "vector"])
def test_queries_with_fts_syntax_and_odd_characters_never_fail(library, corpus, mode):
    library.add(corpus)
    for query in FTS_HOSTILE:
        hits = library.search(query, k=5, mode=mode)
        assert isinstance(hits, list), query
    assert library.search("", mode=mode) == []
    assert "bread.md" in paths_of(library.search('sour"dough "starter', k=5, mode=mode)) or mode == "keyword"


def test_bad_files_are_recorded_and_never_abort_a_sync(library, corpus):
    (corpus / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (corpus / "empty.md").write_bytes(b"")
    (corpus / "broken.docx").write_bytes((corpus / "taxes.docx").read_bytes()[:300])
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\n")
    report = library.add(corpus)
    failed = {Path(p).name for p, _ in report.errors}
    assert failed == {"binary.txt", "empty.md", "broken.docx", "broken.pdf"}, report.errors
    assert report.added == len(TYPE_OF_TOPIC) + 1
    assert {Path(p).name for p, _ in library.status()["errors_detail"]} == failed
    assert all(reason for _, reason in report.errors)


def test_an_unreadable_file_is_recorded_with_its_reason(tmp_path, corpus):
    secret = corpus / "secret.txt"
    secret.write_text("private words nobody may read\n", encoding="utf-8")
    secret.chmod(0)
    lib_dir = tmp_path / "lib"
    # root reads anything; a user namespace takes that power away, so the read fails for real.
    prefix = ["unshare", "--user"] if os.geteuid() == 0 else []
    if prefix and shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: cannot make a file unreadable")
    cmd = prefix + [sys.executable, "-m", "edge_dse.cli", "-l", str(lib_dir), "--model", str(shipped_model_dir()), "index", str(corpus)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "secret.txt" in proc.stderr and "ermission denied" in proc.stderr
    status = run_cli("-l", str(lib_dir), "status")
    assert "secret.txt" in status.stdout and "ermission denied" in status.stdout
    assert "bread.md" in run_cli("-l", str(lib_dir), "search", "sourdough starter").stdout


def make_many_files(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(TOPICS)
    for i in range(n):
        title, body, _ = TOPICS[keys[i % len(keys)]]
        # ~6 chunks a file: 60 files make ~380 chunks, more than one embedding group (256), so
        # a sync commits in several steps and a kill can land between them.
        paras = "\n\n".join(f"Note {i}.{j}: {body}" for j in range(24))
        (folder / f"note-{i:03d}.md").write_text(f"# {title} ({i})\n\n{paras}\n", encoding="utf-8")


def count_ok_files(db_path: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("select count(*) from files where status = 'ok'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_a_sync_killed_half_way_loses_nothing_and_resumes(tmp_path, encoder):
    folder, lib_dir = tmp_path / "many", tmp_path / "lib"
    make_many_files(folder, 60)
    proc = subprocess.Popen([sys.executable, "-m", "edge_dse.cli", "-q", "-l", str(lib_dir), "--model",
                             str(shipped_model_dir()), "index", str(folder)], stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while count_ok_files(lib_dir / "catalog.db") < 10 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = count_ok_files(lib_dir / "catalog.db")
    assert 10 <= committed < 60, f"kill came too late or too early ({committed} files committed)"

    lib = Library(lib_dir, model=encoder, progress=False)
    assert len(lib.catalog.files_in(str(folder))) == committed  # reopen works, the committed files are there
    report = lib.sync()
    assert report.added == 60 - committed and report.unchanged == committed, report.summary()
    rows = chunk_rows(lib)
    assert len(rows) == len(set(rows)), "duplicate chunks after resuming"
    assert {Path(p).name for p, *_ in rows} == {f"note-{i:03d}.md" for i in range(60)}

    fresh = Library(tmp_path / "fresh", model=encoder, progress=False)
    fresh.add(folder)
    assert sorted((Path(p).name, s, e) for p, s, e in rows) == sorted((Path(p).name, s, e) for p, s, e in chunk_rows(fresh))
    assert paths_of(lib.search("Note 59.3", k=60, mode="keyword"))[0] == "note-059.md"


# Holds the writer lock until told to let go (a line on stdin): an event, not a clock, so a
# slow start of the other processes on a busy machine cannot outlast it.
HOLD_LOCK = """
import sys
from edge_dse.store import WriterLock
lock = WriterLock(__import__('pathlib').Path(sys.argv[1]) / 'write.lock')
lock.acquire()
print('locked', flush=True)
sys.stdin.readline()
lock.release()
"""


def test_a_second_writer_gets_a_clear_error_or_waits(tmp_path, corpus, encoder):
    import threading

    lib_dir = tmp_path / "lib"
    Library(lib_dir, model=encoder, progress=False).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lib_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    lib = Library(lib_dir, model=encoder, progress=False)
    with pytest.raises(LibraryLockedError, match=f"pid {holder.pid}.*--wait"):
        lib.add(corpus)
    cli = run_cli("-l", str(lib_dir), "--model", str(shipped_model_dir()), "index", str(corpus))
    assert cli.returncode == 1 and "Traceback" not in cli.stderr and "another process" in cli.stderr
    # A reader is never blocked by the writer.
    assert Library(lib_dir, model=encoder, progress=False, readonly=True).search("anything") == []
    waiting = Library(lib_dir, model=encoder, progress=False, wait=600)
    added: list[int] = []
    writer = threading.Thread(target=lambda: added.append(waiting.add(corpus).added))
    writer.start()
    holder.communicate("let go\n", timeout=60)  # the waiting writer gets the lock once it is let go
    writer.join()
    assert added == [len(TYPE_OF_TOPIC) + 1]


def test_opening_with_another_model_is_a_clear_error_naming_reindex(tmp_path, corpus, encoder):
    lib_dir = tmp_path / "lib"
    Library(lib_dir, model=encoder, progress=False).add(corpus)
    other = tmp_path / "other-model"
    shutil.copytree(shipped_model_dir(), other)
    card = (other / "card.json").read_text().replace(encoder.id, "someone/else")
    (other / "card.json").write_text(card)
    with pytest.raises(ModelMismatchError, match="edge-dse reindex"):
        Library(lib_dir, model=other, progress=False)
    cli = run_cli("-l", str(lib_dir), "--model", str(other), "search", "bread")
    assert cli.returncode == 1 and "edge-dse reindex" in cli.stderr and "Traceback" not in cli.stderr
    # The fix the message names works when typed as written.
    fix = re.search(r"`edge-dse (reindex[^`]*)`", cli.stderr).group(1)
    reindexed = run_cli("-q", *shlex.split(fix))
    assert reindexed.returncode == 0, reindexed.stderr
    lib = Library(lib_dir, model=other, progress=False)
    assert lib.catalog.get_meta("model_id") == "someone/else"
    assert paths_of(lib.search(TOPICS["bread"][2], k=1, mode="vector")) == ["bread.md"]


def test_missing_folder_keeps_its_files_and_remove_drops_them(library, corpus, tmp_path):
    library.add(corpus)
    n = library.catalog.counts()["files"]
    moved = tmp_path / "elsewhere"
    corpus.rename(moved)
    report = library.sync()
    assert report.failed == 1 and "missing" in report.errors[0][1]
    assert library.catalog.counts()["files"] == n
    assert library.remove(corpus) == n
    assert library.search("sourdough", mode="hybrid") == []
    with pytest.raises(EdgeDSEError, match="not in this library"):
        library.remove(corpus)


def test_import_edge_dse_leaves_torch_out():
    code = (
        "import sys, edge_dse; from edge_dse import Library, Encoder; import edge_dse.cli;"
        "bad = [m for m in ('torch', 'transformers', 'optimum', 'gradio') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_plain_import_loads_no_heavy_module():
    """`import edge_dse` stays fast: numpy, onnxruntime, tokenizers, hnswlib load on first use."""
    code = (
        "import sys, edge_dse;"
        "print(','.join(m for m in ('numpy', 'onnxruntime', 'tokenizers', 'hnswlib', 'sqlite_utils', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_library_keeps_its_shipped_model_when_the_default_changes(tmp_path, monkeypatch, corpus):
    """A library built with the baseline keeps opening with it after a student is promoted (the
    new default); `reindex` (allow_model_change) moves it to the default. A student whose card
    records no passing promotion never becomes the default."""
    import json
    import shutil

    from edge_dse.config import assets_dir, default_model_name

    from edge_dse import config

    assets = tmp_path / "assets"
    shutil.copytree(assets_dir() / "baseline", assets / "baseline")
    monkeypatch.setenv("EDGE_DSE_ASSETS", str(assets))
    assert config.DEFAULT_MODELS == ("student", "baseline")
    assert default_model_name() == "baseline"
    with Library(tmp_path / "lib", progress=False) as lib:
        lib.add(corpus)
    shutil.copytree(assets / "baseline", assets / "student")
    card = json.loads((assets / "student" / "card.json").read_text())
    card.update(id="test/student", name="student")
    for verdict, default in (({"default": False}, "baseline"), ({}, "baseline"), ({"default": True}, "student")):
        card["promotion"] = verdict  # as `edge-dse eval --promote` writes it
        (assets / "student" / "card.json").write_text(json.dumps(card))
        assert default_model_name() == default
    with Library(tmp_path / "lib", readonly=True) as lib:
        assert lib.model_card["id"] == "edge-dse/baseline-all-minilm-l6-v2-int8"
        assert lib.search("water for tea", k=1)
    with Library(tmp_path / "lib", progress=False, allow_model_change=True) as lib:
        lib.reindex()
    with Library(tmp_path / "lib", readonly=True) as lib:
        assert lib.model_card["id"] == "test/student" and lib.status()["model"]["model_id"] == "test/student"
    with Library(tmp_path / "new", progress=False) as lib:
        assert lib.model_card["id"] == "test/student"


def test_gzip_text_and_suffixless_text_are_indexed_and_other_types_counted(library, tmp_path):
    """As under /usr/share/doc: README.gz, changelog.Debian.gz, a `copyright` with no suffix are
    text and found; images, archives and binaries are not indexed, and said so, by kind."""
    import gzip

    folder = tmp_path / "doc"
    folder.mkdir()
    (folder / "README.gz").write_bytes(gzip.compress(b"Bash is the GNU Project's shell, the Bourne Again SHell.\n"))
    (folder / "changelog.Debian.gz").write_bytes(gzip.compress(b"bash (5.2-1) unstable; urgency=medium\n  * New upstream release.\n"))
    (folder / "copyright").write_text("Bash is released under the GNU General Public License, version 3 or later.\n")
    (folder / "INSTALL").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)  # no suffix, binary
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (folder / "old.tar.gz").write_bytes(gzip.compress(b"not indexed"))
    (folder / "bomb.txt.gz").write_bytes(gzip.compress(b"a" * (60 * 1024 * 1024)))  # 60 MB of text from 60 KB
    (folder / "broken.md.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated")
    report = library.add(folder)
    assert report.skipped == {".png": 2, ".tar.gz": 1, "no suffix (not text)": 1}
    assert report.summary().endswith("; 4 files of other types not indexed: .png 2, .tar.gz 1, no suffix (not text) 1")
    assert dict((Path(p).name, why.split(" (")[0]) for p, why in report.errors) == {
        "bomb.txt.gz": "too large once decompressed: over 50.0 MB", "broken.md.gz": "not a valid .gz file"}
    assert paths_of(library.search("what license is bash released under", k=1)) == ["copyright"]
    assert paths_of(library.search("Bourne Again SHell", mode="keyword")) == ["README.gz"]
    assert paths_of(library.search("upstream urgency", mode="keyword")) == ["changelog.Debian.gz"]
    assert library.status()["skipped"] == {".png": 2, ".tar.gz": 1, "no suffix (not text)": 1}
    status = run_cli("-l", str(library.path), "--model", str(shipped_model_dir()), "status")
    assert "skipped:  4 files of other types not indexed: .png 2, .tar.gz 1, no suffix (not text) 1" in status.stdout
    library.remove(folder)
    assert library.status()["skipped"] == {}


def test_removing_a_folder_leaves_no_keyword_index_behind(library, tmp_path, corpus):
    """Deleting chunks only adds "delete" entries to the FTS5 index: without a merge, removing a
    folder of 3,000 chunks grew the keyword index (3.5 to 6.5 MB) and the catalog kept 8.8 MB
    for 3 live chunks. The big folder is written straight into the catalog (random words, random
    vectors): embedding 3,000 chunks would take minutes and is not what is tested."""
    import random
    from dataclasses import dataclass

    import numpy as np

    @dataclass
    class Piece:
        start: int
        end: int
        text: str
        heading: str = ""

    rng = random.Random(0)
    library.add(corpus)
    big = str(tmp_path / "big")
    library.catalog.add_folder(big)
    for i in range(1000):
        pieces = [Piece(0, 10, " ".join(f"w{rng.randrange(10**9)}" for _ in range(100))) for _ in range(3)]
        library.catalog.put_file(big, f"{big}/n{i}.txt", 1, 1, f"sha{i}", pieces,
                                 np.random.default_rng(i).random((3, library.encoder.dim), dtype=np.float32))

    def keyword_index_bytes() -> int:
        return library.catalog.db.execute("select sum(length(block)) from chunks_fts_data").fetchone()[0]

    before = keyword_index_bytes()
    assert library.remove(big) == 1000
    assert keyword_index_bytes() < before / 100
    assert (tmp_path / "lib" / "catalog.db").stat().st_size < 2 * 1024 * 1024
    assert paths_of(library.search("sourdough", mode="keyword")) == ["bread.md"]


def test_a_reindex_killed_half_way_goes_on_where_it_stopped(tmp_path, encoder):
    folder, lib_dir = tmp_path / "many", tmp_path / "lib"
    make_many_files(folder, 60)
    Library(lib_dir, model=encoder, progress=False).add(folder)
    proc = subprocess.Popen([sys.executable, "-m", "edge_dse.cli", "-q", "-l", str(lib_dir), "--model",
                             str(shipped_model_dir()), "reindex"], stderr=subprocess.PIPE)

    def reindexed() -> int:
        """Files committed by the reindex (0 until it has dropped the old ones)."""
        try:
            con = sqlite3.connect(f"file:{lib_dir / 'catalog.db'}?mode=ro", uri=True, timeout=5)
            try:
                under_way = con.execute("select 1 from meta where key = 'reindex_to'").fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            return 0
        return count_ok_files(lib_dir / "catalog.db") if under_way else 0

    deadline = time.time() + 240  # a safety net: the wait is for the first group's commit
    while reindexed() < 10 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = reindexed()
    assert 10 <= committed < 60, f"kill came too late or too early ({committed} files committed)"
    with Library(lib_dir, model=encoder, progress=False, allow_model_change=True) as lib:
        report = lib.reindex()
        assert report.added == 60 - committed and report.unchanged == committed, report.summary()
        assert lib.catalog.get_meta("reindex_to") is None
        assert lib.reindex().added == 60  # a new reindex re-embeds everything again
    rows = chunk_rows(Library(lib_dir, model=encoder, progress=False))
    assert len(rows) == len(set(rows)) and {Path(p).name for p, *_ in rows} == {f"note-{i:03d}.md" for i in range(60)}


SAVE_IN_STEPS = """
import sys
from edge_dse import Library
with Library(sys.argv[1], model=sys.argv[2], progress=False) as lib:
    lib.ann_save_chunks = 100
    lib.add(sys.argv[3])
"""


def test_a_long_sync_saves_the_hnsw_cache_in_steps(tmp_path, encoder):
    """Readers search the saved cache, scoring only what it lacks one by one: during a long
    first sync it must be saved as the sync goes, not only at its end."""
    import json

    folder, lib_dir = tmp_path / "many", tmp_path / "lib"
    make_many_files(folder, 60)  # ~380 chunks: a save after each group of 256, here after 100
    proc = subprocess.Popen([sys.executable, "-c", SAVE_IN_STEPS, str(lib_dir), str(shipped_model_dir()), str(folder)],
                            stderr=subprocess.PIPE)
    deadline = time.time() + 240  # a safety net: the wait is for the first save
    while not (lib_dir / "ann.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = count_ok_files(lib_dir / "catalog.db")
    assert 0 < committed < 60, f"the cache was first saved with {committed} of 60 files committed"
    saved = json.loads((lib_dir / "ann.json").read_text())["generation"]
    with Library(lib_dir, model=encoder, progress=False, readonly=True) as reader:
        index = reader.ann_index()  # what a search uses: the cache saved mid-sync
        assert index.generation == saved and len(index.ids()) > 0
        hits = reader.search(TOPICS["bread"][2], k=3)
        assert len(hits) == 3 and all(reader.catalog.file_state(h.path).status == "ok" for h in hits)
