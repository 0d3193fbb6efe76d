"""Run as the `edge-dse` of tests/test_app_browser.py (`python -m rerank_hooks ui ...`, with this
folder on PYTHONPATH): the teacher's scoring of the query named by $EDGE_DSE_TEST_HOLD_QUERY
stops after its first progress report until the test writes a byte into the FIFO named by
$EDGE_DSE_TEST_RERANK_GATE. The page's rerank progress then stays up until the test has seen it:
no race with a clock."""

from __future__ import annotations

import os
import sys

HOLD_QUERY = "EDGE_DSE_TEST_HOLD_QUERY"
GATE = "EDGE_DSE_TEST_RERANK_GATE"


def hold_scoring() -> None:
    from edge_dse.rerank import Reranker

    real_score = Reranker.score

    def score(self, query, passages, **kwargs):
        if query != os.environ[HOLD_QUERY]:
            return real_score(self, query, passages, **kwargs)
        report = kwargs.pop("on_progress", None) or (lambda done, total: None)

        def report_then_hold(done, total):
            report(done, total)
            if done == 0:  # reported "nothing scored yet": wait for the test
                with open(os.environ[GATE], "rb") as gate:  # opens when the test opens it to write
                    gate.read(1)

        return real_score(self, query, passages, on_progress=report_then_hold, **kwargs)

    Reranker.score = score


if __name__ == "__main__":
    hold_scoring()
    from edge_dse.cli import main

    sys.exit(main())
