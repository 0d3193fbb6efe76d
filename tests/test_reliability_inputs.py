"""Bad input, end to end: real files, the real `edge-dse` process, the real model.

Every bad file must be recorded with a reason (`edge-dse status`, Library.status()["errors_detail"])
and never abort a sync; every odd query must return sensible results and never raise.

Bad-input kinds covered by the suite (39 file/folder kinds, 28 odd queries; "new" = this module):
    files that are recorded as failed, with their reason
     1. empty file                                   test_library, test_ingest, new (zoo)
     2. whitespace-only file                         test_ingest, new (zoo)
     3. UTF-8 BOM and nothing else                   new (zoo)
     4. HTML with only script/style, no text         new (zoo)
     5. binary bytes with a text extension           test_library, test_ingest, new (zoo)
     6. 2 GB sparse file (size limit)                new (zoo)
     7. file over a configured max_bytes             test_ingest
     8. invalid UTF-16 (BOM + lone surrogate)        test_ingest, new (zoo)
     9. malformed PDF                                test_library, test_ingest, new (zoo)
    10. text renamed .pdf                            test_ingest
    11. encrypted PDF                                test_ingest, new (zoo)
    12. image-only PDF (no text layer)               test_ingest, new (zoo)
    13. truncated DOCX                               test_library, test_ingest, new (zoo)
    14. text renamed .docx                           test_ingest
    15. a valid zip that is no Word file, as .docx   new (zoo)
    16. zip bomb renamed .docx                       test_ingest (300 MB), new (zoo, 40 MB)
    17. file symlink loop (a -> b -> a)              new (zoo)
    18. file symlink out of the folder               test_ingest, new (zoo)
    19. dangling symlink                             test_ingest, new (zoo)
    20. FIFO                                         test_ingest, new (zoo)
    21. unix socket                                  new (zoo)
    22. file name with invalid UTF-8 bytes           new (zoo)
    23. folder name with invalid UTF-8 bytes         new (zoo)
    24. unreadable file (permission denied)          test_library
    25. unreadable folder (permission denied)        new
    files that are indexed (and said so: found by a search)
    26. invalid UTF-8 -> decoded as cp1252/latin-1   test_ingest (decode), new (zoo: indexed, searchable)
    27. NUL bytes after the first 8 KB               new (zoo)
    28. file name with a newline                     new (zoo)
    29. non-ASCII file name                          new (zoo)
    30. a folder named like a file (x.md/)           new (zoo)
    31. a 20 KB single-line file, synced             new (zoo)
    32. a 10 MB single line: extracted and chunked   new (.md x2, .rst, .txt, .html; linear time)
    33. many tiny files (3000)                       new
    ignored, never followed
    34. directory symlink loop / out of the folder   test_ingest, new (zoo)
    changes under a running sync
    35. a file deleted during the sync               new
    36. a file rewritten during the sync             new (no stale mix of old chunks and new hash)
    37. a subfolder deleted during the sync          new
    38. a folder that disappears between syncs       test_library
    39. a crash (SIGKILL) during the sync            test_library, test_reliability_crash
    queries, in all three modes (also test_library's FTS_HOSTILE, test_store's HOSTILE)
     empty, whitespace, 1 MB, control characters, NUL, FTS5 syntax (" * NEAR AND OR - : ( ) ^),
     emoji, CJK, Arabic, RTL/zero-width marks, combining accents, full-width forms, lone
     surrogates (undecodable argv bytes), noncharacters, private use, one 100k-char word, 10k
     distinct words; plus a hypothesis property over any unicode text.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TOPICS, run_cli, shipped_model_dir, write_docx, write_pdf, write_topic
from edge_dse import Library, modes
from edge_dse.ingest import chunk_text, extract
from edge_dse.store.catalog import FTS_TOKENIZE, query_terms

MODEL = str(shipped_model_dir())


def cli(lib: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("-l", str(lib), "--model", MODEL, *args, **kwargs)


def status_json(lib: Path) -> dict:
    proc = cli(lib, "status", "--json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def keyword_paths(lib: Path, query: str) -> list[str]:
    proc = cli(lib, "search", "--json", "--mode", "keyword", query)
    assert proc.returncode == 0, proc.stderr
    return [h["path"] for h in json.loads(proc.stdout)["hits"]]


# -- a zoo of bad files in one folder, indexed by the real command ------------------------------
def bytes_path(folder: Path, name: bytes) -> bytes:
    return os.fsencode(folder) + b"/" + name


def build_zoo(folder: Path, outside: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Write every kind of bad file into `folder`. Returns ({path substring: reason substring}
    for the files that must fail, {path substring: a word that finds it} for the ones indexed)."""
    import pypdf

    folder.mkdir()
    outside.mkdir()
    fail, ok = {}, {}

    def bad(name: str, data: bytes, reason: str) -> None:
        (folder / name).write_bytes(data)
        fail[name] = reason

    bad("empty.txt", b"", "empty")
    bad("blank.md", b"  \n\n\t \n", "empty")
    bad("bom-only.txt", codecs.BOM_UTF8, "empty")
    bad("script-only.html", b"<html><script>var x = 1;</script><style>p {}</style></html>", "empty")
    bad("photo.txt", bytes(range(256)) * 40, "binary")
    bad("bad-utf16.txt", codecs.BOM_UTF16_LE + b"a\x00\x00\xd8b\x00", "invalid utf-16")
    bad("malformed.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\n", "malformed PDF")
    with open(folder / "huge.txt", "wb") as f:  # sparse: 2 GB that costs no disk
        f.truncate(2 * 1024**3)
    fail["huge.txt"] = "too large"

    title, body, _ = TOPICS["bike"]
    write_pdf(outside / "plain.pdf", title, body)
    writer = pypdf.PdfWriter(clone_from=str(outside / "plain.pdf"))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    writer.write(str(folder / "locked.pdf"))
    fail["locked.pdf"] = "encrypted PDF"
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.write(str(folder / "scan.pdf"))
    fail["scan.pdf"] = "no extractable text"

    write_docx(outside / "good.docx", *TOPICS["taxes"][:2])
    bad("truncated.docx", (outside / "good.docx").read_bytes()[:600], "not a valid .docx")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hello.txt", "a zip, but not a Word document")
    bad("not-word.docx", buf.getvalue(), "not a valid .docx")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:  # 40 MB of zeros in ~40 KB
        zf.writestr("word/document.xml", b"\0" * (40 * 1024 * 1024))
    bad("bomb.docx", buf.getvalue(), "zip bomb")

    os.symlink(folder / "loop-b.md", folder / "loop-a.md")
    os.symlink(folder / "loop-a.md", folder / "loop-b.md")
    fail["loop-a.md"] = fail["loop-b.md"] = "symlink loop"
    (outside / "secret.md").write_text("a secret outside the indexed folder\n", encoding="utf-8")
    os.symlink(outside / "secret.md", folder / "leak.md")
    fail["leak.md"] = "outside the folder"
    os.symlink(folder / "nowhere.md", folder / "dangling.md")
    fail["dangling.md"] = "dangling symlink"
    os.symlink(outside, folder / "outside-dir")  # a directory link out: never followed, not a file
    os.symlink(folder, folder / "self-loop")     # a directory loop: never followed
    os.mkfifo(folder / "pipe.txt")
    fail["pipe.txt"] = "not a regular file"
    cwd = os.getcwd()
    os.chdir(folder)  # a relative bind: AF_UNIX paths are limited to 108 bytes
    try:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind("socket.txt")
        sock.close()
    finally:
        os.chdir(cwd)
    fail["socket.txt"] = "not a regular file"

    with open(bytes_path(folder, b"name-\xfe-latin1.txt"), "wb") as f:
        f.write(b"a file whose name is not UTF-8\n")
    fail["name-\\xfe-latin1.txt"] = "not valid text"
    os.mkdir(bytes_path(folder, b"archive-\xff-1998"))
    with open(bytes_path(folder, b"archive-\xff-1998/inside.txt"), "wb") as f:
        f.write(b"a file in a folder whose name is not UTF-8\n")
    fail["archive-\\xff-1998"] = "not valid text"

    # Indexed, and each one found by a word of it.
    (folder / "latin1.txt").write_bytes("Crème brûlée at the façade café, naïve ½ price\n".encode("cp1252"))
    ok["latin1.txt"] = "brûlée"
    (folder / "nul-late.txt").write_bytes(b"plain words here. " * 600 + b"\x00\x00 then zanzibar after the nul\n")
    ok["nul-late.txt"] = "zanzibar"
    (folder / "new\nline.txt").write_text("a name with a newline: quokka\n", encoding="utf-8")
    ok["new\nline.txt"] = "quokka"
    (folder / "naïve café 日本.md").write_text("# Naming\n\nnon-ASCII names work: wombat\n", encoding="utf-8")
    ok["naïve café 日本.md"] = "wombat"
    (folder / "dir.md").mkdir()
    (folder / "dir.md" / "inside.txt").write_text("inside a folder named like a file: narwhal\n", encoding="utf-8")
    ok["dir.md/inside.txt"] = "narwhal"
    (folder / "long-line.md").write_text("x" * 20_000 + " axolotl", encoding="utf-8")
    ok["long-line.md"] = "axolotl"
    shutil.copy(outside / "good.docx", folder / "good.docx")
    ok["good.docx"] = "deductible"
    shutil.copy(outside / "plain.pdf", folder / "plain.pdf")
    ok["plain.pdf"] = "puncture"
    return fail, ok


