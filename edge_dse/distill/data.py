"""Training pairs for distillation, from the text docs/invariants.md allows (Debian packages, nothing downloaded).

    python -m edge_dse.distill.data --out work/distill/data

Each source gives natural positive pairs (query -> passage) written by people:

- debian: a package's one-line synopsis -> its long description (Translation-en indexes under
  /var/lib/apt/lists; `apt-get update -o Acquire::Languages=en`). Identical descriptions shared
  by many packages are kept once.
- wordnet: an example sentence -> the definition of its synset (`wordnet-base`), with the
  synset's own words removed from the definition: the example contains the headword, and a
  passage that repeats it would be found by the word alone, teaching nothing about meaning.
- pydoc: a section heading of the Python 3.11 documentation -> the section's body
  (`python3.11-doc`). The FAQ's question headings -> answers are kept apart (pydoc_faq): they
  are the project's dev retrieval set and never enter training.

The held-out split is by document (a package, a synset, a documentation file), not by pair:
pairs of one document share wording, so a document split across train and test would let the
model be tested on text it was trained on. A document's side is a hash of the seed and its id
only, so the split is the same on every machine and does not move when the sources change.

Training-time code: not imported by `import edge_dse`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gzip
import hashlib
import json
import lzma
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import EdgeDSEError, ExtractError
from ..ingest.extract import extract

APT_LISTS = Path("/var/lib/apt/lists")
WORDNET = Path("/usr/share/wordnet")
PYDOC = Path("/usr/share/doc/python3.11/html/_sources")
OUT_DIR = Path("work/distill/data")
MAX_PASSAGE_CHARS = 1500  # ~256 tokens: the encoder truncates there anyway


@dataclass(frozen=True)
class Pair:
    query: str
    passage: str
    doc_id: str  # the document the pair comes from: the unit of the held-out split
    source: str


# -- Debian package descriptions ---------------------------------------------------------------
def read_apt_index(path: Path) -> str:
    """An apt list file as text, whatever compression apt chose (lz4 on this image)."""
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
    if path.suffix == ".xz":
        return lzma.decompress(path.read_bytes()).decode("utf-8", "replace")
    if path.suffix in (".lz4", ".zst", ".bz2"):
        # No lz4/zstd module in the standard library; apt's own helper reads whatever apt wrote.
        helper = Path("/usr/lib/apt/apt-helper")
        if not helper.is_file():
            raise EdgeDSEError(f"cannot read {path}: needs apt-helper (Debian's apt)")
        return subprocess.run([str(helper), "cat-file", str(path)], check=True,
                              capture_output=True).stdout.decode("utf-8", "replace")
    return path.read_text(encoding="utf-8", errors="replace")


def description_body(lines: list[str]) -> str:
    """A Debian long description (RFC-822 continuation lines) -> plain paragraphs."""
    paragraphs, current = [], []
    for line in lines:
        line = line[1:] if line.startswith(" ") else line
        if line.strip() == ".":
            if current:
                paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(line.strip())
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(p for p in paragraphs if p)


def translation_files(lists_dir: Path = APT_LISTS) -> list[Path]:
    """The English description indexes of the release itself (not -security / -updates /
    -backports, which change weekly, unless nothing else is there)."""
    files = sorted(Path(lists_dir).glob("*_i18n_Translation-en*")) if Path(lists_dir).is_dir() else []
    files = [f for f in files if not re.search(r"_dists_[^_]+-(security|updates|backports)_", f.name)] or files
    if not files:
        # Images that set Acquire::Languages "none" have only synopses in the Packages files.
        raise EdgeDSEError(f"no Debian package descriptions under {lists_dir} (no *_i18n_Translation-en*): "
                           "run `apt-get update -o Acquire::Languages=en` (a plain `apt-get update` removes them)")
    return files


def translation_records(files: Iterable[Path]) -> Iterator[tuple[str, str, str]]:
    """(package, synopsis, long description) for each record of the indexes, in file order."""
    for path in files:
        for record in read_apt_index(path).split("\n\n"):
            lines = record.split("\n")
            package = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Package:")), "")
            for i, line in enumerate(lines):
                if line.startswith("Description-en:"):
                    body_lines = []
                    for cont in lines[i + 1:]:
                        if not cont.startswith(" "):
                            break
                        body_lines.append(cont)
                    yield package, line.split(":", 1)[1].strip(), description_body(body_lines)
                    break


def debian_pairs(lists_dir: Path = APT_LISTS, *, min_chars: int = 100) -> list[Pair]:
    """Synopsis -> long description, one pair per distinct description of at least min_chars."""
    seen: set[str] = set()
    pairs = []
    for package, synopsis, body in translation_records(translation_files(lists_dir)):
        if synopsis and len(body) >= min_chars and body not in seen:
            seen.add(body)
            pairs.append(Pair(synopsis, body, f"debian:{package}", "debian"))
    return pairs


# -- WordNet -----------------------------------------------------------------------------------
WORDNET_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}


def _headword_pattern(lemmas: list[str]) -> re.Pattern:
    """The synset's words and their regular inflections (strides, breathing) as whole words."""
    forms = set()
    for lemma in lemmas:
        w = lemma.lower()
        forms |= {w, w + "s", w + "es", w + "d", w + "ed", w + "ing"}
        if w.endswith("e"):
            forms.add(w[:-1] + "ing")
    alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.I)


