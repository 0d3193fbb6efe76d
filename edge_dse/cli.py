"""The `edge-dse` command line. Each command mirrors one Library/Encoder call.

A user mistake (a missing folder, a locked library, a model mismatch, ...) prints one line that
names the fix and exits 1; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

from . import __version__, config, models
from .errors import EdgeDSEError
from .modes import DEFAULT_MODE
from .rerank import DEFAULT_DEPTH as DEFAULT_RERANK_DEPTH
from .searcher import clean_query_text


def _library(args, **kwargs):
    from .library import Library

    return Library(
        args.library,
        model=args.model,
        threads=args.threads,
        wait=args.wait,
        progress=not args.quiet and sys.stderr.isatty(),
        **kwargs,
    )


def _say(args, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr)


def _print_errors(report, limit: int = 10) -> None:
    for path, reason in report.errors[:limit]:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    if len(report.errors) > limit:
        print(f"  ... and {len(report.errors) - limit} more (see `edge-dse status`)", file=sys.stderr)


def _cluster(args):
    """--ray [ADDRESS] / --ship-bytes as Library's cluster= argument (None: a local sync)."""
    if args.ray is None:
        if args.ship_bytes:
            raise EdgeDSEError("--ship-bytes sends files to a Ray cluster: add --ray [ADDRESS]")
        return None
    if args.ray != "auto" and ":" not in args.ray and os.path.isdir(args.ray):  # `index --ray DIR ...`
        raise EdgeDSEError(f"--ray took {args.ray!r} as the cluster's address: put --ray after the folders, "
                           "or write --ray=auto")
    from .cluster import RayCluster

    return RayCluster(address=args.ray, ship="bytes" if args.ship_bytes else "path")


def cmd_index(args) -> int:
    with _library(args, **_spec_kwargs(args)) as lib:
        report = lib.add(*args.paths, cluster=_cluster(args))
        _say(args, f"{lib.path}: {report.summary()}")
        if not args.quiet:
            _print_errors(report)
    return 0


def cmd_sync(args) -> int:
    with _library(args) as lib:
        report = lib.sync(args.paths or None, cluster=_cluster(args))
        _say(args, f"{lib.path}: {report.summary()}")
        if not args.quiet:
            _print_errors(report)
    return 0


