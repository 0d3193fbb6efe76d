"""Run inside the Ray workers of tests/test_cluster.py (runtime_env's worker_process_setup_hook):
a file named poison* crashes the worker process that extracts it, as a real crash would."""

from __future__ import annotations

import os
from pathlib import Path

POISON_LOG = "EDGE_DSE_TEST_POISON_LOG"  # each crash appends a line here: the test counts the tries


def crash_on_poison() -> None:
    import edge_dse.ingest as ingest

    real_extract = ingest.extract

    def extract(path, data=None):
        if Path(path).name.startswith("poison"):
            with open(os.environ[POISON_LOG], "a", encoding="utf-8") as log:
                log.write(f"{path}\n")
            os._exit(1)
        return real_extract(path, data)

    ingest.extract = extract
