"""edge_dse.snippets: the markup of reStructuredText and Markdown taken out of the text a hit's
snippet shows, on chunks shaped like the ones a library holds (a chunk starts at its heading)."""

from __future__ import annotations

from edge_dse.snippets import display_text, has_markup, plain_text

# A chunk of CPython's documentation source (Doc/tutorial/inputoutput.rst), Sphinx markup and all.
RST = """\
Reading and Writing Files
=========================

.. index::
   pair: built-in function; open
   pair: object; file

:func:`open` returns a :term:`file object`, and is most commonly used with
two positional arguments and one keyword argument:
``open(filename, mode, encoding=None)``.  See `the tutorial
<https://docs.python.org/3/tutorial/>`_ and `PEP 8`_ for *more*, or **the reference** [#]_.

.. note::
   The *mode* argument is optional; ``'r'`` will be assumed if it's omitted.

.. versionadded:: 3.2
   The *encoding* parameter.

Example::

   >>> f = open('workfile', 'w', encoding="utf-8")
   >>> f.write(*args, **kwargs)

.. code-block:: python
   :linenos:

   def main(*args, **kwargs):
       return 0  # *not* emphasis

- first item, see :meth:`~io.TextIOBase.read`
- second item, see :ref:`the file methods <tut-filemethods>`

#. numbered

.. function:: open(file, mode='r', buffering=-1)

   Open *file* and return a :class:`~io.TextIOWrapper`.

   :param file: a path-like object

.. _PEP 8: https://peps.python.org/pep-0008/

.. [#] The footnote's text.

Methods of File Objects
-----------------------

The function __init__ and snake_case_name stay as written; so do 2*3*4 and f(*args, **kwargs).
"""

# A chunk of a project README.
MARKDOWN = """\
# edge_dse — search your own files

**Private** semantic search over *your* files, with `edge-dse search "query"`.
See the [architecture notes](docs/architecture.md), ![the search tab](docs/ui-search.png)
and the [FAQ][faq].

## Install

```bash
pip install -e '.[ui]'   # **not** bold, `not` code
```

- one
* two
  + nested

> A quoted **warning**: <https://example.com/x>.

| mode | what it ranks by |
|------|:----------------:|
| vector | the encoder |

---

Setext heading
--------------

Escaped \\*stars\\* stay stars.

[faq]: https://example.com/faq
"""


def lines(text: str) -> list[str]:
    return [line.strip() for line in plain_text(text).splitlines() if line.strip()]


def test_rst_headings_roles_links_and_directives_read_as_rendered():
    out = lines(RST)
    text = "\n".join(out)
    assert out[0] == "Reading and Writing Files"  # its ===== underline gone
    assert "=====" not in text and "-----" not in text and ".." not in text.replace("...", "")
    assert out[1:4] == [
        "open returns a file object, and is most commonly used with",
        "two positional arguments and one keyword argument:",
        # the link ran over a line break: its text is kept, its target with the break goes
        "open(filename, mode, encoding=None).  See the tutorial and PEP 8 for more, or the reference [#].",
    ]
    assert "Note:" in out and "The mode argument is optional; 'r' will be assumed if it's omitted." in out
    assert "New in version 3.2." in out
    assert "pair: built-in function; open" not in text  # the index directive's body is not text
    assert "Example:" in out  # "Example::" as Sphinx shows it


def test_rst_code_is_kept_as_written():
    text = plain_text(RST)
    assert ">>> f.write(*args, **kwargs)" in text  # the literal block after "::"
    assert "def main(*args, **kwargs):" in text and "return 0  # *not* emphasis" in text  # code-block
    assert ":linenos:" not in text  # the directive's option is not


def test_rst_lists_signatures_fields_footnotes_and_names():
    out = lines(RST)
    assert "• first item, see read" in out  # ~io.TextIOBase.read shows its last part
    assert "• second item, see the file methods" in out  # a titled role shows its title
    assert "• numbered" in out
    assert "open(file, mode='r', buffering=-1)" in out  # the signature the page shows
    assert "Open file and return a TextIOWrapper." in out
    assert "param file: a path-like object" in out
    assert "[#] The footnote's text." in out
    assert "https://peps.python.org/pep-0008/" not in plain_text(RST)  # a link target shows nothing
    assert "Methods of File Objects" in out
    # Underscores and stars that are not markup stay.
    assert out[-1] == "The function __init__ and snake_case_name stay as written; so do 2*3*4 and f(*args, **kwargs)."


def test_markdown_headings_emphasis_code_links_lists_and_tables():
    out = lines(MARKDOWN)
    assert out[0] == "edge_dse — search your own files"
    assert out[1] == 'Private semantic search over your files, with edge-dse search "query".'
    assert out[2:4] == ["See the architecture notes, the search tab", "and the FAQ."]
    assert "Install" in out and "## Install" not in out
    assert "pip install -e '.[ui]'   # **not** bold, `not` code" in out  # fenced code as written
    assert not any(line.startswith("```") for line in out)
    assert out[out.index("• one"):out.index("• one") + 3] == ["• one", "• two", "• nested"]
    assert "A quoted warning: https://example.com/x." in out
    assert "mode · what it ranks by" in out and "vector · the encoder" in out
    assert not any(set(line) <= set("|-: ") for line in out)  # no table border, no rule
    assert "Setext heading" in out and "Escaped *stars* stay stars." in out
    assert "https://example.com/faq" not in plain_text(MARKDOWN)  # a link definition shows nothing


def test_a_tilde_underline_is_a_heading_not_a_code_fence():
    assert lines("Options\n~~~~~~~\n\nSet *x* first.\n\n~~~\nkeep *y*\n~~~\nthen *z*") == [
        "Options", "Set x first.", "keep *y*", "then z"]


def test_inline_markup_over_a_line_break_but_not_over_a_paragraph():
    assert plain_text("run `edge-dse eval\n--card x` now") == "run edge-dse eval\n--card x now"
    assert plain_text("see `the\ntutorial <https://x.org>`_ first") == "see the\ntutorial first"
    assert plain_text("a `b\n\nc` d") == "a `b\n\nc` d"


def test_only_markup_files_are_stripped_and_the_text_given_is_not_changed():
    assert has_markup("/d/notes.md") and has_markup("/d/a.RST") and has_markup("/d/intro.rst.txt")
    assert not has_markup("/d/code.py") and not has_markup("/d/paper.pdf")
    code = "def f(*args, **kwargs):\n    # **not** a heading\n    return `x`"
    assert display_text("/d/code.py", code) == code
    chunk = "Title\n=====\n\n**bold**"
    assert display_text("/d/notes.rst", chunk) == "Title\n\nbold" and chunk == "Title\n=====\n\n**bold**"

