"""The distillation data builders (edge_dse.distill.data): parsers on small files in the real
formats, the by-document split, build(); and, where the Debian packages are installed, the real
sources."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_dse.distill import data as dd
from edge_dse.distill.data import Pair
from edge_dse.errors import EdgeDSEError

# -- Debian Translation-en ---------------------------------------------------------------------
MAIN = """Package: alpha
Description-md5: 0aa1
Description-en: first tool for testing
 Alpha reads the files named on its command line and prints a summary of
 each one, long enough to pass the length filter.
 .
 It has a second paragraph.

Package: beta
Description-md5: 0bb2
Description-en: same text as alpha
 Alpha reads the files named on its command line and prints a summary of
 each one, long enough to pass the length filter.
 .
 It has a second paragraph.

Package: gamma
Description-md5: 0cc3
Description-en: too short
 Only a few words.
"""
SECURITY = """Package: sec
Description-md5: 0dd4
Description-en: security update text
 A package from the security suite: it changes weekly, so it stays out of the stable data.
"""
# `lz4 -c` of an index with one record ("epsilon"), as apt stores its lists on bookworm images.
EPSILON_LZ4 = base64.b64decode(
    "BCJNGGRAp7IAAAD5F1BhY2thZ2U6IGVwc2lsb24KRGVzY3JpcHRpb24tbWQ1OiA1NTU1FgDyDmVuOiBjb21wcmVzc2VkIGluZGV4IGVudHJ5"
    "CiBFRgD8AiBsaXZlcyBpbiBhbiBsejQtMADwAywgdGhlIHdheSBhcHQgc3Rvci8A8A10cyBsaXN0cwogb24gaW1hZ2VzIHRoYXQgdXNlRwDw"
    "CyAoRGViaWFuIGJvb2t3b3JtIGRvZXMpLgoKAAAAACcQwvI=")
ALPHA = Pair("first tool for testing",
             "Alpha reads the files named on its command line and prints a summary of each one, long enough to pass "
             "the length filter.\n\nIt has a second paragraph.", "debian:alpha", "debian")


def write_apt_lists(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "deb.example_debian_dists_bookworm_main_i18n_Translation-en").write_text(MAIN)
    (folder / "deb.example_debian-security_dists_bookworm-security_main_i18n_Translation-en").write_text(SECURITY)
    return folder


def test_debian_pairs(tmp_path):
    """Synopsis -> cleaned description; shared descriptions once, short ones and -security out."""
    assert dd.debian_pairs(write_apt_lists(tmp_path)) == [ALPHA]
    assert dd.debian_pairs(tmp_path, min_chars=10) == [ALPHA, Pair("too short", "Only a few words.", "debian:gamma", "debian")]


def test_debian_pairs_read_lz4_indexes(tmp_path):
    if not Path("/usr/lib/apt/apt-helper").is_file():
        pytest.skip("lz4 indexes are read with apt's apt-helper: not a Debian machine")
    write_apt_lists(tmp_path)
    (tmp_path / "deb.example_debian_dists_bookworm_contrib_i18n_Translation-en.lz4").write_bytes(EPSILON_LZ4)
    epsilon = Pair("compressed index entry", "Epsilon lives in an lz4-compressed index, the way apt stores its lists "
                   "on images that use lz4 (Debian bookworm does).", "debian:epsilon", "debian")
    assert dd.debian_pairs(tmp_path) == [epsilon, ALPHA]  # files in name order: contrib first


def test_debian_pairs_without_descriptions_says_how_to_get_them(tmp_path):
    with pytest.raises(EdgeDSEError, match=r"apt-get update -o Acquire::Languages=en"):
        dd.debian_pairs(tmp_path)


# -- WordNet -----------------------------------------------------------------------------------
LICENSE = ("  1 This software and database is being provided to you, the LICENSEE, by  \n"
           "  2 Princeton University under the following license.  By obtaining, using  \n"
           '  16 THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON  \n')
# Real lines of WordNet 3.0 (wordnet-base 1:3.0-37).
WORDNET = {
    "data.noun": [
        '00073177 04 n 02 rounding 0 rounding_error 0 002 @ 00072808 n 0000 ;c 06000644 n 0000 | (mathematics) a '
        'miscalculation that results from rounding off numbers to a convenient number of decimals; "the error in the '
        'calculation was attributable to rounding"; "taxes are rounded off to the nearest dollar but the rounding '
        'error is surprisingly small"  ',
        '00081572 04 n 02 buying 0 purchasing 0 006 @ 00079018 n 0000 + 02207224 v 0202 + 02207224 v 0101 ~ 00081836 '
        'n 0000 ~ 00082223 n 0000 ~ 00082347 n 0000 | the act of buying; "buying and selling fill their days"; '
        '"shrewd purchasing requires considerable knowledge"  ',
        '00249987 04 n 01 stride 1 001 @ 00249501 n 0000 | significant progress (especially in the phrase "make '
        'strides"); "they made big strides in productivity"  ',
        '00289555 04 n 01 pacing 0 002 @ 00286497 n 0000 + 01929272 v 0101 | walking with slow regular strides  ',
        '00399223 04 n 01 permutation 0 001 @ 00398704 n 0000 | complete change in character or condition; "the '
        'permutations...taking place in the physical world"- Henry Miller  ',
    ],
    "data.verb": [
        '01490832 35 v 01 saddle a 001 @ 01487329 v 0000 02 + 09 00 + 10 00 | load or burden; encumber; "he saddled '
        'me with that heavy responsibility"  ',
        '00002325 29 v 01 respire 1 005 $ 00001740 v 0000 @ 02108395 v 0000 + 03110323 a 0101 + 00831191 n 0103 + '
        '00830811 n 0101 01 + 02 00 | undergo the biomedical and metabolic processes of respiration by taking up '
        'oxygen and producing carbon monoxide  ',
    ],
    "data.adj": [
        '00014358 00 s 02 abounding 0 galore(ip) 0 001 & 00013887 a 0000 | existing in abundance; "abounding '
        'confidence"; "whiskey galore"  ',
        '00145083 00 s 0d barbed 0 barbellate 0 briary 0 briery 0 bristled 0 bristly 0 burred 0 burry 0 prickly 0 '
        'setose 0 setaceous 0 spiny 0 thorny 0 001 & 00144877 a 0000 | having protective barbs or quills or spines '
        'or thorns; "setaceous whiskers"  ',
    ],
    "data.adv": ['00001740 02 r 01 a_cappella 0 000 | without musical accompaniment; "they performed a cappella"  '],
}


def write_wordnet(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in WORDNET.items():
        (folder / name).write_text(LICENSE + "".join(line + "\n" for line in lines))
    return folder


def test_wordnet_pairs(tmp_path):
    rounding = "(mathematics) a miscalculation that results from off numbers to a convenient number of decimals"
    assert dd.wordnet_pairs(write_wordnet(tmp_path)) == [
        # the headword and its forms leave the definition; the example keeps it
        Pair("the error in the calculation was attributable to rounding", rounding, "wordnet:n00073177", "wordnet"),
        Pair("taxes are rounded off to the nearest dollar but the rounding error is surprisingly small", rounding,
             "wordnet:n00073177", "wordnet"),
        # "the act of buying" without its headword says nothing: dropped; a quote inside the definition
        # is not an example; "strides" is a form of "stride"
        Pair("they made big strides in productivity", 'significant progress (especially in the phrase "make ")',
             "wordnet:n00249987", "wordnet"),
        # no examples for "pacing"; the attribution after an example is not part of it
        Pair("the permutations...taking place in the physical world", "complete change in character or condition",
             "wordnet:n00399223", "wordnet"),
        Pair("he saddled me with that heavy responsibility", "load or burden; encumber", "wordnet:v01490832", "wordnet"),
        Pair("abounding confidence", "existing in abundance", "wordnet:a00014358", "wordnet"),
        Pair("whiskey galore", "existing in abundance", "wordnet:a00014358", "wordnet"),
        # 0d (hex) = 13 words, "thorny" the last of them
        Pair("setaceous whiskers", "having protective barbs or quills or spines or thorns", "wordnet:a00145083", "wordnet"),
        Pair("they performed a cappella", "without musical accompaniment", "wordnet:r00001740", "wordnet"),
    ]


def test_wordnet_removes_multiword_and_marked_headwords():
    offset, lemmas, definition, examples = dd.parse_synset(WORDNET["data.adj"][0])
    assert (offset, lemmas, definition, examples) == ("00014358", ["abounding", "galore"], "existing in abundance",
                                                      ["abounding confidence", "whiskey galore"])
    assert dd._headword_pattern(["a cappella", "galore"]).sub("_", "sung a Cappella, whiskey galore") == "sung _, whiskey _"


def test_wordnet_missing_names_the_package(tmp_path):
    with pytest.raises(EdgeDSEError, match="apt-get install -y wordnet-base"):
        dd.wordnet_pairs(tmp_path)


# -- Python documentation ----------------------------------------------------------------------
LIBRARY_RST = """:mod:`demo` --- A demonstration module
======================================

