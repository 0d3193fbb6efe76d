"""Process-wide settings: where data and models live, and the offline environment.

Importing this module sets the environment variables that keep every library offline and
silent. It must run before onnxruntime or gradio is imported, so `edge_dse/__init__.py`
imports it first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# onnxruntime writes telemetry files on plain import unless this is set first (seen under ~/.cache/Microsoft and $TMPDIR/.ses).
_OFFLINE_ENV = {
    "ORT_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}
for _key, _value in _OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

APP_NAME = "edge_dse"
# The default encoder for new libraries: the first of these that ships and has earned it. A
# distilled student leads only when its card records a passing promotion ("promotion":
# {"default": true}, written by `edge-dse eval --promote`: nDCG@10 >= the baseline on every
# held-out split and >= 2x its speed, see edge_dse/distill/promote.py); the baseline
# (all-MiniLM-L6-v2 int8), last, needs none. An existing library keeps the shipped model that
# built it (library.py), so a change of default never breaks one; `edge-dse reindex` moves it.
DEFAULT_MODELS = ("student", "baseline")

# Environment overrides, named here once so docs and code agree.
ENV_HOME = "EDGE_DSE_HOME"  # the default library folder
ENV_ASSETS = "EDGE_DSE_ASSETS"  # where shipped models are looked up
ENV_THREADS = "EDGE_DSE_THREADS"  # onnxruntime intra-op threads


def default_library_dir() -> Path:
    """The library used when none is named: $EDGE_DSE_HOME, else the user data dir."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_data_path(APP_NAME, appauthor=False) / "library"


def assets_dir() -> Path:
    """The folder that holds the shipped models (one sub-folder per model).

    Looked up in order: $EDGE_DSE_ASSETS; the PyInstaller bundle; `assets/` beside the
    package (source checkout or editable install); `edge_dse/assets` (a wheel).
    """
    env = os.environ.get(ENV_ASSETS)
    candidates = []
    if env:
        candidates.append(Path(env).expanduser())
    if getattr(sys, "frozen", False) and hasattr(sys, "_MEIPASS"):
        candidates.append(Path(sys._MEIPASS) / "assets")
    here = Path(__file__).resolve().parent
    candidates += [here.parent / "assets", here / "assets"]
    for path in candidates:
        if path.is_dir():
            return path
    return candidates[0]


def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    """A model name (a folder under assets/) or a path -> the model's folder."""
    if model is None:
        model = default_model_name()
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    shipped = assets_dir() / str(model)
    if shipped.is_dir():
        return shipped
    from .models import CARD_FILE, has_card

    known = sorted(p.name for p in assets_dir().glob("*") if has_card(p))
    raise FileNotFoundError(
        f"no model folder {str(model)!r}: pass a folder holding model.onnx, tokenizer.json and "
        f"{CARD_FILE}, or one of the shipped models: {', '.join(known) or '(none found in ' + str(assets_dir()) + ')'}"
    )


def default_model_name() -> str:
    """The first of DEFAULT_MODELS that ships and qualifies (see DEFAULT_MODELS); the cards are
    read in models.py, the one module that reads them."""
    from .models import default_model_name

    return default_model_name()


def default_threads() -> int:
    """onnxruntime threads: $EDGE_DSE_THREADS, else the usable cores (at most 8).

    Set explicitly because onnxruntime's default can oversubscribe the cores.
    """
    env = os.environ.get(ENV_THREADS)
    if env:
        return max(1, int(env))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))
