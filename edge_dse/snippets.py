"""A chunk's text as a reader sees it rendered: the markup of reStructuredText and Markdown taken
out, for the snippets the UI shows under each hit.

Display only. The catalog keeps each chunk exactly as the file has it: its offsets, the text the
encoder embedded and the words BM25 counted all refer to that, and "open in context" shows the
file itself. Nothing here reads or writes the library.

`plain_text` is pure and works line by line, then on each paragraph's inline markup:

- dropped: heading under/overlines (``=====``, ``-----``), transitions and horizontal rules, table
  borders, ``.. directive::`` lines and their ``:option:`` lines, comments, link targets
  (``.. _name:``, ``[id]: url``), code fences;
- kept, without their markup: Markdown headings (``# Title``), block quotes, ``**strong**``,
  ``*emphasis*``, ````literal````, ```code```, ``:role:`text``` (``:func:`~os.path.join``` reads
  ``join``, as Sphinx shows it), links (``[text](url)``, ```text <url>`_``, ``name_``),
  images (their alt text), admonitions (``.. note:: x`` reads ``Note: x``), version notes,
  signatures (``.. function:: open(file)`` reads ``open(file)``);
- list bullets become "•", table rows "a · b";
- code (literal blocks after ``::``, code-block directives, fenced code) is kept as written.

Underscore emphasis (``_x_``, ``__x__``) is left alone: in Python documentation ``__init__`` is a
name, not bold "init".
"""

from __future__ import annotations

import re
from pathlib import PurePath

# Files whose text is (or is often) reStructuredText or Markdown; other kinds (code, PDF, HTML,
# DOCX: their extractors already give plain text) are shown as they are.
MARKUP_SUFFIXES = frozenset({".md", ".markdown", ".rst", ".txt", ".text"})


def has_markup(path: str) -> bool:
    return PurePath(path).suffix.lower() in MARKUP_SUFFIXES


def display_text(path: str, text: str) -> str:
    """The text to show for a chunk of the file at `path`: without markup for a markup file."""
    return plain_text(text) if has_markup(path) else text


# -- lines ---------------------------------------------------------------------------------------
# A line of punctuation only: a heading's under/overline or a transition (one character repeated),
# a Markdown rule ("* * *", "- - -"), a table border ("+----+----+", "|---|:--:|", "=====  =====").
_RULE = re.compile(r"[ \t]*(?:([=\-~^\"'`#*+:._<>])\1{2,}|[-*_](?:[ \t]*[-*_]){2,}"
                   r"|[+|]?(?:[ \t]*:?[=\-]{3,}:?[ \t]*[+|]?)+)[ \t]*")