def cmd_search(args) -> int:
    # The query as the search and the rerank read it (undecodable argv bytes, which no UTF-8
    # output can print, become U+FFFD): what --json echoes is what was searched.
    query = clean_query_text(args.query)
    depth = None
    reranked_by = ""
    if args.rerank_depth is not None and not args.rerank:
        raise EdgeDSEError("--rerank-depth sets how many hits --rerank re-scores: add --rerank")
    if args.rerank:
        from .rerank import load_teacher_card

        # The teacher's card says how deep it pays to rerank (read before the search: the encoder
        # fetches that many hits even when fewer are shown, so one below k can come up).
        teacher = load_teacher_card(args.teacher)
        depth = args.rerank_depth or teacher.default_depth
        reranked_by = models.label(teacher)
    with _library(args, readonly=True) as lib:
        hits = lib.search(query, k=max(args.k, depth or 0), mode=args.mode, ef_search=args.ef_search)
        ranked_by, ranked_by_short = lib.ranked_by(hits.mode)
        if depth and hits:
            from .library import Hits

            reranked = lib.rerank(query, hits, teacher=args.teacher, depth=depth)
            hits = Hits(reranked[: args.k], {**hits.timings, **reranked.timings}, reranked.mode)
    if args.json:
        out = {"query": query, "mode": hits.mode, "ranked_by": ranked_by, "timings_ms": hits.timings}
        if depth:
            out["rerank_depth"] = depth  # the hits with a first_rank are the ones it re-scored
            out["reranked_by"] = reranked_by
        print(json.dumps({**out, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False, indent=2))
        return 0
    if not hits:
        print("no results" + ("" if query.strip() else " (empty query)"))
        return 0
    for hit in hits:
        where = f"  [{hit.heading}]" if hit.heading else ""
        moved = hit.moved() + " " if hit.first_rank is not None else ""  # after a rerank
        print(f"{hit.rank:>2}  {moved}{hit.score:.4f}  {hit.path}{where}  (chars {hit.start}-{hit.end})")
        snippet = " ".join(hit.text.split())
        print(textwrap.indent(textwrap.shorten(snippet, width=220, placeholder=" ..."), "    "))
    # Who ranked the hits, named from the models' roles (models.label): the arrows of a rerank
    # are moves from the encoder's order.
    who = f"ranked by {ranked_by}" + (f"; top {depth} re-ordered by the {reranked_by} (arrows: moves from the "
                                      f"{ranked_by_short} order)" if depth else "")
    timing = ", ".join(f"{k[:-3].replace('_', ' ')} {v:.1f} ms" for k, v in hits.timings.items())
    _say(args, f"[{hits.mode}] {who}; {timing}")
    return 0


# Failed files `status` lists by name (all with --all); all are counted by kind of reason.
STATUS_FAILED_SHOWN = 20


def cmd_status(args) -> int:
    with _library(args, readonly=True, allow_model_change=True) as lib:
        info = lib.status()
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    model = info["model"]
    print(f"library:  {info['library']}  ({info['bytes_on_disk'] / 1e6:.1f} MB on disk)")
    chunks = f", chunks of up to {model['chunk_tokens']} tokens" if model.get("chunk_tokens") else ", chunks of up to 1000 characters"
    # A library records its model's id; a shipped one is named by its role too (models.label).
    label = models.shipped_label(model["model_id"])
    named = f"{label}: " if label != model["model_id"] else ""
    print(f"model:    {named}{model['model_id']} (dim {model['model_dim']}, {model['model_pooling']} pooling{chunks})")
    print(f"contents: {info['folders']} folders, {info['files']} files, {info['chunks']} chunks, {info['errors']} failed files")
    fresh = "up to date" if info["index_generation"] == info["generation"] else "stale: rebuilt on next write or search"
    print(f"index:    catalog generation {info['generation']}, HNSW cache {fresh}")
    if info["skipped"]:
        from .library import skipped_text

        print(f"skipped:  {skipped_text(info['skipped'], most=12)}")
    for folder, n in info["folders_detail"].items():
        print(f"  folder  {folder}  ({n} files)")
    if info["errors"]:
        kinds = ", ".join(f"{kind} {n}" for kind, n in info["errors_by_kind"].items())
        print(f"failed:   {info['errors']} files: {kinds}")
    shown = info["errors_detail"] if args.all else info["errors_detail"][:STATUS_FAILED_SHOWN]
    for path, reason in shown:
        print(f"  failed  {path}: {reason}")
    if len(shown) < info["errors"]:
        print(f"  ... and {info['errors'] - len(shown)} more failed files (`edge-dse status --all` lists them)")
    return 0


def cmd_remove(args) -> int:
    with _library(args) as lib:
        removed = lib.remove(args.path)
    _say(args, f"removed {args.path}: {removed} files")
    return 0


def cmd_reindex(args) -> int:
    with _library(args, allow_model_change=True, **_spec_kwargs(args)) as lib:
        report = lib.reindex(cluster=_cluster(args))
        _say(args, f"{lib.path}: re-embedded with {lib.model_card['id']}, chunks of up to {lib.spec.chunk_tokens} "
                   f"tokens: {report.summary()}")
    return 0


def cmd_embed(args) -> int:
    from .encoder import Encoder
    from .file_embedding import embed_files

    out = Path(args.out)
    if out.suffix not in (".npy", ".jsonl"):
        raise EdgeDSEError(f"--out {out}: use a .npy (vectors, with a .jsonl of metadata beside it) or .jsonl file")
    enc = Encoder(args.model, threads=args.threads)
    missing = [p for p in args.files if not Path(p).is_file()]
    if missing:
        raise EdgeDSEError(f"{missing[0]}: no such file")
    result = embed_files(args.files, enc, progress=not args.quiet and sys.stderr.isatty())
    meta_path = out.with_suffix(".jsonl") if out.suffix == ".npy" else out
    if out.suffix == ".npy":
        import numpy as np

        np.save(out, result.vectors)
    with open(meta_path, "w", encoding="utf-8") as fh:
        for row, vec in zip(result.rows, result.vectors):
            record = dict(row, model=enc.id)
            if out.suffix == ".jsonl":
                record["vector"] = [round(float(x), 6) for x in vec]
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    for path, reason in result.errors:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    _say(args, f"{len(result.rows)} chunks from {len(args.files) - len(result.errors)} files -> {out}"
               + (f" (+ metadata {meta_path})" if meta_path != out else "") + f", dim {enc.dim}, model {enc.id}")
    return 0 if result.rows or not result.errors else 1


def cmd_ui(args) -> int:
    from .app_service import check_host

    check_host(args.host, args.allow_remote, args.trusted_host)  # refuse before loading gradio
    try:
        from . import app
    except ImportError as exc:  # gradio missing: the ui extra is not installed
        raise EdgeDSEError(f"`edge-dse ui` needs the ui extra ({exc.name} is missing): pip install -e '.[ui]'") from exc
    app.serve(args.library_arg or args.library, teacher=args.teacher, model=args.model, host=args.host,
              port=args.port, open_browser=args.open, allow_remote=args.allow_remote, threads=args.threads,
              wait=args.wait, trusted_hosts=args.trusted_host)
    return 0


def _train_command(name: str, module: str, argv: list[str]) -> int:
    """Commands that need the train extra (torch, optimum), passed their own arguments."""
    import importlib

    try:
        mod = importlib.import_module(f".distill.{module}", __package__)
    except ImportError as exc:  # torch/optimum missing: the train extra is not installed
        raise EdgeDSEError(f"`edge-dse {name}` needs the train extra ({exc.name} is missing): pip install -e '.[train]'") from exc
    return mod.main(argv) or 0


def cmd_distill(args) -> int:
    return _train_command("distill", "pipeline", args.pass_args)


def cmd_eval(args) -> int:
    return _train_command("eval", "evaluate", args.pass_args)


def cmd_export(args) -> int:
    try:
        from .distill import export
    except ImportError as exc:  # torch/optimum missing: the train extra is not installed
        raise EdgeDSEError(f"`edge-dse export` needs the train extra ({exc.name} is missing): pip install -e '.[train]'") from exc
    return export.main(args.export_args)


def _add_global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("-l", "--library", default=default(None),
                        help=f"library folder (default: ${config.ENV_HOME} or {config.default_library_dir()})")
    parser.add_argument("-m", "--model", default=default(None),
                        help="shipped model name or model folder (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=default(None), help="encoder threads (default: usable cores, max 8)")
    parser.add_argument("--wait", type=float, default=default(0.0), metavar="SECONDS",
                        help="wait this long for another process writing the library (default: fail at once)")
    parser.add_argument("-q", "--quiet", action="store_true", default=default(False), help="no progress bars or summaries")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                        help="extract, chunk and embed on a Ray cluster (cluster extra): ADDRESS as `ray start` "
                             "prints it, or none for $RAY_ADDRESS / the cluster this machine joined / a new "
                             "local one. Workers read the files at the same paths (a shared filesystem)")
    parser.add_argument("--ship-bytes", action="store_true",
                        help="with --ray: send the files' bytes to the workers (no shared filesystem needed)")


def _add_spec_options(parser: argparse.ArgumentParser) -> None:
    """The settings a library records when it is created or reindexed (index_spec.IndexSpec): an
    existing library keeps its own, a different value is refused naming `reindex`, which changes it."""
    parser.add_argument("--max-length", type=int, default=None, metavar="N",
                        help="the encoder's window in tokens; chunks are cut to fit it (default: the model's, "
                             "its largest; an existing library keeps its own, `reindex --max-length N` changes it)")
    parser.add_argument("--hnsw-m", type=_positive_int, default=None, metavar="M",
                        help="links per node of the HNSW graph: more is better recall, more memory (default 16)")
    parser.add_argument("--hnsw-ef-construction", type=_positive_int, default=None, metavar="N",
                        help="candidates kept while building the HNSW graph: more is better recall, slower "
                             "indexing (default 200)")
    parser.add_argument("--max-file-mb", type=float, default=None, metavar="MB",
                        help="skip files larger than this (default 50)")
    parser.add_argument("--ignore-dir", action="append", default=None, metavar="NAME",
                        help="never enter folders with this name, beside the default ones (.git, node_modules, "
                             "...); repeat for more")
    parser.add_argument("--include-hidden", action="store_true", default=None,
                        help="also index hidden files and folders (names starting with a dot)")


def _spec_kwargs(args) -> dict:
    """The Library arguments the spec flags given ask for (none given: the library's own)."""
    kwargs = {"max_length": args.max_length, "hnsw_m": args.hnsw_m, "hnsw_ef_construction": args.hnsw_ef_construction,
              "include_hidden": args.include_hidden}
    if args.max_file_mb is not None:
        if args.max_file_mb <= 0:
            raise EdgeDSEError(f"--max-file-mb {args.max_file_mb:g}: give a size in MB above 0")
        kwargs["max_bytes"] = int(args.max_file_mb * 2**20)
    if args.ignore_dir:
        from .ingest import DEFAULT_IGNORE_DIRS

        kwargs["ignore_dirs"] = sorted(set(DEFAULT_IGNORE_DIRS) | set(args.ignore_dir))
    return {name: value for name, value in kwargs.items() if value is not None}


PASS_THROUGH = ("export", "distill", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-dse",
        description="Private semantic search over your own files, on your own CPU, offline.",
    )
    parser.add_argument("--version", action="version", version=f"edge-dse {__version__}")
    _add_global_options(parser, defaults=True)
    # The same options after the command (`edge-dse search QUERY --library DIR`); SUPPRESS keeps
    # a value given before the command when it is not repeated after it.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_parser = sub.add_parser

    def add_parser(name, **kwargs):
        parents = [] if name in PASS_THROUGH else [common]  # these pass their arguments through
        return _add_parser(name, parents=parents, **kwargs)

    sub.add_parser = add_parser

    p = sub.add_parser("index", help="add folders to the library and index them")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _add_spec_options(p)
    _add_cluster_options(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("sync", help="re-sync the library's folders (all, or the ones named)")
    p.add_argument("paths", nargs="*", metavar="PATH")
    _add_cluster_options(p)
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("search", help="search the library")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    p.add_argument("--mode", choices=["vector", "keyword", "hybrid"], default=DEFAULT_MODE,
                   help=f"vector (encoder + HNSW: by meaning), keyword (FTS5 BM25: exact names and "
                        f"identifiers) or hybrid (both, their scaled scores mixed); default {DEFAULT_MODE}")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--rerank", action="store_true", help="re-order the hits with the teacher (slower, better)")
    p.add_argument("--teacher", default=None, help="teacher folder for --rerank (default: the shipped teacher)")
    p.add_argument("--rerank-depth", type=_positive_int, default=None, metavar="N",
                   help="with --rerank: how many of the encoder's top hits the teacher re-scores "
                        f"(default: the depth the teacher's card records, else {DEFAULT_RERANK_DEPTH})")
    p.add_argument("--ef-search", type=int, default=None, metavar="N",
                   help="the HNSW candidate list of a vector or hybrid search: higher finds more of the "
                        "nearest chunks, slower (default: the index's; never below the hits fetched)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("status", help="folders, counts, model, failed files")
    p.add_argument("--json", action="store_true")
    p.add_argument("--all", action="store_true", help=f"list every failed file (default: the first {STATUS_FAILED_SHOWN})")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("remove", help="remove a folder from the library")
    p.add_argument("path")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("reindex", help="re-embed the whole library with the current model and settings")
    _add_spec_options(p)
    _add_cluster_options(p)
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("embed", help="embed files: one vector per chunk, with offsets")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--out", required=True, help="vectors.npy (+ vectors.jsonl metadata) or vectors.jsonl")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("ui", help="the local web app: search, library, model cards (ui extra)")
    p.add_argument("library_arg", nargs="?", metavar="LIBRARY", help="library folder (same as --library)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other machines can reach (there is no login: they could read your files)")
    p.add_argument("--trusted-host", action="append", default=[], metavar="NAME",
                   help="with --allow-remote: a name or address other machines reach the page by "
                        "(requests addressed to any other name are refused; repeat for several)")
    p.add_argument("--teacher", default=None, help="teacher folder for reranking (default: the shipped teacher)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("export", help="export a Hugging Face model to an int8 ONNX asset (train extra)",
                       add_help=False)
    p.add_argument("export_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("distill", help="make the teacher and the student, end to end (train extra; --help for options)",
                       add_help=False)
    p.add_argument("pass_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("eval", help="every model on the held-out splits (train extra; --help for options)", add_help=False)
    p.add_argument("pass_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in PASS_THROUGH:  # their own parsers (argparse's REMAINDER drops a leading --help)
            return {"export": cmd_export, "distill": cmd_distill, "eval": cmd_eval}[argv[0]](
                argparse.Namespace(export_args=argv[1:], pass_args=argv[1:]))
        args = build_parser().parse_args(argv)
        return args.func(args)
    except EdgeDSEError as exc:
        print(f"edge-dse: error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:  # a missing model folder or path given by the user
        print(f"edge-dse: error: {exc.strerror + ': ' + exc.filename if exc.filename else exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edge-dse: interrupted (everything committed so far is kept)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`edge-dse status | head -1`): stop quietly, as other tools do.
        # Python would complain again flushing stdout at exit: point it at nothing first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a tool stopped by it


if __name__ == "__main__":
    sys.exit(main())
