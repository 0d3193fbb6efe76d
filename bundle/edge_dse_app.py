"""PyInstaller's entry script for the desktop bundle (build.spec): all the work is in edge_dse.desktop."""

import sys

from edge_dse.desktop import main
from edge_dse.ingest import budget

if __name__ == "__main__":
    # PDF and DOCX are extracted in a worker process (edge_dse.ingest.budget): in the frozen
    # program there is no `python -m`, so the worker is this program, started with this flag.
    if sys.argv[1:2] == [budget.WORKER_FLAG]:
        sys.exit(budget.serve(int(sys.argv[2])))
    sys.exit(main())
