"""The web UI's service (edge_dse/app_service.py) and `edge-dse ui`'s host checks, on a real
library of real files and the real model; the page itself is driven in a browser by
tests/test_app_browser.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import TOPICS, run_cli, shipped_model_dir

from edge_dse import EdgeDSEError, Library
from edge_dse.app_service import (ENCODER_ROLE, TEACHER_ROLE, Service, TeacherLoad, agreement, check_host,
                                  format_timings, is_loopback, movement, read_cards)
from edge_dse.library import MAX_QUERY_CHARS, Hit


def hit(chunk_id: int, rank: int, first_rank: int | None = None) -> Hit:
    return Hit(rank=rank, score=1.0 / rank, path=f"/d/{chunk_id}.txt", text="t", start=0, end=1, heading=None,
               chunk_id=chunk_id, first_rank=first_rank)


def test_movement_says_up_down_same_or_new():
    assert movement(hit(1, 1, 4), k=5) == "↑3"
    assert movement(hit(1, 3, 1), k=5) == "↓2"
    assert movement(hit(1, 2, 2), k=5) == "="
    assert movement(hit(1, 2, 7), k=5) == "new"
    assert movement(hit(1, 2), k=5) == ""


def test_agreement_overlap_and_kendall_tau():
    student = [hit(c, i + 1) for i, c in enumerate([1, 2, 3, 4])]
    assert agreement(student, list(student), 4) == (1.0, 1.0)
    reverse = [hit(c, i + 1) for i, c in enumerate([4, 3, 2, 1])]
    assert agreement(student, reverse, 4) == (1.0, -1.0)
    other = [hit(c, i + 1) for i, c in enumerate([1, 9, 8, 7])]
    assert agreement(student, other, 4) == (0.25, None)


def test_format_timings_in_pipeline_order_with_total():
    line = format_timings({"rerank_ms": 10.0, "encode_ms": 2.0, "ann_ms": 0.5, "fetch_ms": 0.25})
    assert line == "encode 2.0 ms · ANN 0.5 ms · fetch 0.2 ms · rerank 10.0 ms · total 12.8 ms"


def test_host_check_refuses_non_loopback_without_the_flag():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert check_host("127.0.0.1", False) == ""
    with pytest.raises(EdgeDSEError, match="--allow-remote"):
        check_host("0.0.0.0", False)
    assert "warning" in check_host("0.0.0.0", True)


def test_cli_ui_refuses_a_non_loopback_host_in_one_line(tmp_path):
    result = run_cli("ui", str(tmp_path / "lib"), "--host", "0.0.0.0", "--port", "9")
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0" in result.stderr and "--allow-remote" in result.stderr
    assert "Traceback" not in result.stderr


def test_ui_defaults_bind_loopback_and_never_share():
    from edge_dse.cli import build_parser

    args = build_parser().parse_args(["ui"])
    assert args.host == "127.0.0.1" and not args.allow_remote
    import inspect

    from edge_dse import app

    assert inspect.signature(app.serve).parameters["host"].default == "127.0.0.1"
    assert "share=False" in inspect.getsource(app.serve)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"  # set by edge_dse.config before gradio loads


def test_plain_import_and_the_cli_load_no_gradio():
    code = "import sys, edge_dse, edge_dse.cli, edge_dse.app_service; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture
def service(tmp_path, corpus, stand_in_teacher):
    svc = Service(tmp_path / "lib", teacher=stand_in_teacher, model=shipped_model_dir())
    yield svc
    svc.close()


def test_empty_library_and_empty_query_get_messages(service, corpus):
    with pytest.raises(EdgeDSEError, match="empty: add a folder"):
        service.search("anything")
    assert service.status() is None
    service.add(str(corpus))
    with pytest.raises(EdgeDSEError, match="type a query first"):
        service.search("   ")


def test_search_with_rerank_gives_both_columns_and_all_stage_timings(service, corpus):
    message = service.add(str(corpus))
    assert message.startswith(f"added {corpus}") and "7 added" in message
    res = service.search(TOPICS["bike"][2], k=3, rerank=False)
    assert res.first[0].path.endswith("bike.pdf") and res.teacher is None
    assert {"encode_ms", "ann_ms", "fetch_ms"} <= set(res.timings)
    res = service.search(TOPICS["bike"][2], k=3, rerank=True)
    assert len(res.first) == len(res.teacher) == 3
    assert res.teacher[0].path.endswith("bike.pdf")
    assert all(h.first_rank is not None for h in res.teacher) and "rerank_ms" in res.timings
    # The first column names the encoder that ranked it (the library's), or none for BM25.
    assert res.encoder == service.status()["model"]["model_id"] and res.encoder
    assert service.search(TOPICS["bike"][2], k=3, mode="keyword").encoder == ""


def test_the_ui_loads_the_teacher_at_start_up_and_the_first_rerank_uses_that_load(tmp_path, corpus, stand_in_teacher):
    from edge_dse.app import build_app

    svc = build_app(tmp_path / "lib", teacher=stand_in_teacher, model=shipped_model_dir()).edse_service
    try:
        # No rerank asked for: the app started the load by itself.
        assert svc.teacher_load.loads == 1 and svc.teacher_load.done is not None
        assert svc.teacher_load.done.wait(timeout=300), "the teacher did not load in 300 s"
        svc.add(str(corpus))
        reports = []
        res = svc.search(TOPICS["bike"][2], k=3, rerank=True, on_progress=lambda *r: reports.append(r))
        assert res.teacher[0].path.endswith("bike.pdf") and "rerank_ms" in res.timings
        assert "teacher_load_ms" not in res.timings and svc.teacher_load.loads == 1  # not loaded again
        assert reports[0][0] == 0 and reports[-1][0] == reports[-1][1] > 0
    finally:
        svc.close()


def test_a_rerank_during_the_load_waits_for_it_and_a_failed_load_is_tried_again(tmp_path, stand_in_teacher):
    load = TeacherLoad(stand_in_teacher, threads=1)
    started = load.start()
    reranker, _ = load.get()  # asked for right after the start: waits for that load
    assert started.is_set() and load.loads == 1 and reranker.id == "test/bi-teacher"
    assert load.get()[0] is reranker and load.loads == 1
    broken = tmp_path / "broken"
    shutil.copytree(stand_in_teacher, broken)
    card = (broken / "card.json").read_text()
    (broken / "card.json").write_text(card.replace('"kind": "bi-encoder"', '"kind": "poly-encoder"'))
    load = TeacherLoad(broken, threads=1)
    with pytest.raises(EdgeDSEError, match="unknown kind"):
        load.get()
    (broken / "card.json").write_text(card)  # fixed: the next rerank loads it
    assert load.get()[0].id == "test/bi-teacher" and load.loads == 2


def test_the_teacher_reranks_the_depth_its_card_records(tmp_path, corpus, stand_in_teacher):
    five = tmp_path / "five"
    shutil.copytree(stand_in_teacher, five)
    card = json.loads((five / "card.json").read_text())
    (five / "card.json").write_text(json.dumps({**card, "rerank": {"default_depth": 5}}))
    svc = Service(tmp_path / "lib", teacher=five, model=shipped_model_dir())
    try:
        svc.add(str(corpus))
        totals = set()
        res = svc.search(TOPICS["bike"][2], k=3, rerank=True, on_progress=lambda done, total: totals.add(total))
        assert totals == {5} and len(res.teacher) == 3  # five re-scored, the best three shown
        # k above the depth: the hits below it keep the student's order, not re-scored.
        res = svc.search(TOPICS["bike"][2], k=7, rerank=True)
        assert [h.first_rank is not None for h in res.teacher] == [True] * 5 + [False] * 2
    finally:
        svc.close()


def test_rerank_without_a_teacher_keeps_the_student_and_names_the_fix(tmp_path, corpus, monkeypatch):
    assets = tmp_path / "assets"
    shutil.copytree(shipped_model_dir(), assets / "baseline")
    monkeypatch.setenv("EDGE_DSE_ASSETS", str(assets))
    svc = Service(tmp_path / "lib")
    svc.add(str(corpus))
    res = svc.search(TOPICS["bread"][2], k=2, rerank=True)
    assert res.first and res.teacher is None
    assert "no teacher model" in res.teacher_note and "edge-dse distill" in res.teacher_note
    assert [c.card["name"] for c in read_cards(None, None)] == ["baseline"]
    svc.close()


def test_a_100k_character_query_is_cut_with_a_note(service, corpus):
    service.add(str(corpus))
    for mode in ("vector", "keyword", "hybrid"):
        res = service.search("sourdough bread " * 6250, k=3, mode=mode)
        assert f"first {MAX_QUERY_CHARS:,}" in res.note


def test_open_chunk_reads_only_files_of_the_library(service, corpus, tmp_path):
    service.add(str(corpus))
    top = service.search(TOPICS["bread"][2], k=1).first[0]
    before, chunk, after, start, end = service.open_chunk(top.path, top.start, top.end)
    assert "sourdough" in chunk and (start, end) == (top.start, top.end)
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (corpus / "link.txt").symlink_to(secret)  # a link out of the folder, made after indexing
    for crafted in (str(secret), str(corpus / ".." / "secret.txt"), str(corpus / "link.txt"), "/etc/passwd"):
        with pytest.raises(EdgeDSEError, match="refused to open"):
            service.open_chunk(crafted, 0, 5)


def test_open_chunk_refuses_a_file_grown_past_the_limit_and_a_nul_path_in_one_line(service, corpus):
    service.add(str(corpus))
    notes = corpus / "notes.txt"
    with open(notes, "r+b") as fh:  # sparse: 3 GB on paper, nothing on disk
        fh.truncate(3 * 1024 ** 3)
    with pytest.raises(EdgeDSEError, match=r"refused to open .*notes.txt: too large: 3072.0 MB > 50.0 MB"):
        service.open_chunk(str(notes), 0, 10)  # refused on its size: never read
    with pytest.raises(EdgeDSEError, match="refused to open"):
        service.open_chunk(str(corpus / "bread.md") + "\0x", 0, 10)


def test_writes_by_another_process_give_a_message_while_searches_go_on(service, corpus):
    service.add(str(corpus))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from edge_dse.store import WriterLock; "
         f"lock = WriterLock({str(service.path / 'write.lock')!r}); lock.acquire(); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(EdgeDSEError, match="being written by another process"):
            service.sync()
        assert service.search(TOPICS["sleep"][2], k=1).first[0].path.endswith("sleep.rst")
    finally:
        holder.kill()
        holder.wait()


def test_remove_and_failed_files_show_in_status(service, corpus):
    (corpus / "scan.pdf").write_bytes(b"%PDF-1.4 broken")
    service.add(str(corpus))
    info = service.status()
    assert info["folders_detail"] == {str(corpus): 8}
    assert [p for p, _ in info["errors_detail"]] == [str(corpus / "scan.pdf")]
    assert service.remove(str(corpus)) == f"removed {corpus}: 8 files"
    assert service.status()["files"] == 0
    with Library(service.path, model=shipped_model_dir(), readonly=True) as lib:
        assert lib.status()["chunks"] == 0


def test_model_cards_cover_the_assets_and_mark_the_roles(service, corpus, stand_in_teacher):
    service.add(str(corpus))
    cards = service.cards()
    by_id = {c.card["id"]: c for c in cards}
    assert "test/bi-teacher" in by_id and by_id["test/bi-teacher"].roles == [TEACHER_ROLE]
    encoder = [c for c in cards if ENCODER_ROLE in c.roles]
    assert len(encoder) == 1 and "384-d" in encoder[0].summary() and encoder[0].markdown
    assert encoder[0].card["id"] == service.status()["model"]["model_id"]
    assert os.path.samefile(encoder[0].folder, shipped_model_dir())


def test_snippets_mark_query_words_and_escape_html():
    from edge_dse.app import snippet_html, table_html

    out = snippet_html("The index <b>crashes</b> & the indexed file", "how is the index rebuilt after a crash?")
    assert out == "The <mark>index</mark> &lt;b&gt;<mark>crashes</mark>&lt;/b&gt; &amp; the <mark>indexed</mark> file"
    long = snippet_html("filler " * 100 + "the sourdough loaf", "sourdough", width=60)
    assert long.startswith("… ") and "<mark>sourdough</mark>" in long
    assert "<td>&lt;x&gt;</td>" in table_html("t", ["a"], [["<x>"]]) and "none yet" in table_html("t", ["a"], [])


def test_a_search_runs_while_a_sync_writes(service, corpus, tmp_path):
    import threading

    from conftest import REPO

    service.add(str(corpus))
    code = tmp_path / "code"
    shutil.copytree(REPO / "edge_dse" / "store", code, ignore=shutil.ignore_patterns("__pycache__"))
    done: list[str] = []
    writer = threading.Thread(target=lambda: done.append(service.add(str(code))))
    writer.start()
    while not service._write_lock.locked() and not done:
        time.sleep(0.01)
    res = service.search(TOPICS["python"][2], k=1)  # not blocked by, nor failing on, the write
    writer.join()
    assert res.first[0].path.endswith("python.py") and done[0].startswith(f"added {code}")


def test_snippets_show_markup_files_without_their_markup_and_leave_the_hit_as_it_was():
    from edge_dse.app import hits_html

    rst = Hit(rank=1, score=0.5, path="/d/guide.rst", start=0, end=90, heading="Crash recovery", chunk_id=1,
              text="Crash recovery\n==============\n\nThe **index** is rebuilt by :func:`~edge_dse.Library.sync`"
                   " (see `the notes <notes.html>`_).\n\n.. note:: ``sync`` is safe to re-run.")
    code = Hit(rank=2, score=0.4, path="/d/tool.py", start=0, end=40, heading=None, chunk_id=2,
               text="def rebuild(*args, **kwargs):  # the **index**")
    before = (rst.text, code.text)
    page = hits_html([rst, code], k=2, title="t", query="how is the index rebuilt")
    first, second = page.split('data-rank="2"')
    assert ("Crash recovery The <mark>index</mark> is <mark>rebuilt</mark> by sync (see the notes). "
            "Note: sync is safe to re-run.") in first
    assert not any(mark in first for mark in ("==", "**", ":func:", "`", "<notes.html>", ".. note"))
    assert "def rebuild(*args, **kwargs): # the **<mark>index</mark>**" in second  # code as written
    assert (rst.text, code.text) == before  # display only: the hits (the catalog's text) are unchanged


def test_model_cards_show_their_summary_and_fold_the_rest(service, corpus):
    from edge_dse.app import CARD_DETAILS, render_cards

    service.add(str(corpus))
    page = render_cards(service)
    cards = [c for c in service.cards() if c.markdown]
    assert cards and page.count(f"<details class=\"edse-card\"><summary>{CARD_DETAILS}</summary>") == len(service.cards())
    for card in cards:
        at = page.index(f"`{card.card['id']}`")
        folded = page.index("<details", at)
        summary = page[at:folded]
        assert card.summary() in summary  # kind, dim, pooling, size: shown
        table = (card.card.get("evaluation") or {}).get("table")
        assert (table.strip() in summary) if table else "No held-out evaluation in this card" in summary
        # The whole card.md is inside the fold, its headings under the card's own.
        body = page[folded:page.index("</details>", folded)]
        assert "#### " in body and "\n# " not in body and "\n## " not in body
