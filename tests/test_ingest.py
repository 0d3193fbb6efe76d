"""Ingest on real files: discovery, text extraction per type, bad files, and chunk invariants."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TOPICS, write_docx, write_pdf
from edge_dse.errors import ExtractError
from edge_dse.ingest import chunk_text, discover, extract
from edge_dse.ingest.discover import FoundFile, SkippedFile
from edge_dse.ingest.extract import Extracted, Heading, decode_text


def found(root: Path, **kw) -> list[str]:
    return [str(f.path.relative_to(root)) for f in discover(root, **kw) if isinstance(f, FoundFile)]


def skipped(root: Path, **kw) -> dict[str, str]:
    return {str(f.path.relative_to(root)): f.reason for f in discover(root, **kw) if isinstance(f, SkippedFile)}


# -- extraction, one test per type ---------------------------------------------------------------
def test_markdown_text_and_headings(tmp_path):
    p = tmp_path / "a.md"
    p.write_text("# Kitchen\n\nIntro.\n\n## Bread\n\nFlour and water.\n\nSetext title\n------------\n\nMore.\n", encoding="utf-8")
    ex = extract(p)
    assert "Flour and water." in ex.text
    assert [(h.level, h.title) for h in ex.headings] == [(1, "Kitchen"), (2, "Bread"), (2, "Setext title")]
    for h in ex.headings:  # offsets point at the heading in the text
        assert h.title in ex.text[h.offset:h.offset + len(h.title) + 4]


def test_markdown_comments_in_fenced_code_are_not_headings(tmp_path):
    """A README's shell block (`# install it`) stays code: the chunks after it keep their section."""
    p = tmp_path / "README.md"
    p.write_text("# Set-up\n\n````bash\n# install the browser\napt-get install chromium\n```\n# still code\n````\n\n"
                 "## Web UI\n\nStart it.\n\n~~~\n# a comment\n~~~\n\n## Tests\n\n```\n# never closed\n", encoding="utf-8")
    assert [(h.level, h.title) for h in extract(p).headings] == [(1, "Set-up"), (2, "Web UI"), (2, "Tests")]


def test_rst_headings_and_levels(tmp_path):
    p = tmp_path / "guide.rst"
    p.write_text("=====\nGuide\n=====\n\nIntro.\n\nInstall\n-------\n\nRun pip.\n\nUpgrade\n-------\n\nAgain.\n", encoding="utf-8")
    ex = extract(p)
    assert [(h.level, h.title) for h in ex.headings] == [(1, "Guide"), (2, "Install"), (2, "Upgrade")]
    chunks = chunk_text(ex, max_chars=40, min_chars=1)
    assert any(c.heading == "Guide > Install" and "Run pip." in c.text for c in chunks)


def test_html_drops_script_and_style_keeps_headings(tmp_path):
    p = tmp_path / "page.html"
    p.write_text("<html><head><style>p{color:red}</style><script>var secret = 42;</script></head><body>"
                 "<h1>Plants</h1><p>Water them less &amp; keep them warm.</p><h2>Light</h2><p>Wipe the leaves.</p>"
                 "</body></html>", encoding="utf-8")
    ex = extract(p)
    assert "Water them less & keep them warm." in ex.text
    assert "secret" not in ex.text and "color" not in ex.text
    assert [(h.level, h.title) for h in ex.headings] == [(1, "Plants"), (2, "Light")]


def test_pdf_text_layer(tmp_path):
    title, body, _ = TOPICS["bike"]
    write_pdf(tmp_path / "bike.pdf", title, body)
    ex = extract(tmp_path / "bike.pdf")
    assert title in ex.text
    assert "pressure written on the sidewall." in ex.text


def test_docx_paragraphs_headings_and_tables(tmp_path):
    import docx

    title, body, _ = TOPICS["taxes"]
    path = tmp_path / "taxes.docx"
    write_docx(path, title, body)
    document = docx.Document(str(path))
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "deadline"
    table.rows[0].cells[1].text = "31 May"
    document.save(str(path))
    ex = extract(path)
    assert body in ex.text
    assert "deadline | 31 May" in ex.text
    assert [(h.level, h.title) for h in ex.headings] == [(1, title)]
    assert ex.text[ex.headings[0].offset:].startswith(title)


def test_source_code_is_text(tmp_path):
    p = tmp_path / "sort.py"
    p.write_text('def order(items):\n    """Sort by length."""\n    return sorted(items, key=len)\n', encoding="utf-8")
    assert "sorted(items, key=len)" in extract(p).text