def parse_synset(line: str) -> tuple[str, list[str], str, list[str]]:
    """A data.* line -> (offset, lemmas, definition, examples)."""
    fields, _, gloss = line.partition(" | ")
    parts = fields.split()
    count = int(parts[3], 16)  # w_cnt is two hex digits
    # Adjective lemmas may carry a syntactic marker: galore(ip), beautiful(a).
    lemmas = [re.sub(r"\((a|p|ip)\)$", "", w).replace("_", " ") for w in parts[4:4 + 2 * count:2]]
    gloss = gloss.strip()
    # Examples follow the definition as '; "..."'. Quotes before that belong to the
    # definition (`in the phrase "make strides"`); text after a closing quote is an attribution.
    at = gloss.find('; "')
    if at < 0:
        return parts[0], lemmas, gloss.rstrip("; "), []
    examples = [e.strip() for e in re.findall(r'"([^"]*)"', gloss[at:]) if e.strip()]
    return parts[0], lemmas, gloss[:at].strip(), examples


def tidy_gloss(text: str) -> str:
    """A WordNet definition with its spacing mended: one space between words, none before
    punctuation, no stray separators at the ends."""
    return re.sub(r"\s+([,;:.)])", r"\1", re.sub(r"\s+", " ", text)).strip(" ;,")


