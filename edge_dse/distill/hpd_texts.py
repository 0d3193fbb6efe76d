"""Stage 1's text set: pairs of texts in every shape a user or a document has, for projective
distillation (hpd.py). Only the input texts matter there (the big model gives the targets), so
texts may be formed freely; pairs are kept so that a batch holds related texts and the in-batch
similarity structure has something to teach.

Shapes, from the training side of each source only (the held-out documents of data.py's split,
and the Python FAQ, never appear):
  title     a heading / synopsis / example sentence -> its passage (the natural pairs of data.py)
  question  "what is X?", "how do I ...?", "which package provides ...?" -> the passage
  keyword   two to four content words, or the bare headword -> the passage
  faq       a real question of the Debian FAQ -> its answer
Sources: Debian package descriptions, WordNet, the Python 3.11 docs (as data.py reads them), and
two more that data.py does not use: GCIDE (dict-gcide, headword -> first definition; GPL-3+,
used for training only, never shipped) and the Debian FAQ (debian-faq). Neither is a dev split.

Pairs are shuffled with the seed, so any prefix is a balanced slice: growing a run (or drawing
its learning curve) takes a longer prefix of the same list. Texts are kept once (texts.jsonl);
pairs point at them (pairs.jsonl). Training-time code: not imported by `import edge_dse`.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import EdgeDSEError
from . import data as data_mod

GCIDE = Path("/usr/share/dictd")
DEBIAN_FAQ = Path("/usr/share/doc/debian/FAQ/debian-faq.en.txt.gz")
MAX_CHARS = data_mod.MAX_PASSAGE_CHARS
STOP = set("a an the of and or for to in on with by from as at is are be this that it its into your you can "
           "using use used which what how do does not no all any more most other some such than then".split())


@dataclass(frozen=True)
class TextPair:
    a: str  # the query-like side
    b: str  # the passage-like side
    source: str
    shape: str


def _keywords(text: str, rng: random.Random) -> str:
    words = [w for w in re.findall(r"[A-Za-z][\w+#.-]*", text) if w.lower() not in STOP and len(w) > 2]
    if len(words) < 2:
        return ""
    k = min(len(words), rng.randint(2, 4))
    start = rng.randint(0, len(words) - k)
    return " ".join(w.lower().rstrip(".") for w in words[start:start + k])


def _lower_first(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].lower() + text[1:] if text[1:2].islower() or len(text) < 2 else text


DEBIAN_QUESTIONS = ("which package provides {s}?", "is there a {s} for Linux?", "what can I use as a {s}?",
                    "how do I install a {s}?", "I need a {s}")
PYDOC_QUESTIONS = ("how do I use {s} in Python?", "what is {s}?", "how does {s} work?", "python {s}",
                   "where are {s} documented?")


def debian_pairs(data_dir: Path, rng: random.Random) -> Iterator[TextPair]:
    for p in data_mod.read_jsonl(data_dir / "debian.train.jsonl"):
        body = data_mod.cut_at_word(p.passage, MAX_CHARS)
        yield TextPair(p.query, body, "debian", "title")
        package = p.doc_id.split(":", 1)[1]
        roll = rng.random()
        if roll < 0.45:
            yield TextPair(rng.choice(DEBIAN_QUESTIONS).format(s=_lower_first(p.query)), body, "debian", "question")
        elif roll < 0.65:
            yield TextPair(f"what is {package}?", body, "debian", "question")
        elif roll < 0.9:
            kw = _keywords(p.query, rng)
            if kw:
                yield TextPair(kw, body, "debian", "keyword")


def pydoc_pairs(data_dir: Path, rng: random.Random) -> Iterator[TextPair]:
    for p in data_mod.read_jsonl(data_dir / "pydoc.train.jsonl"):
        yield TextPair(p.query, p.passage, "pydoc", "title")
        yield TextPair(rng.choice(PYDOC_QUESTIONS).format(s=_lower_first(p.query)), p.passage, "pydoc", "question")
        kw = _keywords(p.passage[:300], rng)
        if kw:
            yield TextPair(kw, p.passage, "pydoc", "keyword")


def _wordnet_question(pos: str, lemma: str, rng: random.Random) -> str:
    if pos == "n":
        article = "an" if lemma[:1].lower() in "aeiou" else "a"
        return rng.choice((f"what is {article} {lemma}?", f"what does {lemma} mean?", f"define {lemma}"))
    if pos == "v":
        return rng.choice((f"what does it mean to {lemma}?", f"meaning of the verb {lemma}", f"to {lemma}"))
    return rng.choice((f"what does {lemma} mean?", f"meaning of {lemma}", f"{lemma} definition"))


def wordnet_pairs(data_dir: Path, root: Path, rng: random.Random) -> Iterator[TextPair]:
    for p in data_mod.read_jsonl(data_dir / "wordnet.train.jsonl"):
        yield TextPair(p.query, p.passage, "wordnet", "title")  # example sentence -> definition
    for pos, name in data_mod.WORDNET_FILES.items():
        with open(Path(root) / name, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:
                    continue
                offset, lemmas, definition, _ = data_mod.parse_synset(line)
                if data_mod.is_held_out(f"wordnet:{pos}{offset}") or rng.random() > 0.5:
                    continue  # half of the ~117k synsets: enough, and leaves room for other sources
                lemma = rng.choice(lemmas)
                gloss = f"{lemma}: {data_mod.tidy_gloss(definition)}"
                yield TextPair(_wordnet_question(pos, lemma, rng) if rng.random() < 0.6 else lemma, gloss, "wordnet",
                               "question")


def _windows(body: str, size: int) -> list[str]:
    """body cut into windows of at most `size` characters, at paragraph ends where one fits (a
    longer paragraph is cut at words): the passages a library chunk of a document looks like."""
    out, cur = [], ""
    for para in (p.strip() for p in body.split("\n\n")):
        while len(para) > size:
            head = data_mod.cut_at_word(para, size)
            out += [cur] if cur else []
            out, cur, para = out + [head], "", para[len(head):].strip()
        if cur and len(cur) + 2 + len(para) > size:
            out, cur = out + [cur], ""
        cur = f"{cur}\n\n{para}" if cur else para
    return [w for w in out + [cur] if len(w) >= 200]


def pydoc_passage_pairs(root: Path, rng: random.Random, window: int = 1000) -> Iterator[TextPair]:
    """Every training-side section of the Python docs cut into chunk-sized windows (pydoc_pairs
    takes only each section's first 1500 characters), each paired with one query-like text: a
    sentence of its own, a question on its heading, or a few of its words."""
    for doc_id, heading, body in data_mod.pydoc_sections(root):
        if data_mod.is_held_out(doc_id):
            continue
        for w in _windows(body, window):
            roll = rng.random()
            sentences = [" ".join(x.split()) for x in re.split(r"(?<=[.!?])\s+", w) if 30 <= len(x) <= 200 and re.search(r"[a-z]{3}", x)]
            if roll < 0.5 and sentences:
                yield TextPair(rng.choice(sentences), w, "pydoc", "sentence")
            elif roll < 0.75 and heading:
                yield TextPair(rng.choice(PYDOC_QUESTIONS).format(s=_lower_first(heading)), w, "pydoc", "question")
            else:
                kw = _keywords(w, rng)
                if kw:
                    yield TextPair(kw, w, "pydoc", "keyword")


def mixed_order(pairs: list[TextPair], weights: dict[str, float], rng: random.Random) -> list[TextPair]:
    """The pairs in an order whose every prefix draws each source at its weight's share (until a
    source runs out; then the others share its place), each source's own pairs shuffled."""
    groups: dict[str, list[TextPair]] = {}
    for p in pairs:
        groups.setdefault(p.source, []).append(p)
    missing = sorted(set(groups) - set(weights))
    if missing:
        raise ValueError(f"mix: no weight for the source(s) {', '.join(missing)}")
    for g in groups.values():
        rng.shuffle(g)
    names, out = sorted(groups), []
    while names:
        name = rng.choices(names, [weights[n] for n in names])[0]
        out.append(groups[name].pop())
        if not groups[name]:
            names.remove(name)
    return out


