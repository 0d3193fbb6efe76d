"""Text out of a file, per type, NFKC-normalised, with the headings it declares.

Every failure becomes ExtractError(reason): a bad file is recorded and skipped by the caller,
it never aborts a sync (docs/invariants.md, 5).
"""

from __future__ import annotations

import bisect
import codecs
import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from ..errors import ExtractError

# A .docx is a zip: refuse archives that would inflate past this (zip bombs).
MAX_UNZIPPED_BYTES = 200 * 1024 * 1024
MAX_ZIP_RATIO = 200
# A .gz file may not inflate past the size limit a plain file has (ingest.discover.DEFAULT_MAX_BYTES).
MAX_GUNZIPPED_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class Heading:
    offset: int  # where the heading line starts in Extracted.text
    level: int
    title: str


@dataclass
class Extracted:
    text: str
    headings: list[Heading] = field(default_factory=list)


def normalise(text: str) -> str:
    """NFKC (ligatures such as "ﬄ" become "ffl") and \\n line ends."""
    return unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))


def looks_binary(data: bytes) -> bool:
    head = data[:8192]
    if b"\x00" in head:
        return True
    control = sum(1 for b in head if b < 9 or 13 < b < 32)
    return bool(head) and control / len(head) > 0.05


def decode_text(data: bytes) -> str:
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
                     (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(enc)
            except UnicodeDecodeError as exc:
                raise ExtractError(f"invalid {enc} text: {exc.reason} at byte {exc.start}") from exc
    if looks_binary(data):
        raise ExtractError("binary content, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Not UTF-8 but not binary either: old 8-bit text. cp1252 is the common case; bytes it
        # does not define fall back to latin-1 so no text is ever refused for its encoding.
        return data.decode("cp1252", errors="strict") if _cp1252_ok(data) else data.decode("latin-1")


def _cp1252_ok(data: bytes) -> bool:
    try:
        data.decode("cp1252")
        return True
    except UnicodeDecodeError:
        return False


# Both patterns match in linear time: trailing "#"s and blanks are stripped in code, and a title
# is any line, checked for text in code. The obvious forms ((.+?)[ \t#]*$ and [^\n]*\S[^\n]*)
# backtrack quadratically on a long line: a 10 MB single-line .md file hung the sync.
_ATX = re.compile(r"^(#{1,6})[ \t]+(.+)$", re.M)
_SETEXT = re.compile(r"^(?P<title>[^\n]+)\n(?P<rule>=+|-+)[ \t]*$", re.M)
_RST_ADORN = re.compile(r"^([=\-~^\"'`#*+:.<>_])\1{2,}[ \t]*$")


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def fenced_code_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of Markdown's fenced code blocks (``` or ~~~, CommonMark's rule: closed
    by a fence of the same character at least as long; an unclosed one runs to the end). A shell
    comment in a code block (`# install it`) is not a heading."""
    spans, opened, offset = [], None, 0
    for line in text.splitlines(keepends=True):
        m = _FENCE.match(line)
        if m:
            fence = m.group(1)
            if opened is None:
                opened = (offset, fence)
            elif fence[0] == opened[1][0] and len(fence) >= len(opened[1]) and not line[m.end():].strip():
                spans.append((opened[0], offset + len(line)))
                opened = None
        offset += len(line)
    if opened is not None:
        spans.append((opened[0], len(text)))
    return spans


def markdown_headings(text: str) -> list[Heading]:
    heads = []
    for m in _ATX.finditer(text):
        title = m.group(2).rstrip(" \t#").strip()
        if title:
            heads.append(Heading(m.start(), len(m.group(1)), title))
    for m in _SETEXT.finditer(text):
        title = m.group("title").strip()
        if title and not title.startswith(("#", "-", "*", ">", "|")) and len(title) < 200:
            heads.append(Heading(m.start(), 1 if m.group("rule")[0] == "=" else 2, title))
    code = fenced_code_spans(text)
    if code:
        starts = [start for start, _ in code]
        # bisect: the last span starting at or before the heading, if it still covers it
        heads = [h for h in heads if not ((i := bisect.bisect_right(starts, h.offset) - 1) >= 0 and h.offset < code[i][1])]
    return sorted(heads, key=lambda h: h.offset)


def rst_headings(text: str) -> list[Heading]:
    """reST titles: a line underlined (optionally overlined) by one repeated punctuation char;
    levels follow the order in which adornment styles first appear, as docutils does."""
    lines = text.split("\n")
    starts, pos = [], 0
    for line in lines:
        starts.append(pos)
        pos += len(line) + 1
    styles: list[tuple[str, bool]] = []
    heads = []
    i = 0
    while i < len(lines) - 1:
        title, under = lines[i], lines[i + 1]
        over = i > 0 and _RST_ADORN.match(lines[i - 1] or "") is not None and lines[i - 1].strip()[0] == under.strip()[:1]
        if title.strip() and not _RST_ADORN.match(title) and _RST_ADORN.match(under) and len(under.strip()) >= len(title.strip()) * 0.8:
            style = (under.strip()[0], bool(over))
            if style not in styles:
                styles.append(style)
            offset = starts[i - 1] if over else starts[i]
            heads.append(Heading(offset, styles.index(style) + 1, title.strip()))
            i += 2
            continue
        i += 1
    return heads


class _HTMLText(HTMLParser):
    BLOCK = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header", "footer", "pre",
             "blockquote", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "td", "th", "main", "nav", "figure"}
    SKIP = {"script", "style", "head", "noscript", "template", "svg"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.length = 0
        self.skip = 0
        self.heading: tuple[int, int] | None = None  # (level, offset)
        self.headings: list[Heading] = []
        self.title_parts: list[str] = []

    def _emit(self, s: str) -> None:
        self.parts.append(s)
        self.length += len(s)

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self._emit("\n\n" if tag in ("p", "div", "section", "article") or tag[0] == "h" else "\n")
            if tag in ("h1", "h2", "h3", "h4", "h5", "h6") and not self.skip:
                self.heading = (int(tag[1]), self.length)
                self.title_parts = []

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            if self.heading and tag == f"h{self.heading[0]}":
                title = " ".join("".join(self.title_parts).split())
                if title:
                    self.headings.append(Heading(self.heading[1], self.heading[0], title))
                self.heading = None
            self._emit("\n")

    def handle_data(self, data):
        if self.skip:
            return
        self._emit(data)
        if self.heading:
            self.title_parts.append(data)


def _tidy(text: str, headings: list[Heading]) -> Extracted:
    """Strip every line and collapse runs of blank lines into one; headings move with their line."""
    offsets = sorted(h.offset for h in headings)
    moved: dict[int, int] = {}
    out: list[str] = []
    pos, line_start, blank = 0, 0, True
    for line in text.split("\n"):
        line_end = line_start + len(line)
        stripped = line.strip()
        if stripped:
            for o in offsets:
                if line_start <= o <= line_end:
                    moved[o] = pos
            out.append(stripped)
            pos += len(stripped) + 1
            blank = False
        elif not blank:
            out.append("")
            pos += 1
            blank = True
        line_start = line_end + 1
    heads = [Heading(moved[h.offset], h.level, h.title) for h in headings if h.offset in moved]
    return Extracted("\n".join(out).rstrip("\n"), heads)


def extract_html(data: bytes) -> Extracted:
    parser = _HTMLText()
    parser.feed(decode_text(data))
    parser.close()
    raw = normalise("".join(parser.parts))
    heads = []
    for h in parser.headings:  # point each heading at its first non-blank character
        off = h.offset
        while off < len(raw) and raw[off] in "\n \t":
            off += 1
        heads.append(Heading(off, h.level, normalise(h.title)))
    return _tidy(raw, heads)


def extract_pdf(data: bytes) -> Extracted:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise ExtractError("encrypted PDF (needs a password)")
            except ExtractError:
                raise
            except Exception as exc:
                raise ExtractError(f"encrypted PDF ({exc})") from exc
        pages = [page.extract_text() or "" for page in reader.pages]
    except ExtractError:
        raise
    except (PdfReadError, Exception) as exc:  # pypdf raises many types on malformed input
        raise ExtractError(f"malformed PDF: {type(exc).__name__}: {str(exc)[:120]}") from exc
    text = normalise("\n\n".join(p.strip() for p in pages))
    if not text.strip():
        raise ExtractError("no extractable text (scanned or image-only PDF?)")
    return Extracted(text, [])


def _check_zip(data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            total = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ExtractError("not a valid .docx (truncated or corrupt zip)") from exc
    if total > MAX_UNZIPPED_BYTES or total > MAX_ZIP_RATIO * max(len(data), 1):
        raise ExtractError(f"zip bomb refused: would inflate to {total / 1e6:.0f} MB from {len(data) / 1e6:.1f} MB")


def extract_docx(data: bytes) -> Extracted:
    _check_zip(data)
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
        parts, heads, pos = [], [], 0
        blocks = [(p.text, p.style.name if p.style is not None else "") for p in document.paragraphs]
        for table in document.tables:
            for row in table.rows:
                cells = []
                for cell in row.cells:
                    if cell.text.strip() and (not cells or cells[-1] != cell.text.strip()):
                        cells.append(cell.text.strip())
                blocks.append((" | ".join(cells), ""))
    except ExtractError:
        raise
    except Exception as exc:
        raise ExtractError(f"not a valid .docx ({type(exc).__name__}: {str(exc)[:120]})") from exc
    for text, style in blocks:
        text = normalise(text).strip()
        if not text:
            continue
        m = re.match(r"(Heading|Title)\s*(\d*)", style or "")
        if m:
            heads.append(Heading(pos, int(m.group(2) or 1) if m.group(1) == "Heading" else 1, text))
        parts.append(text)
        pos += len(text) + 2
    return Extracted("\n\n".join(parts), heads)


def gunzip(data: bytes, limit: int = MAX_GUNZIPPED_BYTES) -> bytes:
    """The content of a gzip file, refused past `limit` bytes (a gzip bomb is read no further)."""
    import gzip
    import zlib

    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            out = fh.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise ExtractError(f"not a valid .gz file ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if len(out) > limit:
        raise ExtractError(f"too large once decompressed: over {limit / 1024 / 1024:.1f} MB (a gzip bomb?)")
    return out


def extract(path: Path, data: bytes | None = None) -> Extracted:
    """The text of a file and its headings; raises ExtractError(reason) for a bad file."""
    path = Path(path)
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ExtractError(f"unreadable: {exc.strerror or exc}") from exc
    if path.suffix.lower() == ".gz":  # README.gz, changelog.Debian.gz: the text inside, as its own name
        data, path = gunzip(data), path.with_suffix("")
    name = path.name.lower()
    suffix = path.suffix.lower()
    try:
        if suffix == ".pdf":
            result = extract_pdf(data)
        elif suffix == ".docx":
            result = extract_docx(data)
        elif suffix in (".html", ".htm", ".xhtml"):
            result = extract_html(data)
        else:
            text = normalise(decode_text(data))
            if suffix in (".md", ".markdown"):
                heads = markdown_headings(text)
            elif suffix == ".rst" or name.endswith(".rst.txt"):
                heads = rst_headings(text)
            else:
                heads = []
            result = Extracted(text, heads)
    except ExtractError:
        raise
    except Exception as exc:  # a parser bug on odd input must not abort a sync
        raise ExtractError(f"{type(exc).__name__}: {str(exc)[:160]}") from exc
    if not result.text.strip():
        raise ExtractError("empty: no text")
    return result
