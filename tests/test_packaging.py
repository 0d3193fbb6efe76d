"""A wheel carries every package and the shipped models (pyproject lists packages by hand,
because assets/ is mapped into the wheel as edge_dse.assets)."""

from __future__ import annotations

import sys

from conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None


def test_every_package_is_listed_for_the_wheel():
    if tomllib is None:
        import pytest

        pytest.skip("tomllib needs Python 3.11")
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "edge_dse").rglob("__init__.py")}
    listed = set(setup["packages"])
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert setup["package-dir"]["edge_dse.assets"] == "assets"
    shipped = {p.parent.name for p in (REPO / "assets").glob("*/card.json")}
    assert shipped and all(
        (REPO / "assets" / name / f).is_file() for name in shipped for f in ("model.onnx", "tokenizer.json", "card.json"))


def test_the_quantisation_table_ships_as_package_data_and_matches_the_bench():
    """Exports embed edge_dse/distill/quantization.json in every bi-encoder card (installed or
    not); it is a copy of what `python -m bench.encode quantization` wrote, refreshed by hand
    (bench/encode.py's docstring)."""
    import json

    packaged = REPO / "edge_dse" / "distill" / "quantization.json"
    bench = REPO / "bench" / "results" / "quantization.json"
    assert json.loads(packaged.read_text()) == json.loads(bench.read_text()), (
        "cp bench/results/quantization.json edge_dse/distill/quantization.json")
    if tomllib is not None:
        data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
        assert "quantization.json" in data["edge_dse.distill"]