# The sources' shares of `build(mix=MIX)` (`edge-dse distill --hpd-text-mix`): each dev domain's
# kind of text about equally, the Python docs' prose included (shuffled uniformly, the
# dictionaries' ~135k short definitions are 55% of every prefix and the Python docs 5%; the
# probe's figures are in pipeline.Plan.hpd_text_mix's comment).
MIX = {"pydoc": 0.3, "debian": 0.3, "wordnet": 0.2, "gcide": 0.15, "debian_faq": 0.05}

_GCIDE_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _GCIDE_B64.index(ch)
    return n


def gcide_entries(root: Path = GCIDE) -> Iterator[tuple[str, str]]:
    """(headword, first definition) of each GCIDE entry (dictd format: an index of base64
    offsets into a gzipped text)."""
    index, body = Path(root) / "gcide.index", Path(root) / "gcide.dict.dz"
    if not index.is_file() or not body.is_file():
        raise EdgeDSEError(f"no GCIDE under {root}: `apt-get install -y dict-gcide`")
    text = gzip.open(body).read()
    seen = set()  # one entry is indexed under many keys (its inflections, species names): once each
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-") or parts[1] in seen:
            continue
        seen.add(parts[1])
        entry = text[_b64(parts[1]):_b64(parts[1]) + _b64(parts[2])].decode("utf-8", "replace")
        headword = entry.split(" \\", 1)[0].strip()
        definition = _gcide_definition(entry)
        if definition and headword and "\n" not in headword:
            yield headword, definition