.. module:: demo
   :synopsis: A demonstration.

.. _demo-reading:

Reading files
-------------

.. index:: single: open

The :func:`open` function returns a :class:`~io.TextIOWrapper`; see :ref:`the tutorial <tut-files>`
and `PEP 8 <https://peps.python.org/pep-0008/>`_ for ``more`` details.

   >>> open("x").read()

Tiny
----

Too short.
"""
FAQ_RST = """:tocdepth: 2

===========
General FAQ
===========

.. only:: html

   .. contents::

What is Python?
---------------

Python is an interpreted, interactive, object-oriented programming language.

How do I delete a file? (And other file questions...)
-----------------------------------------------------

Use ``os.remove(filename)``.

Statements
----------

Not a question, so not in the dev set; and not in training either, because it is under faq/.
"""
READING = ("The open function returns a TextIOWrapper; see the tutorial\nand PEP 8 for more details.\n\n"
           '   >>> open("x").read()')


def write_pydoc(folder: Path) -> Path:
    (folder / "library").mkdir(parents=True)
    (folder / "faq").mkdir()
    (folder / "library" / "demo.rst.txt").write_text(LIBRARY_RST)
    (folder / "faq" / "general.rst.txt").write_text(FAQ_RST)
    return folder


def test_pydoc_pairs_leave_out_the_faq(tmp_path):
    root = write_pydoc(tmp_path)
    assert dd.pydoc_pairs(root) == [Pair("Reading files", READING, "pydoc:library/demo.rst.txt", "pydoc")]
    cut = dd.pydoc_pairs(root, max_chars=40)[0].passage
    assert cut == "The open function returns a" and READING.startswith(cut)  # cut at a word boundary
    assert dd.pydoc_faq_pairs(root) == [
        Pair("What is Python?", "Python is an interpreted, interactive, object-oriented programming language.",
             "pydoc:faq/general.rst.txt", "pydoc_faq"),
        Pair("How do I delete a file? (And other file questions...)", "Use os.remove(filename).",
             "pydoc:faq/general.rst.txt", "pydoc_faq"),
    ]


def test_pydoc_missing_names_the_package(tmp_path):
    for make in (dd.pydoc_pairs, dd.pydoc_faq_pairs):
        with pytest.raises(EdgeDSEError, match="apt-get install -y python3.11-doc"):
            make(tmp_path)


# -- split -------------------------------------------------------------------------------------
def synthetic(n_docs: int) -> list[Pair]:
    return [Pair(f"q{d}.{k}", f"p{d}.{k}", f"doc:{d}", "t") for d in range(n_docs) for k in range(1 + d % 3)]


def test_split_by_document():
    pairs = synthetic(2000)
    train, test = dd.split_by_document(pairs, held_out=0.1, seed=0)
    assert len(train) + len(test) == len(pairs) and set(train) | set(test) == set(pairs)
    assert (train, test) == dd.split_by_document(list(pairs), held_out=0.1, seed=0)  # deterministic
    train_docs, test_docs = {p.doc_id for p in train}, {p.doc_id for p in test}
    assert not train_docs & test_docs
    assert 0.08 < len(test_docs) / 2000 < 0.12
    other = {p.doc_id for p in dd.split_by_document(pairs, held_out=0.1, seed=1)[1]}
    assert 0.08 < len(other) / 2000 < 0.12 and other != test_docs  # the seed picks another sample
    assert dd.split_by_document(pairs, held_out=0.0)[1] == [] and dd.split_by_document(pairs, held_out=1.0)[0] == []
    # Pinned: a change of hash would silently move documents between train and test across runs.
    assert [d for d in range(40) if dd.is_held_out(f"doc:{d}")] == PINNED_TEST_DOCS


PINNED_TEST_DOCS = [4, 7, 10, 11, 13, 16, 25]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=60, unique=True), st.data(),
       st.integers(0, 2**32), st.floats(0.05, 0.95))
def test_split_sides_depend_only_on_the_document(doc_ids, data, seed, held_out):
    pairs = [Pair("q", "p", d, "t") for d in doc_ids]
    kept = data.draw(st.lists(st.sampled_from(pairs), unique=True))
    _, test = dd.split_by_document(pairs, held_out=held_out, seed=seed)
    _, kept_test = dd.split_by_document(kept, held_out=held_out, seed=seed)
    assert set(kept_test) == set(test) & set(kept)


# -- files and build ---------------------------------------------------------------------------
def test_jsonl_round_trip(tmp_path):
    pairs = [Pair('a "quoted" query', "ünïcode\npassage", "x:1", "t"), Pair("q", "p", "x:2", "t")]
    dd.write_jsonl(pairs, tmp_path / "p.jsonl")
    assert dd.read_jsonl(tmp_path / "p.jsonl") == pairs
    assert json.loads((tmp_path / "p.jsonl").read_text(encoding="utf-8").split("\n")[0])["passage"] == "ünïcode\npassage"


@pytest.fixture
def roots(tmp_path):
    return {"debian": write_apt_lists(tmp_path / "apt"), "wordnet": write_wordnet(tmp_path / "wn"),
            "pydoc": write_pydoc(tmp_path / "doc")}


def test_build_writes_splits_and_resumes(tmp_path, roots):
    out = tmp_path / "out"
    manifest = dd.build(out_dir=out, roots=roots, held_out=0.5, seed=3)
    names = {"debian.train.jsonl", "debian.test.jsonl", "wordnet.train.jsonl", "wordnet.test.jsonl",
             "pydoc.train.jsonl", "pydoc.test.jsonl", "pydoc_faq.test.jsonl", "manifest.json"}
    assert {p.name for p in out.iterdir()} == names
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert (manifest["seed"], manifest["held_out"]) == (3, 0.5)
    for name, make in (("debian", dd.debian_pairs), ("wordnet", dd.wordnet_pairs), ("pydoc", dd.pydoc_pairs)):
        train, test = dd.read_jsonl(out / f"{name}.train.jsonl"), dd.read_jsonl(out / f"{name}.test.jsonl")
        assert (train, test) == dd.split_by_document(make(roots[name]), held_out=0.5, seed=3)
        entry = manifest["sources"][name]
        assert (entry["train"], entry["test"], entry["pairs"], entry["path"]) == (len(train), len(test), len(train) + len(test), str(roots[name]))
    assert dd.read_jsonl(out / "pydoc_faq.test.jsonl") == dd.pydoc_faq_pairs(roots["pydoc"])
    assert manifest["sources"]["pydoc"]["faq_test"] == 2

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert dd.build(out_dir=out, roots=roots, held_out=0.5, seed=3) == manifest  # all done: nothing rewritten
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    (out / "wordnet.test.jsonl").unlink()  # an interrupted source is made again, the others are kept
    again = dd.build(out_dir=out, roots=roots, held_out=0.5, seed=3)
    assert again["sources"]["wordnet"]["pairs"] == manifest["sources"]["wordnet"]["pairs"]
    assert all(mtimes[n] == (out / n).stat().st_mtime_ns for n in names if not n.startswith(("wordnet", "manifest")))
    with pytest.raises(EdgeDSEError, match="seed 3"):  # another split into the same folder would mix them
        dd.build(out_dir=out, roots=roots, held_out=0.5, seed=4)


def test_build_missing_source_names_the_package(tmp_path, roots):
    with pytest.raises(EdgeDSEError, match="wordnet-base"):
        dd.build(["pydoc", "wordnet"], tmp_path / "out", roots={**roots, "wordnet": tmp_path / "none"})
    # what was done before the error is kept: a rerun goes on from there
    assert (tmp_path / "out" / "pydoc_faq.test.jsonl").is_file()
    assert list(json.loads((tmp_path / "out" / "manifest.json").read_text())["sources"]) == ["pydoc"]
    with pytest.raises(EdgeDSEError, match="unknown source"):
        dd.build(["gcide"], tmp_path / "out")


# -- the real sources, where installed ---------------------------------------------------------
def test_real_debian_descriptions():
    try:
        files = dd.translation_files()
    except EdgeDSEError:
        pytest.skip("no Translation-en indexes: apt-get update -o Acquire::Languages=en")
    pairs = dd.debian_pairs()
    assert len(pairs) > 10_000 and files
    assert len({p.passage for p in pairs}) == len(pairs)
    assert all(p.query and len(p.passage) >= 100 and p.doc_id.startswith("debian:") for p in pairs)
    test_docs = {p.doc_id for p in dd.split_by_document(pairs)[1]}
    assert 0.09 < len(test_docs) / len({p.doc_id for p in pairs}) < 0.11


def test_real_wordnet():
    if not (dd.WORDNET / "data.noun").is_file():
        pytest.skip("WordNet not installed: apt-get install -y wordnet-base")
    pairs = dd.wordnet_pairs()
    assert len(pairs) > 30_000 and len({p.doc_id for p in pairs}) > 25_000
    assert {p.doc_id[8] for p in pairs} == set("nvar")
    assert not any("LICENSEE" in p.query or "Princeton" in p.passage for p in pairs)


def test_real_python_docs():
    if not (dd.PYDOC / "faq").is_dir():
        pytest.skip("Python documentation sources not installed: apt-get install -y python3.11-doc")
    pairs, faq = dd.pydoc_pairs(), dd.pydoc_faq_pairs()
    assert len(pairs) > 2000 and len({p.doc_id for p in pairs}) > 300
    assert not any(p.doc_id.startswith("pydoc:faq/") for p in pairs)
    assert 150 < len(faq) < 250 and all(p.doc_id.startswith("pydoc:faq/") for p in faq)
    assert not {p.passage for p in faq} & {p.passage for p in pairs}  # no FAQ answer in training
    assert all(80 <= len(p.passage) <= dd.MAX_PASSAGE_CHARS for p in pairs)