def test_a_zoo_of_bad_files_is_recorded_and_never_aborts_the_sync(tmp_path):
    folder, lib = tmp_path / "zoo", tmp_path / "lib"
    fail, ok = build_zoo(folder, tmp_path / "outside")

    first = cli(lib, "index", str(folder))
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr
    info = status_json(lib)
    errors = dict(info["errors_detail"])
    for name, reason in fail.items():
        matching = [(p, r) for p, r in errors.items() if p.endswith("/" + name) or f"/{name}/" in p]
        assert len(matching) == 1, (name, sorted(errors))
        assert reason.lower() in matching[0][1].lower(), (name, matching[0])
    assert len(errors) == len(fail), sorted(set(errors) - {p for p in errors if any(n in p for n in fail)})
    # Nothing from outside the folder, nothing behind a directory link.
    assert not any("secret" in p or "outside-dir" in p or "self-loop" in p for p in errors)
    text_status = cli(lib, "status", "--all").stdout  # 21 failures: more than it names by default
    for name in fail:
        assert any(name in line and "failed" in line for line in text_status.splitlines()), name

    lib_api = Library(lib, model=MODEL, progress=False, readonly=True)
    assert dict(lib_api.status()["errors_detail"]) == errors
    indexed = set(lib_api.catalog.files_in(str(folder))) - set(errors)
    for name, word in ok.items():
        assert str(folder / name) in indexed, name
        hits = lib_api.search(word, k=3, mode="keyword")
        assert hits and hits[0].path == str(folder / name), (name, word, [h.path for h in hits])
    lib_api.close()

    # A second sync is stable: the same failures, nothing removed or re-added.
    again = cli(lib, "sync")
    assert again.returncode == 0 and "0 added" in again.stderr and "0 removed" in again.stderr, again.stderr
    assert dict(status_json(lib)["errors_detail"]) == errors

    # A folder to add whose own name is undecodable: a one-line error, not a traceback.
    proc = subprocess.run([sys.executable, "-m", "edge_dse.cli", "-l", str(lib), "--model", MODEL, "index",
                           bytes_path(folder, b"archive-\xff-1998")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "not valid UTF-8" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_unreadable_folder_is_recorded_and_the_rest_indexed(tmp_path):
    folder, lib = tmp_path / "docs", tmp_path / "lib"
    (folder / "locked").mkdir(parents=True)
    (folder / "locked" / "diary.txt").write_text("private\n", encoding="utf-8")
    (folder / "open.txt").write_text("an open file about pelicans\n", encoding="utf-8")
    (folder / "locked").chmod(0)
    # root reads anything; a user namespace takes that power away, as in test_library.
    prefix = ["unshare", "--user"] if os.geteuid() == 0 else []
    if prefix and shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: cannot make a folder unreadable")
    try:
        proc = subprocess.run(prefix + [sys.executable, "-m", "edge_dse.cli", "-l", str(lib), "--model", MODEL,
                                        "index", str(folder)], capture_output=True, text=True, timeout=300)
    finally:
        (folder / "locked").chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    errors = dict(status_json(lib)["errors_detail"])
    assert list(errors) == [str(folder / "locked")] and "ermission denied" in errors[str(folder / "locked")]
    assert keyword_paths(lib, "pelicans") == [str(folder / "open.txt")]


# -- files that change under a running sync -------------------------------------------------------
def note(i: int, version: str) -> str:
    return f"Record {i} ({version}): the token r{i:04d}{version} marks this file. " + "filler " * (i % 5) + "\n"


def ok_files(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("select count(*) from files where status = 'ok'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def chunk_table(lib: Library) -> list[tuple]:
    return sorted(lib.catalog.db.execute('select path, "start", "end", heading, text from chunks'))


def test_files_deleted_or_rewritten_during_a_sync_leave_no_stale_mix(tmp_path, encoder):
    """600 one-chunk files make three embedding groups (256 chunks each): when the first group
    commits, the files of the last group are not read yet. Change files then, early and late."""
    folder, lib_dir = tmp_path / "docs", tmp_path / "lib"
    (folder / "zz-sub").mkdir(parents=True)
    versions: dict[str, dict[str, str]] = {}  # path -> {sha256: text} of every version written

    def write(path: Path, text: str) -> None:
        path.write_text(text, encoding="utf-8")
        versions.setdefault(str(path), {})[hashlib.sha256(text.encode()).hexdigest()] = text

    for i in range(600):
        write(folder / f"f{i:04d}.txt", note(i, "old"))
    for i in range(5):
        write(folder / "zz-sub" / f"s{i}.txt", note(1000 + i, "old"))

    proc = subprocess.Popen([sys.executable, "-m", "edge_dse.cli", "-q", "-l", str(lib_dir), "--model", MODEL,
                             "index", str(folder)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while ok_files(lib_dir / "catalog.db") < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    early_committed = ok_files(lib_dir / "catalog.db")
    for i in (3, 580, 590):  # deleted: one read already, two not read yet
        (folder / f"f{i:04d}.txt").unlink()
    for i in (4, 585, 595):  # rewritten with other content and size
        write(folder / f"f{i:04d}.txt", note(i, "new") + "more words now\n")
    shutil.rmtree(folder / "zz-sub")  # a whole subfolder vanishes
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert early_committed < 600, "the sync finished before the files could be changed"

    lib = Library(lib_dir, model=encoder, progress=False)
    rows = lib.catalog.files_in(str(folder))
    for path, row in rows.items():
        assert row.status == "ok", (path, row.error)
        text = versions[path][row.sha256]  # the hash is one of a version really written ...
        chunks = [c.text for c in chunk_text(extract(Path(path), text.encode()))]
        stored = [r[0] for r in lib.catalog.db.execute("select text from chunks where path = ? order by id", (path,))]
        assert stored == chunks, path  # ... and the chunks are that version's, no mix
    for i in (580, 590):  # deleted before they were read: never indexed
        assert str(folder / f"f{i:04d}.txt") not in rows
    for i in (585, 595):  # rewritten before they were read: the new text
        assert "(new)" in versions[str(folder / f"f{i:04d}.txt")][rows[str(folder / f"f{i:04d}.txt")].sha256]
    assert not any("zz-sub" in p for p in rows)

    # The next sync brings the library exactly to what a clean index of the folder holds.
    report = lib.sync()
    assert report.failed == 0, report.errors
    fresh = Library(tmp_path / "fresh", model=encoder, progress=False)
    fresh.add(folder)
    assert chunk_table(lib) == chunk_table(fresh)
    assert [h.path for h in lib.search("r0004new", mode="keyword")] == [str(folder / "f0004.txt")]
    assert lib.search("r0003old", mode="keyword") == []
    lib.close(), fresh.close()


def test_many_tiny_files(tmp_path):
    folder, lib = tmp_path / "tiny", tmp_path / "lib"
    for i in range(3000):
        sub = folder / f"d{i // 250:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"t{i:04d}.txt").write_text(f"tiny note {i}: tok{i:04d}q\n", encoding="utf-8")
    first = cli(lib, "index", str(folder))
    assert first.returncode == 0 and "3000 added" in first.stderr, first.stderr
    with Library(lib, model=MODEL, progress=False, readonly=True) as reader:
        assert reader.status()["files"] == 3000
        for i in (0, 1234, 2999):
            hits = reader.search(f"tok{i:04d}q", mode="keyword")
            assert [h.path for h in hits] == [str(folder / f"d{i // 250:02d}" / f"t{i:04d}.txt")]
    again = cli(lib, "sync")
    assert again.returncode == 0 and "3000 unchanged" in again.stderr and "0 chunks embedded" in again.stderr


def test_many_empty_files_are_recorded_in_a_few_commits_and_summarised(tmp_path):
    """100,000 empty files took 5.6 min (a commit each) and `status` printed 100,000 lines."""
    folder, lib_dir = tmp_path / "empty", tmp_path / "lib"
    folder.mkdir()
    for i in range(2500):
        (folder / f"e{i:04d}.txt").touch()
    (folder / "real.txt").write_text("The only note with words: kumquat.\n", encoding="utf-8")
    with Library(lib_dir, model=MODEL, progress=False) as lib:
        writes: list[str] = []  # write transactions (read snapshots commit too, but write nothing)
        lib.catalog._conn.set_trace_callback(lambda sql: writes.append(sql) if sql == "BEGIN IMMEDIATE" else None)
        report = lib.add(folder)
        lib.catalog._conn.set_trace_callback(None)
    assert (report.failed, report.added) == (2500, 1)
    assert len(writes) < 20, len(writes)  # was one per failed file
    status = cli(lib_dir, "status")
    assert "failed:   2500 files: empty 2500" in status.stdout
    assert sum(line.startswith("  failed ") for line in status.stdout.splitlines()) == 20
    assert "... and 2480 more failed files (`edge-dse status --all` lists them)" in status.stdout
    every = cli(lib_dir, "status", "--all")
    assert sum(line.startswith("  failed ") for line in every.stdout.splitlines()) == 2500
    from edge_dse.app_service import Service

    svc = Service(lib_dir, model=MODEL)
    info = svc.status(errors_limit=200)  # what the UI's Library tab asks for
    assert len(info["errors_detail"]) == 200 and info["errors"] == 2500 and info["errors_by_kind"] == {"empty": 2500}
    svc.close()
    assert keyword_paths(lib_dir, "kumquat") == [str(folder / "real.txt")]


# -- a 10 MB single line ------------------------------------------------------------------------
TEN_MB = 10 * 1024 * 1024
LONG_LINES = {
    "x-only.md": "x" * TEN_MB,                              # one line, no space: setext title candidate
    "heading.md": "# a" + " " * TEN_MB + "b",               # an ATX heading with a 10 MB run of spaces
    "words.txt": "word " * (TEN_MB // 5),
    "rule.rst": "=" * TEN_MB + "x",
    "one-paragraph.html": "<p>" + "word " * (TEN_MB // 5) + "</p>",
}


@pytest.mark.parametrize("name", LONG_LINES)
def test_a_10mb_single_line_is_extracted_and_chunked_in_linear_time(tmp_path, name):
    path = tmp_path / name
    path.write_text(LONG_LINES[name], encoding="utf-8")
    started = time.perf_counter()
    extracted = extract(path)
    chunks = chunk_text(extracted)
    elapsed = time.perf_counter() - started
    # ~1-3 s here for 10 MB; a quadratic regex on this line would take days.
    assert elapsed < 30, f"{name}: {elapsed:.1f} s"
    assert chunks and all(len(c.text) <= 1250 for c in chunks)
    assert chunks[-1].end == len(extracted.text.rstrip())


# -- queries --------------------------------------------------------------------------------------
QUERY_DOCS = {
    "bread.md": f"# {TOPICS['bread'][0]}\n\n{TOPICS['bread'][1]}\n",
    "tokyo.md": "# 東京\n\n東京 タワー は 高い 。 東京都 は 日本 の 首都 です 。\n",
    "coffee.md": "# القهوة\n\nالقهوة العربية تقدم مع التمر في المجلس\n",
    "party.md": "# Party 🎉\n\nCake 🍰 and candles 🕯 for the birthday party.\n",
    "cafe.md": "# Café\n\nThe café serves crème brûlée.\n",
}


@pytest.fixture(scope="module")
def query_lib(tmp_path_factory, encoder):
    base = tmp_path_factory.mktemp("queries")
    (base / "docs").mkdir()
    for name, text in QUERY_DOCS.items():
        (base / "docs" / name).write_text(text, encoding="utf-8")
    lib = Library(base / "lib", model=encoder, progress=False)
    lib.add(base / "docs")
    yield lib
    lib.close()


def fts_tokens(*texts: str) -> list[set[str]]:
    """The tokens the catalog's FTS5 tokenizer makes of each text: the oracle for "this hit
    holds a query term" (stemmed, case- and diacritic-folded as the index sees it)."""
    con = sqlite3.connect(":memory:")
    con.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize='{FTS_TOKENIZE}')")
    con.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    for i, text in enumerate(texts):
        con.execute("INSERT INTO t (rowid, x) VALUES (?, ?)", (i, text))
    out: list[set[str]] = [set() for _ in texts]
    for term, doc in con.execute("SELECT term, doc FROM v"):
        out[doc].add(term)
    con.close()
    return out


def check_hits(lib: Library, query: str, mode: str, k: int = 5):
    hits = lib.search(query, k=k, mode=mode)
    assert len(hits) <= k and [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert len({h.chunk_id for h in hits}) == len(hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True), (query, mode, scores)
    terms = [t[1:-1] for t in query_terms(query)]
    if mode == "keyword" and hits:
        wanted = set().union(*fts_tokens(*terms)) if terms else set()
        for hit, tokens in zip(hits, fts_tokens(*(f"{h.text} {h.heading}" for h in hits))):
            assert tokens & wanted, (query, hit.text)
    if mode == "hybrid":
        # Whatever the input, hybrid is modes.fuse of the vector and keyword lists, both read
        # FUSION_DEPTH deep: every hit is in one of them, and a hit in neither never appears.
        depth = max(k, modes.FUSION_DEPTH)
        listed = {h.chunk_id for m in ("vector", "keyword") for h in lib.search(query, k=depth, mode=m)}
        assert {h.chunk_id for h in hits} <= listed, query
        assert all(0.0 <= h.score <= 1.0 for h in hits), scores
    return hits


ODD_QUERIES = {
    "empty": "",
    "whitespace": " \t\n\r\u3000 ",
    "1 MB": "sourdough starter " * 58_255,
    "control": "\x01\x02\x1b[31m sourdough\x7f\x08",
    "NUL": "sour\x00dough \x00",
    "only NUL": "\x00",
    "quote": '"', "star": "*", "NEAR": "NEAR", "AND": "AND", "OR": "OR", "minus": "-", "colon": ":", "paren": "(",
    "FTS syntax mix": 'NEAR(sourdough "starter, 2) AND -loaf OR text:crust* ^bake (((',
    "column filter": "heading:bread {text heading}: dough",
    "emoji": "🍞🥖🎉",
    "emoji and word": "🍰 cake",
    "CJK": "東京",
    "Arabic": "القهوة",
    "RTL and zero-width marks": "\u200f\u202ebread\u200b\u200d\u2066",
    "combining accent": "cafe\u0301",
    "full-width": "ｓｏｕｒｄｏｕｇｈ",
    "lone surrogates": "\ud800 bread \udcff",  # what argv holds for undecodable bytes
    "noncharacters": "\uffff\ufffe\U0010ffff",
    "private use": "\ue000\uf8ff",
    "one 100k-char word": "a" * 100_000,
    "10k distinct words": " ".join(f"w{i}" for i in range(10_000)),
}


@pytest.mark.parametrize("mode", ["keyword", "hybrid", "vector"])
def test_odd_queries_never_raise_and_give_sensible_results(query_lib, mode):
    for kind, query in ODD_QUERIES.items():
        started = time.perf_counter()
        hits = check_hits(query_lib, query, mode)
        assert time.perf_counter() - started < 10, kind
        if not query.strip() or kind in ("only NUL", "noncharacters", "private use") and mode == "keyword":
            assert hits == [], (kind, mode)

    def top(query: str) -> str:
        hits = query_lib.search(query, k=3, mode=mode)
        return Path(hits[0].path).name if hits else ""

    # Sensible: the document that holds the words comes first whatever surrounds them.
    assert top(ODD_QUERIES["1 MB"]) == "bread.md"
    assert top(ODD_QUERIES["full-width"]) == "bread.md"
    if mode != "vector":  # exact words, other scripts: the keyword side finds them
        assert top("東京") == "tokyo.md"
        assert top("القهوة العربية") == "coffee.md"
        assert top(ODD_QUERIES["emoji and word"]) == "party.md"
        assert top(ODD_QUERIES["combining accent"]) == "cafe.md"
        assert top(ODD_QUERIES["control"]) == "bread.md"


def test_a_rerank_reads_the_query_as_the_search_did(query_lib):
    """Lone surrogates (undecodable argv bytes) reach the teacher as U+FFFD, as they reach the search."""
    raw = ODD_QUERIES["lone surrogates"]
    hits = query_lib.search(raw, k=5)
    reranked = query_lib.rerank(raw, hits)
    replaced = query_lib.rerank(raw.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), hits)
    assert reranked and [h.path for h in reranked] == [h.path for h in replaced]


def test_odd_queries_on_the_command_line(query_lib):
    lib = query_lib.path
    for mode in ("keyword", "hybrid", "vector"):
        for query in ("", "\x01\x1b[2J", '"(*NEAR:-', "🍞 東京 القهوة", "sourdough " * 10_000):
            proc = cli(lib, "search", "--mode", mode, "--", query)
            assert proc.returncode == 0 and "Traceback" not in proc.stderr, (mode, query[:30], proc.stderr)
    # Undecodable bytes in argv reach Python as lone surrogates; the output must stay valid
    # UTF-8 even where stdout is strict (a desktop UTF-8 locale).
    strict = dict(os.environ, PYTHONIOENCODING="utf-8:strict")
    for mode, json_flag in (("keyword", ["--json"]), ("hybrid", ["--json"]), ("vector", ["--json"]), ("vector", [])):
        proc = subprocess.run([sys.executable, "-m", "edge_dse.cli", "-l", str(lib), "--model", MODEL, "search",
                               *json_flag, "--mode", mode, b"sourdough \xff\xfe"], capture_output=True,
                              timeout=120, env=strict)
        assert proc.returncode == 0 and b"Traceback" not in proc.stderr, (mode, proc.stderr)
        out = proc.stdout.decode("utf-8")  # strict: no raw bytes echoed
        assert "bread.md" in (json.loads(out)["hits"][0]["path"] if json_flag else out.splitlines()[0])


WORDS = ["sourdough", "starter", "bread", "loaf", "東京", "القهوة", "café", "cafe", "crème", "party", "cake",
         "dough", "the", "and", "NEAR", "AND", "OR", "NOT"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.one_of(st.text(st.characters(exclude_categories=())),  # surrogates too
                       st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=4)), max_size=8).map(" ".join)),
       mode=st.sampled_from(["keyword", "hybrid"]))
def test_any_query_never_raises_and_keyword_hits_hold_a_query_term(query_lib, query, mode):
    check_hits(query_lib, query, mode)


# -- files that would cost without end: a budget per file, and large files in steps ------------
def shared_stream_pdf(path: Path, pages: int = 1000, ops: int = 200_000) -> None:
    """A ~160 KB PDF whose pages all show one compressed stream of 200,000 text operations:
    pypdf works through the whole stream again for every page."""
    import zlib

    content = zlib.compress(b"BT /F1 1 Tf " + b"(ab) Tj 0 1 Td " * ops + b"ET", 9)
    bodies = [b"<< /Type /Catalog /Pages 2 0 R >>",
              ("<< /Type /Pages /Kids [" + " ".join(f"{5 + i} 0 R" for i in range(pages)) + f"] /Count {pages} >>").encode(),
              f"<< /Length {len(content)} /Filter /FlateDecode >>\nstream\n".encode() + content + b"\nendstream",
              b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    bodies += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents 3 0 R "
               b"/Resources << /Font << /F1 4 0 R >> >> >>"] * pages
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(bodies, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(bodies) + 1}\n0000000000 65535 f \n".encode() + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    path.write_bytes(out + f"trailer\n<< /Size {len(bodies) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())


def tiny_paragraphs_docx(path: Path, n: int = 400_000) -> None:
    """A ~1 MB .docx of 400,000 one-word paragraphs (15 MB of XML, well under the zip-bomb
    limits): python-docx needs hundreds of MB for it."""
    write_docx(path, "t", "b")
    with zipfile.ZipFile(path) as src:
        parts = [(info, src.read(info)) for info in src.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for info, data in parts:
            if info.filename == "word/document.xml":
                head, tail = data.split(b"<w:body>")
                data = head + b"<w:body>" + b"".join(b"<w:p><w:r><w:t>w%d</w:t></w:r></w:p>" % i for i in range(n)) + tail
            out.writestr(info, data)
    path.write_bytes(buf.getvalue())


BUDGETED_SYNC = """
import json, sys
from edge_dse import Library
with Library(sys.argv[1], model=sys.argv[2], progress=False, extract_seconds=float(sys.argv[4]),
             extract_memory=int(sys.argv[5])) as lib:
    print(json.dumps(lib.add(sys.argv[3]).errors))
"""


def test_a_pdf_or_docx_over_its_budget_is_recorded_failed_and_the_sync_goes_on(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    shared_stream_pdf(folder / "a-slow.pdf")
    tiny_paragraphs_docx(folder / "b-bloated.docx")
    write_topic(folder, "bike", ".pdf")  # after them in the sync: the worker is started again
    write_topic(folder, "taxes", ".docx")
    # 5 s and 256 MB: the worker itself needs ~70 MB; these files need far more of both.
    proc = subprocess.Popen([sys.executable, "-c", BUDGETED_SYNC, str(tmp_path / "lib"), MODEL, str(folder), "5",
                             str(256 * 1024 ** 2)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=300)  # a safety net: without a budget this sync runs for hours
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the sync ran on: a file's extraction had no budget")
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert {Path(p).name: why for p, why in json.loads(out)} == {
        "a-slow.pdf": "over the time budget: extraction took more than 5 s",
        "b-bloated.docx": "over the memory budget: needs more than 256 MB to extract"}
    assert keyword_paths(tmp_path / "lib", "puncture") == [str(folder / "bike.pdf")]
    assert keyword_paths(tmp_path / "lib", "deductible") == [str(folder / "taxes.docx")]


def partial_rows(db: Path, path: Path) -> tuple[int, str | None]:
    """(chunks committed, error) of one file, read without waiting on the writer."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("select n_chunks, error from files where path = ?", (str(path),)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return 0, None
    return row or (0, None)


def test_a_large_file_is_committed_in_groups_and_a_killed_sync_goes_on(tmp_path, encoder):
    from edge_dse.library import EMBED_GROUP_CHUNKS

    folder, lib_dir = tmp_path / "docs", tmp_path / "lib"
    folder.mkdir()
    big = folder / "big.txt"
    big.write_text("".join(f"Paragraph {i}: the marker word m{i:04d}x stands in it. " + "filler words here " * 40
                           + "\n\n" for i in range(700)), encoding="utf-8")
    total = len(chunk_text(extract(big)))
    assert total > 2 * EMBED_GROUP_CHUNKS
    proc = subprocess.Popen([sys.executable, "-m", "edge_dse.cli", "-q", "-l", str(lib_dir), "--model", MODEL,
                             "index", str(folder)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300  # a safety net: the wait is for the first group's commit
    while partial_rows(lib_dir / "catalog.db", big)[0] == 0 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.communicate()
    done, error = partial_rows(lib_dir / "catalog.db", big)
    assert 0 < done < total, "the sync finished before it could be stopped"
    assert error == f"partly indexed: {done} of {total} chunks (stopped mid-way: the next sync goes on)"
    with Library(lib_dir, model=encoder, progress=False) as lib:
        assert [Path(h.path).name for h in lib.search("m0000x", mode="keyword")] == ["big.txt"]  # committed, searchable
        report = lib.sync()
        assert report.chunks == total - done and report.failed == 0  # went on, not from zero
        stored = [r[0] for r in lib.catalog.db.execute("select text from chunks where path = ? order by id", (str(big),))]
        assert stored == [c.text for c in chunk_text(extract(big))]  # every chunk once, in order
        assert lib.catalog.file_state(str(big)).status == "ok"
        assert lib.sync().chunks == 0