def _without_brackets(text: str) -> str:
    """Text with every [...] group removed, nested ones too (GCIDE's etymologies nest: [OE. [ae]pl])."""
    out, depth = [], 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
    return "".join(out)


def _gcide_definition(entry: str) -> str:
    """The first sense's definition. An entry is a header line (headword, pronunciation, part of
    speech, etymology in brackets that may run on), then the senses on the following lines."""
    first = _without_brackets(entry.split("\n\n", 1)[0])
    body = first.split("\n", 1)[1] if "\n" in first else ""
    body = re.split(r"\n\s+2\.\s", body, maxsplit=1)[0]
    body = re.sub(r"\s+", " ", body.replace("{", "").replace("}", "")).strip()
    body = re.sub(r"^(?:Defn:|1\.)\s*", "", body).split(" --")[0].strip()
    return body if 20 <= len(body) <= MAX_CHARS and re.match(r"[(A-Za-z]", body) and re.search(r"[a-z]{3}", body) else ""


def gcide_pairs(root: Path, rng: random.Random, limit: int) -> Iterator[TextPair]:
    entries = list(gcide_entries(root))
    for word, definition in rng.sample(entries, min(limit, len(entries))):
        q = rng.choice((f"what is {word}?", f"define {word}", f"{word} meaning", word, f"what does {word} mean?"))
        yield TextPair(q, f"{word}: {definition}", "gcide", "keyword" if q == word else "question")


def debian_faq_pairs(path: Path = DEBIAN_FAQ) -> Iterator[TextPair]:
    """Real questions -> answers: numbered headings ("3.4. How do I ...?") and the text under them."""
    if not Path(path).is_file():
        raise EdgeDSEError(f"no Debian FAQ at {path}: `apt-get install -y debian-faq`")
    lines = gzip.open(path, "rt", encoding="utf-8", errors="replace").read().split("\n")
    heading = re.compile(r"^(\d+(?:\.\d+)+)\.\s+(.*)$")
    i = 0
    while i < len(lines):
        m = heading.match(lines[i])
        if not m:
            i += 1
            continue
        title, i = m.group(2), i + 1
        while i < len(lines) and lines[i].startswith("    ") and lines[i].strip() and not lines[i - 1].strip() == "":
            title += " " + lines[i].strip()  # a heading wrapped onto the next line
            i += 1
        body = []
        while i < len(lines) and not heading.match(lines[i]):
            body.append(lines[i].strip())
            i += 1
        answer = re.sub(r"\s+", " ", " ".join(body)).strip()
        if title.endswith("?") and len(answer) > 80:
            yield TextPair(title, data_mod.cut_at_word(answer, MAX_CHARS), "debian_faq", "faq")