def test_nfkc_and_line_ends(tmp_path):
    p = tmp_path / "lig.txt"
    p.write_bytes("The ﬁrst ｆｕｌｌwidth line\r\nsecond\rthird".encode("utf-8"))
    assert extract(p).text == "The first fullwidth line\nsecond\nthird"


@pytest.mark.parametrize("data, expected", [
    ("Grüße, naïve café".encode("utf-8"), "Grüße, naïve café"),
    ("Grüße, naïve café".encode("utf-8-sig"), "Grüße, naïve café"),
    ("Grüße, naïve café".encode("utf-16"), "Grüße, naïve café"),
    ("“smart quotes” – dash".encode("cp1252"), "“smart quotes” – dash"),
    (b"caf\xe9 \x81", "café \x81"),  # bytes cp1252 leaves undefined fall back to latin-1
])
def test_decode_text_encodings(data, expected):
    assert decode_text(data) == expected


# -- bad files: a reason, never a crash -----------------------------------------------------------
def _bomb_docx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("word/document.xml", b"\0" * (300 * 1024 * 1024))
    return buf.getvalue()


@pytest.mark.parametrize("name, data, reason", [
    ("empty.txt", b"", "empty"),
    ("blank.md", b"  \n\n \t\n", "empty"),
    ("photo.txt", bytes(range(256)) * 8, "binary"),
    ("broken.pdf", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog", "malformed PDF"),
    ("notapdf.pdf", b"hello, I am text", "malformed PDF"),
    ("broken.docx", b"PK\x03\x04 truncated", "not a valid .docx"),
    ("plain.docx", b"just text, not a zip", "not a valid .docx"),
    ("bad-utf16.txt", b"\xff\xfe" + b"\x00\xd8" + b"a", "invalid utf-16"),
])
def test_bad_files_raise_extract_error_with_reason(tmp_path, name, data, reason):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(ExtractError, match=reason):
        extract(p)


@pytest.mark.slow
def test_docx_zip_bomb_is_refused_before_inflating(tmp_path):
    p = tmp_path / "bomb.docx"
    p.write_bytes(_bomb_docx())
    assert p.stat().st_size < 2 * 1024 * 1024
    with pytest.raises(ExtractError, match="zip bomb"):
        extract(p)


def test_encrypted_pdf_needs_password(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    title, body, _ = TOPICS["bike"]
    write_pdf(tmp_path / "plain.pdf", title, body)
    writer = pypdf.PdfWriter(clone_from=str(tmp_path / "plain.pdf"))
    try:
        writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    except Exception as exc:  # RC4 needs no extra package; anything else here is an environment gap
        pytest.skip(f"pypdf cannot encrypt here: {exc}")
    writer.write(str(tmp_path / "locked.pdf"))
    with pytest.raises(ExtractError, match="encrypted PDF"):
        extract(tmp_path / "locked.pdf")


def test_image_only_pdf_says_no_text(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.write(str(tmp_path / "scan.pdf"))
    with pytest.raises(ExtractError, match="no extractable text"):
        extract(tmp_path / "scan.pdf")


def test_unreadable_path_is_an_extract_error(tmp_path):
    with pytest.raises(ExtractError, match="unreadable"):
        extract(tmp_path / "gone.txt")


# -- discovery ------------------------------------------------------------------------------------
def test_discover_ignores_hidden_vcs_build_and_unsupported(tmp_path):
    for rel in ["a.md", "sub/b.txt", "README", "Makefile", "photo.jpg", "archive.tar.gz",
                ".hidden.md", ".secret/c.md", ".git/config.txt", "node_modules/x/d.js", "build/e.txt",
                "__pycache__/f.py", "sub/deeper/g.py"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x", encoding="utf-8")
    assert found(tmp_path) == ["Makefile", "README", "a.md", "sub/b.txt", "sub/deeper/g.py"]
    # both are configurable
    assert ".secret/c.md" in found(tmp_path, include_hidden=True)
    assert "build/e.txt" in found(tmp_path, ignore_dirs=frozenset({".git"}))
    assert "node_modules/x/d.js" in found(tmp_path, ignore_dirs=frozenset())


def test_discover_size_limit_is_reported(tmp_path):
    (tmp_path / "big.txt").write_bytes(b"a" * 5000)
    (tmp_path / "small.txt").write_bytes(b"a" * 10)
    assert found(tmp_path, max_bytes=1000) == ["small.txt"]
    assert "too large" in skipped(tmp_path, max_bytes=1000)["big.txt"]


def test_discover_symlinks_fifo_and_loops(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "real.md").write_text("x", encoding="utf-8")
    (outside / "secret.md").write_text("x", encoding="utf-8")
    os.symlink(root, root / "sub" / "loop")                    # a directory loop: never followed
    os.symlink(outside, root / "escape")                       # a directory outside: never followed
    os.symlink(root / "sub" / "real.md", root / "alias.md")    # a file link inside: followed
    os.symlink(outside / "secret.md", root / "leak.md")        # a file link outside: refused
    os.symlink(root / "nowhere.md", root / "dangling.md")
    os.mkfifo(root / "pipe.txt")                               # reading it would block forever
    assert found(root) == ["alias.md", "sub/real.md"]
    reasons = skipped(root)
    assert reasons["leak.md"] == "symlink points outside the folder"
    assert reasons["dangling.md"] == "dangling symlink"
    assert "not a regular file" in reasons["pipe.txt"]


def test_discover_missing_or_not_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(discover(tmp_path / "nope"))
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(NotADirectoryError):
        list(discover(tmp_path / "f.txt"))


# -- chunking ------------------------------------------------------------------------------------
def check_chunks(ex: Extracted, chunks, max_chars: int) -> None:
    text = ex.text
    prev_end = 0
    for c in chunks:
        assert c.text == text[c.start:c.end]                     # offsets are exact
        assert c.text == c.text.strip() and c.text              # no empty or padded chunk
        assert c.start >= prev_end                               # ordered, never overlapping
        assert len(c.text) <= max_chars * 1.25                   # only a folded tail goes past max
        prev_end = c.end
    covered = "".join(c.text for c in chunks)
    assert "".join(text.split()) == "".join(covered.split())    # every non-space char, exactly once


words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=30)
prose = st.lists(st.one_of(words, st.sampled_from([". ", "\n\n", "\n", " ", "! ", "\n \n\n", "\t"])), max_size=200).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=prose, max_chars=st.integers(1, 300), heading_at=st.lists(st.integers(0, 3000), max_size=5))
def test_chunk_invariants_hold_for_any_text(text, max_chars, heading_at):
    heads = [Heading(min(o, len(text)), 1 + i % 3, f"H{i}") for i, o in enumerate(sorted(heading_at))]
    ex = Extracted(text, heads)
    chunks = chunk_text(ex, max_chars=max_chars, min_chars=min(100, max_chars))
    check_chunks(ex, chunks, max_chars)
    # no chunk crosses a heading
    for h in heads:
        assert not any(c.start < h.offset < c.end for c in chunks if h.offset < len(text))


def test_chunks_follow_paragraphs_then_sentences():
    para = "One sentence here. Another sentence there. " * 10
    ex = Extracted(f"{para.strip()}\n\nShort second paragraph.", [])
    chunks = chunk_text(ex, max_chars=200, min_chars=10)
    check_chunks(ex, chunks, 200)
    assert all(c.text.endswith(".") for c in chunks)  # cut at sentence ends, not mid-word
    assert chunks[-1].text.endswith("Short second paragraph.")


def test_chunk_headings_carry_the_path():
    text = "Top\n\nIntro text.\n\nSub\n\nBody text.\n\nOther\n\nMore text."
    heads = [Heading(0, 1, "Top"), Heading(text.index("Sub"), 2, "Sub"), Heading(text.index("Other"), 1, "Other")]
    chunks = chunk_text(Extracted(text, heads), max_chars=1000)
    assert [(c.heading, c.text.split()[-1]) for c in chunks] == [
        ("Top", "text."), ("Top > Sub", "text."), ("Other", "text.")]


def test_real_python_docs_chunk_cleanly():
    """Every .rst source of the Python docs (when installed) extracts and chunks within bounds."""
    root = Path("/usr/share/doc/python3.11/html/_sources")
    if not root.is_dir():
        pytest.skip("python3.11-doc is not installed (apt-get install python3.11-doc)")
    files = [f.path for f in discover(root) if isinstance(f, FoundFile)][:80]
    assert len(files) >= 50
    for path in files:
        ex = extract(path)
        check_chunks(ex, chunk_text(ex), 1000)
