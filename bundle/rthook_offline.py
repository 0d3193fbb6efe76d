"""PyInstaller runtime hook: runs before any bundled module, so onnxruntime's telemetry and
gradio's analytics are off even before edge_dse.config is imported (which sets the same)."""

import os

for key, value in {"ORT_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                   "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}.items():
    os.environ.setdefault(key, value)