_DIRECTIVE = re.compile(r"([ \t]*)\.\.[ \t]+(?:\|[^|\n]+\|[ \t]+)?([\w:.+-]+?)::(?:[ \t]+(.*))?")
_EXPLICIT = re.compile(r"([ \t]*)\.\.(?:[ \t]+(.*))?")  # a comment, target or footnote (not a directive)
_FOOTNOTE = re.compile(r"(\[(?:#|\*|\w[\w.-]*)?\])[ \t]+(.*)")
_OPTION = re.compile(r"[ \t]+:[\w-]+:(?:[ \t].*)?")
_FENCE = re.compile(r"[ \t]{0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"[ \t]{0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*")
_ATX_EMPTY = re.compile(r"[ \t]{0,3}#{1,6}[ \t]*")
_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+")
_BULLET = re.compile(r"^([ \t]*)(?:[-*+•]|#\.)[ \t]+")
_LINK_DEF = re.compile(r"[ \t]{0,3}\[[^\]\n]+\]:[ \t]*\S+.*")
_FIELD = re.compile(r"^([ \t]*):([\w-]+(?:[ \t]+[^:`\n]+?)?):(?=[ \t]|$)")
_TABLE_ROW = re.compile(r"[ \t]*\|.*\|[ \t]*")
_LINE_BLOCK = re.compile(r"^[ \t]*\|[ \t]+")

ADMONITIONS = {"note", "warning", "tip", "important", "caution", "danger", "hint", "attention", "error",
               "seealso", "todo", "admonition"}
VERSION_NOTES = {"versionadded": "New in version", "versionchanged": "Changed in version",
                 "deprecated": "Deprecated since version", "versionremoved": "Removed in version"}
# Directives whose body is code (kept as written) and those whose body is not text for a reader.
CODE_DIRECTIVES = {"code-block", "code", "sourcecode", "doctest", "testcode", "testoutput", "productionlist",
                   "literalinclude", "math"}
NO_TEXT_DIRECTIVES = {"toctree", "image", "raw", "include", "index", "highlight", "contents", "sectnum",
                      "csv-table", "autosummary", "tabularcolumns", "only"}
# Sphinx object descriptions: the argument is the signature a rendered page shows.
SIGNATURES = {"function", "class", "method", "attribute", "data", "exception", "decorator", "classmethod",
              "staticmethod", "property", "describe", "object", "option", "envvar", "cmdoption", "module",
              "currentmodule", "opcode", "pdbcommand", "type", "member", "macro", "var", "program"}
_NO_SIGNATURE = {"module", "currentmodule", "program"}  # not shown on the page


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _directive_line(indent: str, name: str, arg: str) -> str | None:
    """What a rendered page shows for a directive's own line (None: nothing)."""
    name = name.lower().rsplit(":", 1)[-1]  # py:function -> function
    if name in ADMONITIONS:
        label = "See also" if name == "seealso" else name.capitalize()
        if name == "admonition":
            return f"{indent}{arg}" if arg else None
        return f"{indent}{label}: {arg}" if arg else f"{indent}{label}:"
    if name in VERSION_NOTES:
        version, _, rest = arg.partition(" ")
        return f"{indent}{VERSION_NOTES[name]} {version}" + (f": {rest.strip()}" if rest.strip() else ".")
    if name in SIGNATURES and name not in _NO_SIGNATURE and arg:
        return f"{indent}{arg}"
    return None


def _blocks(text: str) -> list[tuple[str, bool]]:
    """The text's lines, markup lines dropped or rewritten, grouped into (block, is_code)."""
    out: list[tuple[str, bool]] = []  # (line, is_code)
    fence = ""  # the fence that opened a code block
    literal_after = None  # indent of a paragraph ending "::": an indented block below it is code
    literal = None  # indent of the literal block under way
    body = None  # (indent, kind) of a directive's or comment's body: "code", "drop" or "text"
    options = False  # a directive's :option: lines may come (right after its first line)

    lines = text.split("\n")
    for i, line in enumerate(lines):
        prev = lines[i - 1] if i else ""
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence):
                fence = ""
            else:
                out.append((line, True))
            continue
        if literal is not None:
            if not stripped or _indent(line) >= literal:
                out.append((line, True))
                continue
            literal = None
        if body is not None:
            indent, kind = body
            if not stripped or _indent(line) > indent:  # the body goes on
                if stripped and options and _OPTION.fullmatch(line):
                    continue  # :maxdepth: 2, :linenos: and the like
                options = False
                if kind == "drop":
                    continue
                if kind == "code":
                    out.append((line, True))
                    continue
                # a text body (a note's, a function's description): read as any other line
            else:
                body, options = None, False
        if literal_after is not None and stripped:
            if _indent(line) > literal_after:
                literal = _indent(line)
                literal_after = None
                out.append((line, True))
                continue
            literal_after = None

        m = _FENCE.match(line)
        if m and not (stripped == m.group(1) and prev.strip() and len(stripped) >= len(prev.strip())):
            fence = m.group(1)  # (a bare run as long as the line above underlines it: a heading)
            continue
        m = _DIRECTIVE.fullmatch(line)
        if m:
            indent, name, arg = m.group(1), m.group(2).lower().rsplit(":", 1)[-1], (m.group(3) or "").strip()
            shown = _directive_line(indent, name, arg)
            if shown is not None:
                out.append((shown, False))
            kind = "code" if name in CODE_DIRECTIVES else "drop" if name in NO_TEXT_DIRECTIVES else "text"
            body, options = (len(indent), kind), True
            continue
        m = _EXPLICIT.fullmatch(line)
        if m:
            note = _FOOTNOTE.fullmatch(m.group(2) or "")
            if note:  # a footnote or citation: its text shows
                out.append((f"{m.group(1)}{note.group(1)} {note.group(2)}", False))
            else:  # a comment or a link target: nothing shows
                body = (len(m.group(1)), "drop")
            continue
        if _RULE.fullmatch(line) or _LINK_DEF.fullmatch(line):
            continue
        if stripped == "::":  # "::" alone introduces a literal block and shows nothing
            literal_after = _indent(line)
            continue
        if stripped.endswith("::"):
            literal_after = _indent(line)
            line = line.rstrip()
            line = line[:-2].rstrip() if line[-3:-2].isspace() else line[:-1]  # "Example::" -> "Example:"
        m = _ATX.fullmatch(line)
        if m:
            out.append((m.group(1), False))
            continue
        if _ATX_EMPTY.fullmatch(line):
            continue
        if _TABLE_ROW.fullmatch(line) and line.count("|") >= 3:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out.append((" · ".join(c for c in cells if c), False))
            continue
        line = _QUOTE.sub("", line, count=1) if line.lstrip().startswith(">") else line
        line = _LINE_BLOCK.sub("", line, count=1) if line.lstrip().startswith("| ") else line
        line = _BULLET.sub(lambda b: f"{b.group(1)}• ", line, count=1)
        line = _FIELD.sub(lambda f: f"{f.group(1)}{f.group(2)}:", line, count=1)
        out.append((line, False))

    blocks: list[tuple[str, bool]] = []
    for line, code in out:
        if blocks and blocks[-1][1] == code:
            blocks[-1] = (blocks[-1][0] + "\n" + line, code)
        else:
            blocks.append((line, code))
    return blocks


# -- inline markup ---------------------------------------------------------------------------------
# Inline markup may run over a line break, not over a blank line (`_IN`: a character of it).
# Lengths are bounded and no pattern nests unbounded quantifiers: each runs in linear time.
_IN = r"(?:[^`\n]|\n(?![ \t]*\n))"
_MD_IMAGE = re.compile(r"!\[([^\]\n]{0,300})\]\([^)\n]{0,2000}\)")
_MD_LINK = re.compile(r"\[((?:[^\]\n]|\n(?![ \t]*\n)){1,300})\](?:\([^)\n]{0,2000}\)|\[[^\]\n]{0,300}\])")
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^>\s]{1,2000})>")
_ROLE = re.compile(r":(?:[\w.+-]{1,40}:){1,3}`(" + _IN + r"{1,300})`")
_RST_LINK = re.compile(r"`(" + _IN + r"{1,300})`_{1,2}(?![\w])")
_LITERAL = re.compile(r"``(?=\S)((?:[^\n]|\n(?![ \t]*\n)){1,300}?)(?<=\S)``")
_CODE = re.compile(r"`(" + _IN + r"{1,300})`")
_FOOTNOTE_REF = re.compile(r"(\[(?:#|\*|\w[\w.-]{0,40})?\])_(?![\w])")
_WORD_REF = re.compile(r"\b([A-Za-z0-9](?:[\w.-]{0,200}[A-Za-z0-9])?)__?(?=[\s.,;:!?)\]'\"]|$)")
_SUBST = re.compile(r"(?<![\w|])\|(?=\S)([^|\n]{1,200}?)(?<=\S)\|(?![\w|])")
_STRONG_EM = re.compile(r"(?<![\w*\\])\*\*\*(?=\S)([^*]{1,2000}?)(?<=\S)\*\*\*(?![\w*])")
_STRONG = re.compile(r"(?<![\w*\\])\*\*(?=\S)([^*]{1,2000}?)(?<=\S)\*\*(?![\w*])")
_EM = re.compile(r"(?<![\w*\\])\*(?=[^\s*])([^*]{1,2000}?)(?<=[^\s\\])\*(?![\w*])")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|<>:])")
_TARGET = re.compile(r"\s*<[^<>\n]*>$")
_HELD = re.compile(r"\x00(\d+)\x00")


