"""The local web UI (`edge-dse ui`): search, manage folders, read the model cards.

Needs the `ui` extra (gradio). Nothing else in edge_dse imports this module, so `import
edge_dse` and the other commands never load gradio. The work itself is in app_service.py; this
module is the page: layout, HTML of the hits, and turning errors into one-line messages.

Privacy: binds 127.0.0.1 unless the caller opts in to another host (`allow_remote`), never
opens a share link, and gradio's analytics are off (edge_dse.config sets
GRADIO_ANALYTICS_ENABLED=False before gradio is imported: this module imports config first).
"""

from __future__ import annotations

import functools
import html
import inspect
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

from . import config
from .app_service import MAX_K, SearchResult, Service, agreement, check_host, format_timings, movement
from .errors import EdgeDSEError
from .library import Hit
from .modes import DEFAULT_MODE, MODES
from .snippets import display_text

# How long a stopping UI waits for its web server to close its connections.
SHUTDOWN_SECONDS = 5

SNIPPET_CHARS = 240
# What the progress bar says while the teacher scores (the browser test looks for it).
RERANK_PROGRESS = "the teacher is re-scoring the top hits"
# Failed files the Library tab lists by name (the others are counted by kind).
FAILED_ROWS = 200
# After every event, gradio's queue summarises every event it ever ran in a pandas DataFrame, for
# a monitoring dashboard this app never turns on: work that grows with each request, pandas 3
# deprecation warnings, and, since pandas changes the warning filters in passing, Python's
# "once per place" record of warnings shown is reset, so any warning printed once came back on
# every request. A summary interval no count reaches turns that summary off (gradio reads it
# when it makes its queue); a value the user set is kept.
GRADIO_QUIET_QUEUE = ("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(2 ** 62))

CSS = """
.edse-hit { border: 1px solid #ddd; border-radius: 6px; padding: 6px 8px; margin-bottom: 6px; }
.edse-hit .edse-path { color: #666; font-size: 0.85em; word-break: break-all; }
.edse-hit .edse-score { float: right; font-family: monospace; }
.edse-move { font-weight: bold; margin-right: 4px; color: #1a7f37; }
.edse-move.down { color: #b42318; }
.edse-was { color: #666; font-size: 0.85em; margin-right: 4px; }
.edse-context { white-space: pre-wrap; font-family: monospace; font-size: 0.9em; max-height: 30em; overflow: auto; }
.edse-table { max-height: 24em; overflow: auto; }
.edse-table table { width: 100%; border-collapse: collapse; font-size: 0.9em; }
.edse-table th, .edse-table td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eee; word-break: break-all; }
.edse-context mark, .edse-hit mark { background: #fff3a0; }
details.edse-card { margin: 0.5em 0 1em; }
details.edse-card > summary { cursor: pointer; font-weight: 600; }
"""


# -- HTML of the results ---------------------------------------------------------------------------
# Words too common to be worth marking in a snippet.
STOPWORDS = frozenset("the and for with from that this what how why when where which who whom are was were "
                      "can does did has have not but all any its into onto your you our they them their".split())


def snippet_html(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """The part of a chunk around the first query word it holds (its start when none), with the
    query's words (and words they begin: "crash" marks "crashes") marked. `text` is shown as
    given: hits_html passes it through snippets.display_text first."""
    flat = " ".join(text.split())
    words = {w.lower() for w in re.findall(r"\w{3,}", query[:2000])} - STOPWORDS
    words = sorted(words, key=len, reverse=True)[:30]
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\w*", re.I) if words else None
    first = pattern.search(flat) if pattern else None
    a = max(0, first.start() - width // 3) if first else 0
    if a:
        a = flat.find(" ", a) + 1 or a
    piece = flat[a:a + width]
    if a + width < len(flat):
        piece = piece.rsplit(" ", 1)[0] + " …"
    out, pos = ["… " if a else ""], 0
    for m in pattern.finditer(piece) if pattern else ():
        out += [html.escape(piece[pos:m.start()]), f"<mark>{html.escape(m.group(0))}</mark>"]
        pos = m.end()
    out.append(html.escape(piece[pos:]))
    return "".join(out)


def hits_html(hits: Sequence[Hit], *, k: int, title: str, query: str = "", reranked: bool = False,
              empty: str = "", before: str = "") -> str:
    """A column of hits. After a rerank, each says how it moved; one from below the first
    column's cut says from where, naming what ranked it there (`before`, e.g. "baseline")."""
    rows = []
    for hit in hits:
        move = ""
        if reranked:
            m = movement(hit, k)
            move = f'<span class="edse-move{" down" if m.startswith("↓") else ""}">{m}</span>'
            if m == "new":  # from below the first column's cut: say from where
                was = f"{before} #{hit.first_rank}" if before else f"was #{hit.first_rank}"
                move += f'<span class="edse-was">({html.escape(was)})</span> '
            elif not m:  # below the teacher's depth: the first column's order and score
                move = '<span class="edse-was">(not re-scored)</span> '
        heading = f" — {html.escape(hit.heading)}" if hit.heading else ""
        rows.append(
            f'<div class="edse-hit" data-rank="{hit.rank}">'
            f'<span class="edse-score">{hit.score:.4f}</span>'
            f"{move}<b>{hit.rank}. {html.escape(Path(hit.path).name)}</b>{heading}"
            f'<div class="edse-path">{html.escape(hit.path)} (chars {hit.start}-{hit.end})</div>'
            f"<div>{snippet_html(display_text(hit.path, hit.text), query)}</div></div>"
        )
    body = "".join(rows) or f'<p class="edse-empty"><i>{html.escape(empty)}</i></p>'
    return f"<h4>{html.escape(title)}</h4>{body}"


def table_html(title: str, headers: Sequence[str], rows: Sequence[Sequence], empty: str = "none yet") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    body = body or f'<tr><td colspan="{len(headers)}"><i>{html.escape(empty)}</i></td></tr>'
    return f'<h4>{html.escape(title)}</h4><div class="edse-table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def open_choices(res: SearchResult) -> list[tuple[str, str]]:
    """Dropdown entries for every hit of both columns, once each: (label, JSON [path, start, end])."""
    seen, out = set(), []
    for col, hits in ((res.ranked_by_short or "search", res.first), (res.reranked_by_short or "teacher", res.teacher or [])):
        for h in hits:
            if h.chunk_id not in seen:
                seen.add(h.chunk_id)
                out.append((f"{col} {h.rank}. {Path(h.path).name} (chars {h.start}-{h.end})",
                            json.dumps([h.path, h.start, h.end])))
    return out


# What the collapsed part of each card on the Model tab is called.
CARD_DETAILS = "Full card: how it was made, what was measured"
_HELD_OUT_SECTION = re.compile(r"^#+[ \t]+Held-out evaluation[ \t]*$", re.M | re.I)


def held_out_table(card) -> str:
    """The card's held-out evaluation table (Markdown), "" when it records none. Read from
    card.json's evaluation record, else from card.md's "Held-out evaluation" section."""
    evaluation = card.card.get("evaluation") if isinstance(card.card.get("evaluation"), dict) else {}
    table = evaluation.get("table") or ""
    if isinstance(table, list):
        table = "\n".join(map(str, table))
    if not table and card.markdown:
        section = _HELD_OUT_SECTION.search(card.markdown)
        if section:
            body = re.split(r"^#+[ \t]", card.markdown[section.end():], maxsplit=1, flags=re.M)[0]
            rows = re.search(r"(?:^\|.*\|[ \t]*\n?)+", body, re.M)
            table = rows.group(0) if rows else ""
    return str(table).strip()


def _demoted(markdown: str, by: int = 3) -> str:
    """card.md's headings pushed down `by` levels (code blocks untouched), to sit under a card's
    own heading on the Model tab."""
    out, fence = [], ""
    for line in markdown.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            fence = "" if fence and stripped.startswith(fence) else fence or stripped[:3]
        elif not fence and re.match(r"#{1,6}[ \t]", stripped):
            hashes = len(stripped) - len(stripped.lstrip("#"))
            line = "#" * min(6, hashes + by) + stripped[hashes:]
        out.append(line)
    return "\n".join(out)


def _card_markdown(card) -> str:
    """One model on the Model tab: its summary shown (id, role, kind, dim, size, the held-out
    table), the rest of the card folded in a <details> element the reader opens."""
    # The title and the role line are derived (models.label, models.role_text): a card's own
    # "role" text is a description written when it was made, and may name a default since changed.
    title = card.label or card.card.get("name") or card.folder.name
    role = f" — used here as the {' and '.join(card.roles)}" if card.roles else ""
    head = f"### {title}: `{card.card.get('id', '?')}`{role}\n\n{card.summary()}  \nfolder `{card.folder}`"
    if card.duty:
        head += f"  \n{card.duty}"
    if card.card.get("error"):
        head += f"\n\n⚠️ {card.card['error']}"
    table = held_out_table(card)
    evaluation = card.card.get("evaluation") if isinstance(card.card.get("evaluation"), dict) else {}
    when = ", ".join(str(evaluation[k]) for k in ("date", "cpu") if evaluation.get(k))
    head += (f"\n\n**Held-out evaluation**{f' ({when})' if when else ''}:\n\n{table}" if table
             else "\n\n*No held-out evaluation in this card.*")
    full = card.markdown or "```json\n" + json.dumps(
        {k: v for k, v in card.card.items() if k != "files"}, indent=2)[:6000] + "\n```"
    # Blank lines around the Markdown inside the HTML element: it is rendered as Markdown there.
    return f"{head}\n\n<details class=\"edse-card\"><summary>{CARD_DETAILS}</summary>\n\n{_demoted(full)}\n\n</details>"


def render_search(res: SearchResult, *, query: str, k: int, mode: str) -> tuple[str, str, str, str]:
    """A search's page parts: (first column HTML, teacher column HTML, timings line, message).
    Each column is named after what ranked it (models.label, via the SearchResult), never a
    fixed name: which encoder is the default depends on the shipped cards."""
    empty = res.note or "no results"
    title = f"Search order: {res.ranked_by or 'keyword search (BM25)'}"
    first = hits_html(res.first, k=k, title=title, query=query, empty=empty)
    agree = ""
    teacher_title = f"Reranked by the {res.reranked_by}" if res.reranked_by else "Teacher-reranked order"
    if res.teacher is None:
        why = res.teacher_note or f"turn on “Teacher rerank” to see the teacher's order beside the {res.ranked_by_short or 'search'} order"
        teacher_col = hits_html([], k=k, title=teacher_title, empty=why)
    else:
        teacher_col = hits_html(res.teacher, k=k, title=teacher_title, query=query, reranked=True, empty=empty,
                                before=res.ranked_by_short)
        overlap, tau = agreement(res.first, res.teacher, k)
        agree = f" — agreement: overlap@{k} {overlap:.2f}, Kendall tau " + ("n/a" if tau is None else f"{tau:+.2f}")
    line = f"**[{mode}]** " + format_timings(res.timings) + agree
    # The teacher's note shows in its own column, not again in the message line.
    return first, teacher_col, line, f"ℹ️ {res.note}" if res.note else ""


def render_cards(svc: Service) -> str:
    """The Model tab: each card under its derived label and role, and what this app uses it as;
    its summary shown, the full card collapsed (the tab was ~7,500 px tall with every card open)."""
    cards = svc.cards()
    parts = [_card_markdown(c) for c in cards] or [f"no model cards under `{config.assets_dir()}`"]
    if svc.teacher_problem:
        parts.append(f"### teacher\n\n⚠️ reranking is off: {svc.teacher_problem}")
    return "\n\n---\n\n".join(parts)


# -- errors never reach the page as a traceback --------------------------------------------------
def guarded(on_error: Callable[[str], object]):
    """Run a handler; a user error becomes its one-line message, a bug a short line that points at
    the terminal (where the traceback goes), never a stack trace in the page."""

    def mark(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except EdgeDSEError as exc:
                return on_error(f"⚠️ {exc}")
            except Exception as exc:  # noqa: BLE001 - the page must never show a traceback
                traceback.print_exc(file=sys.stderr)
                return on_error(f"⚠️ internal error ({type(exc).__name__}): see the terminal running `edge-dse ui`")

        return wrapper

    return mark


def build_app(library: str | os.PathLike | None = None, *, teacher: str | os.PathLike | None = None,
              model: str | os.PathLike | None = None, threads: int | None = None, wait: float = 0.0):
    """The gradio Blocks of the UI over one library (launch it with `serve`)."""
    # Before gradio makes its queue (which reads this): see GRADIO_QUIET_QUEUE.
    os.environ.setdefault(*GRADIO_QUIET_QUEUE)
    try:
        import gradio as gr
    except ImportError as exc:
        raise EdgeDSEError(f"the UI needs the ui extra ({exc.name} is missing): pip install 'edge-dse[ui]'") from exc

    svc = Service(library, teacher=teacher, model=model, threads=threads, wait=wait)
    # The teacher loads in the background from now on: the first rerank click waits for this
    # load if it is not done (never starts a second one) instead of paying for all of it.
    svc.preload_teacher()

    def rerank_info():
        return ("re-order the hits with the teacher (slower, better)" if not svc.teacher_problem
                else f"unavailable: {svc.teacher_problem}")

    # -- search -----------------------------------------------------------------------------
    @guarded(lambda m: ("", "", "", m, gr.update(choices=[], value=None)))
    def do_search(query, k, mode, rerank, progress=gr.Progress()):
        """Search the library: (first column HTML, teacher HTML, timings and agreement, message, hits to open)."""
        k = int(k or 10)

        def teacher_progress(done, total):  # after each batch the teacher scores
            progress((done, total), desc=RERANK_PROGRESS, unit="hits")

        res = svc.search(query, k, mode, bool(rerank), on_progress=teacher_progress)
        return (*render_search(res, query=query, k=k, mode=mode), gr.update(choices=open_choices(res), value=None))

    def on_rerank_toggle(query, k, mode, rerank, progress=gr.Progress()):
        # Toggling before any query is typed is not an error worth a message.
        if not (query or "").strip():
            return (gr.skip(),) * 5
        return do_search(query, k, mode, rerank, progress)

    def open_html(path, start, end):
        before, chunk, after, s, e = svc.open_chunk(path, int(start), int(end))
        return (f"<b>{html.escape(path)}</b> (chars {s}-{e})"
                f'<div class="edse-context">{html.escape(before)}<mark>{html.escape(chunk)}</mark>{html.escape(after)}</div>')

    @guarded(lambda m: m)
    def do_open(choice):
        if not choice:
            return ""
        path, start, end = json.loads(choice)
        return open_html(path, start, end)

    @guarded(lambda m: m)
    def api_open(path, start, end):
        """Open a chunk of an indexed file in context (refused outside the library's folders)."""
        return open_html(path, start or 0, end or 0)

    # -- library ----------------------------------------------------------------------------
    def library_views():
        try:
            info = svc.status(errors_limit=FAILED_ROWS)
        except EdgeDSEError as exc:
            return f"⚠️ {exc}", "", "", gr.update(choices=[], value=None)
        if info is None:
            return (f"no library yet at `{svc.path}`: add a folder to create it", table_html("Folders", ["folder", "files"], []),
                    "", gr.update(choices=[], value=None))
        summary = (f"library `{info['library']}`: {info['folders']} folders, {info['files']} files, "
                   f"{info['chunks']} chunks, {info['errors']} failed files; model `{info['model']['model_id']}`")
        if info["skipped"]:
            from .library import skipped_text

            summary += f"  \n{skipped_text(info['skipped'], most=12)}"
        folders = table_html("Folders", ["folder", "files"], list(info["folders_detail"].items()))
        title = "Failed files"
        if info["errors"] > len(info["errors_detail"]):  # a page that stays light with 100,000 of them
            kinds = ", ".join(f"{kind} {n}" for kind, n in info["errors_by_kind"].items())
            title += (f" (the first {len(info['errors_detail'])} of {info['errors']}: {kinds}; "
                      "`edge-dse status --all` lists them all)")
        failed = table_html(title, ["file", "why it failed"], info["errors_detail"], empty="none")
        return summary, folders, failed, gr.update(choices=list(info["folders_detail"]), value=None)

    def library_error(message):
        return (message, *library_views())

    @guarded(library_error)
    def do_add(folder, progress=gr.Progress(track_tqdm=True)):
        progress(0, desc="starting")
        return (svc.add(folder), *library_views())

    @guarded(library_error)
    def do_sync(progress=gr.Progress(track_tqdm=True)):
        progress(0, desc="starting")
        return (svc.sync(), *library_views())

    @guarded(library_error)
    def do_remove(folder):
        return (svc.remove(folder), *library_views())

    @guarded(library_error)
    def refresh_library():
        return ("", *library_views())

    def picked(paths):
        """The file picker's choice -> the folder box (a file picked stands for its folder)."""
        path = (paths[0] if isinstance(paths, list) and paths else paths) or ""
        if not path:
            return gr.skip()
        return str(Path(path) if Path(path).is_dir() else Path(path).parent)

    # -- model ------------------------------------------------------------------------------
    def cards_markdown():
        return render_cards(svc)

    # -- layout -----------------------------------------------------------------------------
    # gradio 6 takes css in launch() (see serve), gradio 5 only in Blocks().
    css = {"css": CSS} if "css" in inspect.signature(gr.Blocks.__init__).parameters else {}
    with gr.Blocks(title="edge_dse", analytics_enabled=False, **css) as demo:
        gr.Markdown("# edge_dse — search your own files, offline")
        with gr.Tab("Search"):
            with gr.Row():
                query = gr.Textbox(label="Query", placeholder="what are you looking for? (Enter searches)",
                                   scale=5, elem_id="query", lines=1, max_lines=1)
                search_btn = gr.Button("Search", variant="primary", scale=1, elem_id="search-btn")
            with gr.Row():
                k = gr.Slider(1, MAX_K, value=10, step=1, label="k (hits)", elem_id="k")
                mode = gr.Radio(list(MODES), value=DEFAULT_MODE, label="Mode", elem_id="mode")
                rerank = gr.Checkbox(False, label="Teacher rerank", info=rerank_info(), elem_id="rerank")
            message = gr.Markdown(elem_id="search-message")
            # Above the hits: how long each stage took and how the teacher's order differs are
            # read first, not found below k hits.
            timings = gr.Markdown(elem_id="timings")
            with gr.Row(equal_height=False):
                search_col = gr.HTML(elem_id="search-hits")
                teacher_col = gr.HTML(elem_id="teacher-hits")
            with gr.Accordion("Open a hit in context", open=True):
                open_pick = gr.Dropdown([], label="Hit", elem_id="open-pick")
                context = gr.HTML(elem_id="context")

        with gr.Tab("Library"):
            lib_message = gr.Markdown(elem_id="library-message")
            with gr.Row():
                folder_box = gr.Textbox(label="Folder to add", placeholder="/home/me/notes", scale=4, elem_id="folder")
                add_btn = gr.Button("Add and index", variant="primary", scale=1, elem_id="add-btn")
                sync_btn = gr.Button("Sync all", scale=1, elem_id="sync-btn")
                refresh_btn = gr.Button("Refresh", scale=1, size="sm", elem_id="refresh-btn")  # after another process wrote
            with gr.Accordion("Browse for a folder", open=False):
                # Gradio's file picker browses the machine the app runs on (here: yours).
                browser = gr.FileExplorer(root_dir=str(Path.home()), file_count="single", ignore_glob="**/.*",
                                           label="Pick a folder (or a file in it)", elem_id="browse")
            with gr.Row():
                # Custom values allowed: an API call names a folder without having loaded the page's
                # choices; Service.remove refuses a folder not in the library.
                remove_pick = gr.Dropdown([], label="Folder to remove", scale=4, elem_id="remove-pick",
                                          allow_custom_value=True)
                remove_btn = gr.Button("Remove", variant="stop", scale=1, elem_id="remove-btn")
            summary = gr.Markdown(elem_id="library-summary")
            # Plain HTML tables: gradio's Dataframe kept showing the old row count after an update.
            folders_table = gr.HTML(elem_id="folders")
            failed_table = gr.HTML(elem_id="failed")

        with gr.Tab("Model"):
            cards_md = gr.Markdown(elem_id="cards")

        search_inputs = [query, k, mode, rerank]
        search_outputs = [search_col, teacher_col, timings, message, open_pick]
        search_btn.click(do_search, search_inputs, search_outputs, api_name="search")
        query.submit(do_search, search_inputs, search_outputs, api_name=False)
        rerank.change(on_rerank_toggle, search_inputs, search_outputs, api_name=False)
        open_pick.change(do_open, open_pick, context, api_name=False)
        lib_outputs = [lib_message, summary, folders_table, failed_table, remove_pick]
        add_btn.click(do_add, folder_box, lib_outputs, api_name="add")
        folder_box.submit(do_add, folder_box, lib_outputs, api_name=False)
        sync_btn.click(do_sync, None, lib_outputs, api_name="sync")
        remove_btn.click(do_remove, remove_pick, lib_outputs, api_name="remove")
        refresh_btn.click(refresh_library, None, lib_outputs, api_name=False)
        browser.change(picked, browser, folder_box, api_name=False)
        # API-only route (no component on the page): open a chunk by path and offsets.
        with gr.Row(visible=False):
            api_path, api_start, api_end, api_out = gr.Textbox(), gr.Number(), gr.Number(), gr.HTML()
            gr.Button().click(api_open, [api_path, api_start, api_end], api_out, api_name="open")
        demo.load(refresh_library, None, lib_outputs, api_name=False)
        demo.load(cards_markdown, None, cards_md, api_name=False)

    demo.edse_service = svc  # for tests and the desktop bundle
    return demo


def _stop_on_signals() -> None:
    """Ctrl+C and SIGTERM stop a blocking UI. Set explicitly: a process started in the background
    by a non-interactive shell inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt (the bundle test's Ctrl+C went unheard in CI that way)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)


def serve(library: str | os.PathLike | None = None, *, teacher: str | os.PathLike | None = None,
          host: str = "127.0.0.1", port: int | None = None, open_browser: bool = False,
          allow_remote: bool = False, block: bool = True, model: str | os.PathLike | None = None,
          threads: int | None = None, wait: float = 0.0, trusted_hosts: Sequence[str] = ()):
    """Build and launch the UI. Returns the Blocks (running in the background when block=False).

    Only requests addressed to 127.0.0.1, localhost or [::1] are answered (see webguard); with
    allow_remote, also those addressed to `host` and to the `trusted_hosts`."""
    import warnings

    from starlette.middleware import Middleware

    from .webguard import LocalOnly

    # Gradio's queue route reads a Starlette constant that Starlette renamed, on each queued request
    # (reported to gradio as issue 13548; the ui extra caps gradio below 6.18): a warning about
    # gradio's code that nobody running the app can act on. Ignored for that one name read in that
    # one gradio module; the same warning from anywhere else still shows. (It came back on every
    # request only because of the summary GRADIO_QUIET_QUEUE turns off.)
    warnings.filterwarnings("ignore", message="'HTTP_422_UNPROCESSABLE_ENTITY' is deprecated",
                            module=r"gradio\.routes")
    warning = check_host(host, allow_remote, trusted_hosts)
    if warning:
        print(f"edge-dse: {warning}", file=sys.stderr)
    names = [*trusted_hosts, *([host] if allow_remote and host not in ("0.0.0.0", "::") else [])]
    if allow_remote and not names:
        print("edge-dse: only requests to 127.0.0.1/localhost are answered: name the address others "
              "type with --trusted-host NAME", file=sys.stderr)
    demo = build_app(library, teacher=teacher, model=model, threads=threads, wait=wait)
    # One run at a time per event (one search, one sync), but a search and a sync run together.
    demo.queue(default_concurrency_limit=1)
    css = {"css": CSS} if "css" in inspect.signature(demo.launch).parameters else {}
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=open_browser,
                prevent_thread_lock=True, show_error=False, quiet=True,
                app_kwargs={"middleware": [Middleware(LocalOnly, hosts=names)]}, **css)
    svc = demo.edse_service
    print(f"edge-dse: UI at {demo.local_url} (library {svc.path}; Ctrl+C stops it)", file=sys.stderr, flush=True)
    if block:
        _stop_on_signals()
        try:
            while True:  # gradio's block_thread(), but with a bounded shutdown (below)
                time.sleep(0.2)
        except KeyboardInterrupt:
            print("edge-dse: stopping the UI", file=sys.stderr, flush=True)
        finally:
            # uvicorn's graceful close waits for open connections (a browser tab keeps one): give
            # it a few seconds, then leave anyway; its server thread is a daemon and dies with us.
            closer = threading.Thread(target=demo.close, daemon=True)
            closer.start()
            closer.join(SHUTDOWN_SECONDS)
            svc.close()
    return demo
