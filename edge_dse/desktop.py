"""`edge-dse-app`: the desktop program (the PyInstaller bundle's entry point, see build.spec).

    edge-dse-app                      the UI on 127.0.0.1 at a free port, opened in the browser
    edge-dse-app --no-browser         the same, printing the address instead of opening it
    edge-dse-app --selftest           index the shipped sample documents, search, rerank; exit 0 if found
    edge-dse-app index|search|... ARGS  the `edge-dse` command line, unchanged

The library lives in the user data dir ($EDGE_DSE_HOME, else e.g. ~/.local/share/edge_dse/library),
never inside the bundle (which may be read-only and is replaced on upgrade), so a second start,
or a new version, finds the same library.
"""

from __future__ import annotations

import argparse
import socket
import sys

from . import config  # sets the offline environment before anything heavy loads
from .errors import EdgeDSEError

# Options that take a value (the command line's global ones, the app's own): a call may start
# with them (`edge-dse-app --library DIR search ...`), so their values are not taken for the command.
_VALUE_OPTIONS = {"-l", "--library", "-m", "--model", "--threads", "--wait", "--teacher", "--port"}


def _cli_command(argv: list[str]) -> str | None:
    """The `edge-dse` command named in argv, if any (then argv is the command line's business)."""
    from .cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = set(sub.choices)
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _VALUE_OPTIONS:
            skip = True
        elif not token.startswith("-"):
            return token if token in commands else None
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the OS picks it), so two copies or another app never clash."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-dse-app",
        description="edge_dse: search your own files by meaning, offline. Without a command it starts "
                    "the UI in your browser; `edge-dse-app index|search|status|... --help` is the command line.",
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open the browser; print the address")
    parser.add_argument("--selftest", action="store_true",
                        help="index the shipped sample documents, search and rerank them; exit 0 if all are found")
    parser.add_argument("-l", "--library", default=None,
                        help=f"library folder (default: ${config.ENV_HOME} or {config.default_library_dir()})")
    parser.add_argument("-m", "--model", default=None, help="shipped model name or model folder")
    parser.add_argument("--teacher", default=None, help="teacher folder for reranking (default: the shipped teacher)")
    parser.add_argument("--port", type=int, default=None, help="port for the UI (default: a free one)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _cli_command(argv):
        from .cli import main as cli_main

        return cli_main(argv)
    args = build_parser().parse_args(argv)
    if args.selftest:
        from .selftest import run

        try:
            return run(model=args.model, teacher=args.teacher)
        except EdgeDSEError as exc:
            print(f"selftest: FAILED: {exc}", file=sys.stderr)
            return 1
    # The UI goes through the command line's `ui`, which already turns user errors into one line.
    from .cli import main as cli_main

    ui = ["ui", "--host", "127.0.0.1", "--port", str(args.port or free_port())]
    for flag, value in (("--library", args.library), ("--model", args.model), ("--teacher", args.teacher)):
        if value:
            ui += [flag, value]
    return cli_main(ui + ([] if args.no_browser else ["--open"]))


if __name__ == "__main__":
    sys.exit(main())