def wordnet_pairs(root: Path = WORDNET) -> list[Pair]:
    """Example sentence -> definition (headwords removed), one pair per example."""
    root = Path(root)
    missing = [name for name in WORDNET_FILES.values() if not (root / name).is_file()]
    if missing:
        raise EdgeDSEError(f"no WordNet {', '.join(missing)} under {root}: `apt-get install -y wordnet-base`")
    pairs = []
    for pos, name in WORDNET_FILES.items():
        with open(root / name, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:  # the licence header
                    continue
                offset, lemmas, definition, examples = parse_synset(line)
                if not examples:
                    continue
                passage = removed = tidy_gloss(definition)
                # Compiling a pattern per synset is the slow part: only where a headword may occur.
                if any(w.lower().rstrip("e") in definition.lower() for w in lemmas):
                    removed = tidy_gloss(re.sub(r"\(\s*\)", "", _headword_pattern(lemmas).sub("", passage)))
                # "the act of buying" -> "the act of": nothing left to match the example on.
                if not re.search(r"\w", removed) or (removed != passage and len(removed.split()) < 4):
                    continue
                passage = removed
                pairs += [Pair(e, passage, f"wordnet:{pos}{offset}", "wordnet") for e in examples]
    return pairs


# -- Python documentation ----------------------------------------------------------------------
_ROLE = re.compile(r":(?:[\w.-]+:)+`([^`]*)`")  # :func:`open`, :ref:`text <target>`
_LINK = re.compile(r"`([^`<]*?)\s*<[^>`]*>`__?")  # `text <https://...>`_
# Explicit markup that holds no prose: dropped with its indented block.
_NOISE = re.compile(r"\.\. (_[^:]*:|(index|toctree|contents|highlight|sectionauthor|moduleauthor|"
                    r"tabularcolumns|testsetup|testcleanup|module|currentmodule|only)::)")


def _role_text(m: re.Match) -> str:
    """What Sphinx shows: `title <target>` -> title, `~io.TextIOWrapper` -> TextIOWrapper."""
    text = re.sub(r"\s*<[^>]*>$", "", m.group(1)).lstrip("!")
    return text[1:].rsplit(".", 1)[-1] if text.startswith("~") else text


def rst_plain(text: str) -> str:
    """reST prose as a reader sees it: roles and links become their text, literals lose their
    backquotes, labels and index/toctree blocks go. Code and other directives stay as written."""
    out, dropping = [], False
    for line in text.split("\n"):
        if dropping and (not line.strip() or line[:1].isspace()):
            continue
        dropping = bool(_NOISE.match(line.lstrip()))
        if not dropping:
            out.append(line)
    text = _LINK.sub(r"\1", _ROLE.sub(_role_text, "\n".join(out)))
    return re.sub(r"\n{3,}", "\n\n", text.replace("``", "")).strip()


def cut_at_word(text: str, max_chars: int) -> str:
    """text cut to at most max_chars, at the last whitespace before the limit (so it ends on a
    whole word unless its first max_chars hold no whitespace at all)."""
    return text if len(text) <= max_chars else text[:max_chars].rsplit(None, 1)[0]


def _sections(path: Path) -> Iterator[tuple[str, str]]:
    """(heading, body) for each heading of an .rst.txt file; a body runs to the next heading."""
    try:
        doc = extract(path)
    except ExtractError:
        return
    ends = [h.offset for h in doc.headings[1:]] + [len(doc.text)]
    for head, end in zip(doc.headings, ends):
        lines = doc.text[head.offset:end].split("\n")
        # Skip the (overline,) title and underline: the line after the title.
        title_at = next((i for i, line in enumerate(lines) if line.strip() == head.title), 0)
        yield rst_plain(head.title), rst_plain("\n".join(lines[title_at + 2:]))


def _pydoc_files(root: Path) -> list[Path]:
    files = sorted(Path(root).rglob("*.rst.txt")) if Path(root).is_dir() else []
    if not files:
        raise EdgeDSEError(f"no Python documentation sources (*.rst.txt) under {root}: `apt-get install -y python3.11-doc`")
    return files


def pydoc_sections(root: Path = PYDOC) -> Iterator[tuple[str, str, str]]:
    """(doc_id, heading, whole body) of every section outside faq/ (the dev set), held-out files
    included: the caller splits (is_held_out on the doc_id)."""
    for path in _pydoc_files(root):
        rel = path.relative_to(root)
        if rel.parts[0] != "faq":
            for heading, body in _sections(path):
                yield f"pydoc:{rel.as_posix()}", heading, body


def pydoc_pairs(root: Path = PYDOC, *, min_chars: int = 80, max_chars: int = MAX_PASSAGE_CHARS) -> list[Pair]:
    """Section heading -> section body, for every file outside faq/ (the dev set)."""
    return [Pair(heading, cut_at_word(body, max_chars), doc_id, "pydoc")
            for doc_id, heading, body in pydoc_sections(root) if heading and len(body) >= min_chars]


def pydoc_faq_pairs(root: Path = PYDOC, *, max_chars: int = MAX_PASSAGE_CHARS) -> list[Pair]:
    """The FAQ's question headings -> their answers: a dev retrieval set, never training data."""
    pairs = []
    for path in _pydoc_files(root):
        rel = path.relative_to(root)
        if rel.parts[0] != "faq":
            continue
        for heading, body in _sections(path):
            # "How do I delete a file? (And other file questions...)" is a question too.
            if re.search(r"\?(\s*\(.*\))?$", heading) and body:
                pairs.append(Pair(heading, cut_at_word(body, max_chars), f"pydoc:{rel.as_posix()}", "pydoc_faq"))
    return pairs


# -- split and files ---------------------------------------------------------------------------
def is_held_out(doc_id: str, *, held_out: float = 0.1, seed: int = 0) -> bool:
    """A document's side from its id and the seed alone (sha256: Python's hash() is salted)."""
    digest = hashlib.sha256(f"{seed}\0{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < held_out


def split_by_document(pairs: Iterable[Pair], *, held_out: float = 0.1, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(train, test): every pair of a document on the same side, ~held_out of documents in test."""
    if not 0 <= held_out <= 1:
        raise ValueError(f"held_out must be in [0, 1], not {held_out}")
    train, test = [], []
    for pair in pairs:
        (test if is_held_out(pair.doc_id, held_out=held_out, seed=seed) else train).append(pair)
    return train, test


def write_jsonl(pairs: Iterable[Pair], path: Path) -> None:
    """One JSON object a line; written to a temporary name first, so a file that exists is whole."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for pair in pairs:
            f.write(json.dumps(dataclasses.asdict(pair), ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[Pair]:
    with open(path, encoding="utf-8") as f:
        return [Pair(**json.loads(line)) for line in f if line.strip()]


# -- build -------------------------------------------------------------------------------------
SOURCES = {"debian": (debian_pairs, APT_LISTS), "wordnet": (wordnet_pairs, WORDNET), "pydoc": (pydoc_pairs, PYDOC)}


def _outputs(name: str) -> list[str]:
    return [f"{name}.train.jsonl", f"{name}.test.jsonl"] + (["pydoc_faq.test.jsonl"] if name == "pydoc" else [])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def build(sources: Iterable[str] = ("debian", "wordnet", "pydoc"), out_dir: Path = OUT_DIR, *, seed: int = 0,
          held_out: float = 0.1, roots: dict[str, Path] | None = None) -> dict:
    """Write <source>.train/.test.jsonl (+ pydoc_faq.test.jsonl) and manifest.json under out_dir.

    Resumable: a source whose files and manifest entry exist is skipped. `roots` overrides where
    a source's system files are ({"wordnet": Path(...)}). Returns the manifest.
    """
    sources = list(sources)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise EdgeDSEError(f"unknown source(s) {unknown}: choose from {sorted(SOURCES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    manifest = {"seed": seed, "held_out": held_out, "split": "by document: sha256(seed, doc_id)", "sources": {}}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if (manifest.get("seed"), manifest.get("held_out")) != (seed, held_out):
            # Mixing splits would put a document on both sides: never resume across settings.
            raise EdgeDSEError(f"{out_dir} holds a split with seed {manifest.get('seed')}, held_out "
                               f"{manifest.get('held_out')}: use another out_dir or delete it")
    for name in sources:
        if name in manifest["sources"] and all((out_dir / f).is_file() for f in _outputs(name)):
            continue
        make, default_root = SOURCES[name]
        root = Path((roots or {}).get(name, default_root))
        pairs = make(root)
        train, test = split_by_document(pairs, held_out=held_out, seed=seed)
        files = {f"{name}.train.jsonl": train, f"{name}.test.jsonl": test}
        entry = {"path": str(root), "pairs": len(pairs), "train": len(train), "test": len(test),
                 "documents": len({p.doc_id for p in pairs}), "test_documents": len({p.doc_id for p in test})}
        if name == "debian":
            entry["files"] = [f.name for f in translation_files(root)]
        if name == "pydoc":
            files["pydoc_faq.test.jsonl"] = faq = pydoc_faq_pairs(root)
            entry["faq_test"] = len(faq)
        for file_name, file_pairs in files.items():
            write_jsonl(file_pairs, out_dir / file_name)
        manifest["sources"][name] = {**entry, "date": _now()}
        manifest["date"] = _now()
        tmp = manifest_path.with_name("manifest.json.tmp")  # after the data: the entry marks it done
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, manifest_path)
    return manifest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="*", default=list(SOURCES), help=f"which of {', '.join(SOURCES)} (default all)")
    p.add_argument("--out", type=Path, default=OUT_DIR, help=f"output folder (default {OUT_DIR})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out", type=float, default=0.1, help="fraction of documents held out for testing")
    args = p.parse_args(argv)
    print(json.dumps(build(args.sources, args.out, seed=args.seed, held_out=args.held_out), indent=2))


if __name__ == "__main__":
    main()
