"""PyInstaller's entry script for the desktop bundle (build.spec): all the work is in edge_dse.desktop."""

import sys

from edge_dse.desktop import main

if __name__ == "__main__":
    sys.exit(main())