def build(data_dir: Path, out_dir: Path, *, seed: int = 0, sources=("debian", "pydoc", "wordnet"),
          wordnet_root: Path = data_mod.WORDNET,
          gcide_root: Path | None = GCIDE, faq: Path | None = DEBIAN_FAQ, gcide_limit: int = 40000,
          pydoc_root: Path | None = None, mix: dict[str, float] | None = None) -> dict:
    """Write texts.jsonl, pairs.jsonl and manifest.json under out_dir (skipped when there).
    pydoc_root: add the Python docs cut into chunk-sized windows (pydoc_passage_pairs); mix: the
    sources' shares of every prefix (mixed_order); None: one uniform shuffle."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    if manifest_path.is_file():
        return json.loads(manifest_path.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    makers = {"debian": lambda: debian_pairs(data_dir, rng), "pydoc": lambda: pydoc_pairs(data_dir, rng),
              "wordnet": lambda: wordnet_pairs(data_dir, wordnet_root, rng)}
    pairs = [p for name in sources for p in makers[name]()]
    if gcide_root is not None:
        pairs += gcide_pairs(gcide_root, rng, gcide_limit)
    if faq is not None:
        pairs += debian_faq_pairs(faq)
    if pydoc_root is not None:
        pairs += pydoc_passage_pairs(pydoc_root, rng)
    pairs = list(dict.fromkeys(p for p in pairs if p.a.strip() and p.b.strip()))
    if mix:
        pairs = mixed_order(pairs, mix, rng)
    else:
        rng.shuffle(pairs)
    index: dict[str, int] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "texts.jsonl.tmp", "w", encoding="utf-8") as ft, open(out_dir / "pairs.jsonl.tmp", "w", encoding="utf-8") as fp:
        for p in pairs:
            ids = []
            for t in (p.a, p.b):
                if t not in index:
                    index[t] = len(index)
                    ft.write(json.dumps(t, ensure_ascii=False) + "\n")
                ids.append(index[t])
            fp.write(json.dumps([ids[0], ids[1], p.source, p.shape]) + "\n")
    os.replace(out_dir / "texts.jsonl.tmp", out_dir / "texts.jsonl")
    os.replace(out_dir / "pairs.jsonl.tmp", out_dir / "pairs.jsonl")
    counts: dict = {}
    for p in pairs:
        counts[f"{p.source}/{p.shape}"] = counts.get(f"{p.source}/{p.shape}", 0) + 1
    manifest = {"seed": seed, "sources": list(sources), "pairs": len(pairs), "texts": len(index), "by_source_shape": dict(sorted(counts.items())),
                "gcide_limit": gcide_limit if gcide_root else 0, "debian_faq": faq is not None,
                **({"pydoc_passages": True} if pydoc_root is not None else {}), **({"mix": mix} if mix else {})}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read(out_dir: Path) -> tuple[list[str], list[tuple[int, int, str, str]]]:
    with open(Path(out_dir) / "texts.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line) for line in f]
    with open(Path(out_dir) / "pairs.jsonl", encoding="utf-8") as f:
        pairs = [tuple(json.loads(line)) for line in f]
    return texts, pairs


def texts_in_order(pairs, n_pairs: int) -> list[int]:
    """The text ids the first n_pairs pairs need, in first-use order (what labelling follows)."""
    seen: dict[int, None] = {}
    for a, b, *_ in pairs[:n_pairs]:
        seen.setdefault(a)
        seen.setdefault(b)
    return list(seen)