def _role_text(text: str) -> str:
    """What Sphinx shows for a role's content: 'title <target>' -> title; '~a.b.c' -> c; '!x' -> x."""
    titled = _TARGET.sub("", text)
    if titled != text and titled.strip():
        return titled.strip()
    text = text.lstrip("!")
    if text.startswith("~"):
        text = text[1:].rsplit(".", 1)[-1]
    return text


def _link_text(text: str) -> str:
    titled = _TARGET.sub("", text)
    return titled.strip() if titled.strip() else text.strip("<>")


def _inline(text: str) -> str:
    held: list[str] = []

    def hold(s: str) -> str:  # code text is kept as written: no emphasis is looked for in it
        held.append(s)
        return f"\x00{len(held) - 1}\x00"

    text = text.replace("\x00", "")
    text = _ROLE.sub(lambda m: hold(_role_text(m.group(1))), text)
    text = _LITERAL.sub(lambda m: hold(m.group(1)), text)
    text = _RST_LINK.sub(lambda m: _link_text(m.group(1)), text)
    text = _CODE.sub(lambda m: hold(m.group(1)), text)
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _AUTOLINK.sub(r"\1", text)
    text = _FOOTNOTE_REF.sub(r"\1", text)
    text = _WORD_REF.sub(r"\1", text)
    text = _SUBST.sub(r"\1", text)
    for pattern in (_STRONG_EM, _STRONG, _EM, _STRONG):
        text = pattern.sub(r"\1", text)
    text = _ESCAPE.sub(r"\1", text)
    return _HELD.sub(lambda m: held[int(m.group(1))], text)


def plain_text(text: str) -> str:
    """`text` (reStructuredText, Markdown or plain) without its markup: see the module's doc."""
    parts = [block if code else _inline(block) for block, code in _blocks(text)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(parts)).strip("\n")
