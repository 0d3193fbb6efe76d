"""int8 quantisation: the settings every shipped model is quantised with, the step that applies
them, and the measured table that chose them (carried in each bi-encoder card).

The settings were chosen by `python -m bench.encode quantization`. Its table ships with the
package as `edge_dse/distill/quantization.json` (a copy of bench/results/quantization.json;
bench/encode.py's docstring says how to refresh it), so an export from an installed wheel embeds
the same table as one from a checkout. Training-time code.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ..errors import EdgeDSEError

# The settings `python -m bench.encode quantization` chose: the fastest with mean cosine to fp32
# >= 0.99 on real text, and reduce_range kept because the shipped model must also be accurate on AVX2 CPUs without
# VNNI, where 8-bit weights saturate the u8*s8 multiply (docs/invariants.md: cosine down to 0.92 there).
# Gather (the embedding tables) is quantised as well: MatMul-only leaves 47 MB of fp32 embeddings
# and a 59 MB file, MatMul+Gather gives 23 MB at the same speed and cosine.
QUANTIZATION = {
    "method": "dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": True,
    "op_types": ["MatMul", "Gather"],
}

# What that command measured (filled in from its output; the card carries it).
BENCH_COMMAND = "python -m bench.encode quantization --docs 500 --queries 500 --seed 0 --threads 2 --repeats 5"
# Where that command writes its table in a checkout: the card names it, so the command stays the
# one that re-makes it (the package's copy is read, see QUANTIZATION_TABLE).
BENCH_RESULTS = "bench/results/quantization.json"
# The package-data copy of BENCH_RESULTS (pyproject.toml: [tool.setuptools.package-data]).
QUANTIZATION_TABLE = "quantization.json"


def quantization_alternatives() -> dict:
    """The measured table of quantisation variants, with the command that measured it: what a
    card's "Why these quantisation settings" section is made from."""
    table = resources.files(__package__).joinpath(QUANTIZATION_TABLE)
    try:
        data = json.loads(table.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = None
    if not isinstance(data, dict):
        return {"command": BENCH_COMMAND, "note": f"no measured table at {table}"}
    return {"command": f"{BENCH_COMMAND} --json {BENCH_RESULTS}", **data}


def quantize_model(fp32: Path, out: Path, settings: dict = QUANTIZATION) -> Path:
    """int8 dynamic quantisation with onnxruntime."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if settings.get("method", "dynamic") != "dynamic":
        raise EdgeDSEError(f"quantisation method {settings['method']!r} is not supported (dynamic only)")
    quantize_dynamic(
        str(fp32), str(out),
        weight_type=getattr(QuantType, settings.get("weight_type", "QInt8")),
        per_channel=bool(settings.get("per_channel", False)),
        reduce_range=bool(settings.get("reduce_range", False)),
        op_types_to_quantize=settings.get("op_types"),
    )
    return out
