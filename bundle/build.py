"""Build the desktop bundle: a build venv with only what the bundle needs, then PyInstaller.

    python3 bundle/build.py            # -> dist/edge-dse-app/edge-dse-app

Why a venv of its own: PyInstaller bundles whatever the environment can import, and the dev venv
holds torch and transformers (the train extra); this one holds the run time, the ui extra and
the bundle extra only. hnswlib is compiled here with HNSWLIB_NO_NATIVE=1: its setup.py otherwise
builds with -march=native and the bundle would die with "illegal instruction" on an older CPU
(hnswlib's setup.py builds with -march=native unless HNSWLIB_NO_NATIVE is set). --no-cache-dir keeps pip from reusing a wheel it compiled natively before.

A venv that already exists is reused (its hnswlib was checked when it was made); --fresh
remakes it. Prints the bundle's size and the time each step took.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HNSWLIB = "hnswlib==0.8.0"
# Never in the bundle: the train extra's packages (build.spec excludes them too).
FORBIDDEN = ("torch", "transformers", "optimum")


def _run(cmd: list, log: Path | None = None, **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    if log is None:
        subprocess.run([str(c) for c in cmd], check=True, **kwargs)
        return
    with open(log, "w") as out:
        done = subprocess.run([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, **kwargs)
    if done.returncode:
        sys.exit(f"build_bundle: failed (exit {done.returncode}), see {log}")


def check_portable_hnswlib(log: Path) -> None:
    """The compile lines pip printed must show hnswlib really was built, and without -march=native."""
    text = log.read_text(errors="replace")
    compiles = [ln for ln in text.splitlines() if "bindings.cpp" in ln and " -c " in ln]
    if not compiles:
        sys.exit(f"build_bundle: hnswlib was not compiled from source (no compile line in {log})")
    if any("-march=native" in ln for ln in compiles):
        sys.exit(f"build_bundle: hnswlib was compiled with -march=native despite HNSWLIB_NO_NATIVE=1 ({log})")
    print(f"build_bundle: hnswlib compiled without -march=native ({log})", flush=True)


def make_venv(venv: Path, logs: Path) -> Path:
    python = venv / "bin" / "python"
    if python.exists():
        print(f"build_bundle: reusing {venv} (--fresh to remake it)", flush=True)
        return python
    _run([sys.executable, "-m", "venv", venv])
    _run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], logs / "pip-upgrade.log")
    env = dict(os.environ, HNSWLIB_NO_NATIVE="1")
    hnsw_log = logs / "hnswlib-build.log"
    _run([python, "-m", "pip", "install", "-v", "--no-binary", "hnswlib", "--no-cache-dir", HNSWLIB], hnsw_log, env=env)
    check_portable_hnswlib(hnsw_log)
    # The package itself, editable (build.spec reads it from the checkout), with the ui and bundle
    # extras; hnswlib is already there, so pip keeps the portable build.
    _run([python, "-m", "pip", "install", "-q", "-e", f"{ROOT}[ui,bundle]"], logs / "pip-install.log")
    return python


def check_no_train_packages(python: Path) -> None:
    code = "import importlib.util as u; print(' '.join(m for m in %r if u.find_spec(m)))" % (FORBIDDEN,)
    found = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if found:
        sys.exit(f"build_bundle: the build venv has {', '.join(found)}: remake it with --fresh")


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=ROOT / "build" / "bundle-venv", help="build venv (default build/bundle-venv)")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the bundle goes (default dist/)")
    parser.add_argument("--fresh", action="store_true", help="remake the build venv")
    args = parser.parse_args(argv)
    work = ROOT / "build" / "pyinstaller"
    logs = ROOT / "build" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if args.fresh and args.venv.exists():
        shutil.rmtree(args.venv)

    t0 = time.monotonic()
    python = make_venv(args.venv, logs)
    check_no_train_packages(python)
    t1 = time.monotonic()
    _run([python, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
          "--distpath", args.dist, "--workpath", work, ROOT / "build.spec"], cwd=ROOT)
    t2 = time.monotonic()
    bundle = args.dist / "edge-dse-app"
    program = bundle / "edge-dse-app"
    if not program.is_file():
        sys.exit(f"build_bundle: PyInstaller made no {program}")
    stray = [m for m in FORBIDDEN if (bundle / "_internal" / m).exists()]
    if stray:
        sys.exit(f"build_bundle: {', '.join(stray)} ended up in the bundle")
    print(f"build_bundle: {program}: {folder_mb(bundle):.0f} MB; venv {t1 - t0:.0f} s, pyinstaller {t2 - t1:.0f} s",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
