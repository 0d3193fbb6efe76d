"""The real `edge-dse ui` in a real browser (headless Chromium driven by Playwright), and its API
route through gradio_client.

Needs the ui extra, playwright and Debian's chromium (playwright cannot download its
own browser here). Elsewhere the test skips with the reason; in CI (CI=true) a missing piece is
a failure, so the browser test never silently stops running there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import OUTPUT, REPO, TOPICS, TYPE_OF_TOPIC, running_ui, shipped_model_dir, write_topic
from rerank_hooks import GATE, HOLD_QUERY

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
QUERY = "how is the index rebuilt after a crash?"


def _missing() -> str:
    for module in ("gradio", "gradio_client", "playwright"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[test,ui]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no chromium at {CHROMIUM} (apt-get install -y --no-install-recommends chromium)"
    return ""


@pytest.fixture(scope="module", autouse=True)
def _needs_a_browser():
    why = _missing()
    if why and os.environ.get("CI") == "true":
        pytest.fail(f"the browser test must run in CI: {why}")
    if why:
        pytest.skip(why)


def expect(locator):
    from playwright.sync_api import expect as pw_expect  # imported late: the module loads without it

    return pw_expect(locator)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """notes/: one real file of each type, indexed before the app starts; code/: a copy of some of
    this package's own sources plus a damaged PDF, added through the page."""
    from edge_dse import Library

    root = tmp_path_factory.mktemp("ui")
    notes, code = root / "notes", root / "code"
    notes.mkdir()
    for key, suffix in TYPE_OF_TOPIC.items():
        write_topic(notes, key, suffix)
    for part in ("store", "ingest"):  # a fixed set: other folders of the package come and go
        shutil.copytree(REPO / "edge_dse" / part, code / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "edge_dse" / "library.py", code)
    (code / "scan.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n")
    with Library(root / "lib", model=shipped_model_dir(), progress=False) as lib:
        lib.add(notes)
    return root / "lib", notes, code


@pytest.fixture(scope="module")
def gate(folders) -> Path:
    """The FIFO that holds the teacher's scoring of QUERY in the app (rerank_hooks) until release()."""
    path = folders[0].parent / "rerank-gate"
    os.mkfifo(path)
    return path


def release(gate: Path) -> None:
    """Let the held scoring go on. Opening the FIFO to write waits for the app to open it to read,
    which it does right after reporting progress; in a thread, so a hook that never holds fails
    the test instead of hanging it."""
    import threading

    writer = threading.Thread(target=gate.write_bytes, args=(b"x",), daemon=True)
    writer.start()
    writer.join(timeout=120)
    assert not writer.is_alive(), "the app never waited at the rerank gate (rerank_hooks not loaded?)"


@pytest.fixture(scope="module")
def server(folders, stand_in_teacher, gate):
    lib, _, _ = folders
    tests = str(Path(__file__).resolve().parent)
    hooks = {"PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])),
             HOLD_QUERY: QUERY, GATE: str(gate)}
    with running_ui(lib, "--teacher", str(stand_in_teacher), "--model", str(shipped_model_dir()),
                    log_path=lib.parent / "ui.log", env=hooks, entry="rerank_hooks") as (url, port, _):
        yield url, port


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import expect as pw_expect
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)  # a sync embeds real files on a shared CPU
        pw_expect.set_options(timeout=120_000)
        page.goto(server[0])
        yield page
        browser.close()


def test_the_server_listens_on_loopback_only(server):
    _, port = server
    addresses = _listening_addresses(port)
    if not addresses:
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    assert addresses == {"0100007F"}  # 127.0.0.1, and nothing on all interfaces


def test_add_a_folder_through_the_page_and_see_the_tables(page, folders):
    _, notes, code = folders
    OUTPUT.mkdir(exist_ok=True)
    page.get_by_role("tab", name="Library").click()
    expect(page.locator("#folders")).to_contain_text(str(notes))
    # Count progress indicators as they appear: the sync is too short to catch one by polling.
    page.evaluate("""() => { window.edseProgress = 0; new MutationObserver(() => {
        if (document.querySelector('#library-message .progress-text, #library-message .eta-bar, .progress-level'))
            window.edseProgress++; }).observe(document.body, {subtree: true, childList: true}); }""")
    # Pick the folder with the file picker: open code/, tick a file in it; the folder box gets code/.
    page.get_by_text("Browse for a folder").click()
    browse = page.locator("#browse")
    browse.locator("li", has=page.get_by_text("code", exact=True)).get_by_role(
        "button", name="expand directory").first.click(force=True)  # the arrow shows on hover only
    browse.locator("li", has=page.get_by_text("library.py", exact=True)).locator("input[type=checkbox]").last.check()
    expect(page.locator("#folder").get_by_role("textbox")).to_have_value(str(code))
    page.locator("#add-btn").click()
    expect(page.locator("#library-message")).to_contain_text(f"added {code}")
    assert page.evaluate("window.edseProgress") > 0, "no progress was shown during the sync"
    message = page.locator("#library-message").inner_text()
    assert "1 failed" in message and "Traceback" not in page.content()
    expect(page.locator("#folders")).to_contain_text(str(code))
    failed = page.locator("#failed").inner_text()
    assert "scan.pdf" in failed and "PDF" in failed
    assert re.search(r"2 folders, \d+ files", page.locator("#library-summary").inner_text())
    page.screenshot(path=str(OUTPUT / "ui-library.png"), full_page=True)


def test_search_shows_both_columns_timings_and_the_rerank(page, folders, gate):
    from edge_dse.app import RERANK_PROGRESS

    page.get_by_role("tab", name="Search").click()
    box = page.locator("#query").get_by_role("textbox")
    box.fill(QUERY)
    box.press("Enter")
    page.locator("#search-hits .edse-hit").first.wait_for()
    assert "ann.py" in page.locator("#search-hits").inner_text()
    expect(page.locator("#teacher-hits")).to_contain_text("turn on")
    timing = page.locator("#timings").inner_text()
    assert all(stage in timing for stage in ("encode", "ANN", "fetch", "total")), timing
    # The timings line is read before the hits, not found below k of them.
    line, hits = page.locator("#timings").bounding_box(), page.locator("#search-hits").bounding_box()
    assert line["y"] + line["height"] <= hits["y"], (line, hits)
    page.locator("#rerank").get_by_role("checkbox").check()
    # The teacher's scoring of QUERY is held after its first report (rerank_hooks): the progress
    # shows, and no teacher hit yet; released, the reranked hits come.
    progress = page.get_by_text(RERANK_PROGRESS).first
    expect(progress).to_be_visible()
    assert page.locator("#teacher-hits .edse-hit").count() == 0
    page.screenshot(path=str(OUTPUT / "ui-rerank-progress.png"), full_page=True)
    release(gate)
    page.locator("#teacher-hits .edse-hit").first.wait_for()
    expect(page.get_by_text(RERANK_PROGRESS)).to_have_count(0)
    expect(page.locator("#timings")).to_contain_text("rerank")
    timing = page.locator("#timings").inner_text()
    assert "overlap@10" in timing and "Kendall tau" in timing, timing
    moves = page.locator("#teacher-hits .edse-move").all_inner_texts()
    assert len(moves) == page.locator("#teacher-hits .edse-hit").count() == 10
    assert all(re.fullmatch(r"[↑↓]\d+|=|new", m) for m in moves), moves
    # Open the first hit in context.
    page.locator("#open-pick").get_by_role("listbox").click()
    page.get_by_role("option").first.click()
    page.locator("#context mark").wait_for()
    assert page.locator("#context mark").inner_text().strip()
    page.screenshot(path=str(OUTPUT / "ui-search.png"), full_page=True)


def test_bad_input_gets_a_message_not_a_trace(page):
    page.get_by_role("tab", name="Search").click()
    box = page.locator("#query").get_by_role("textbox")
    box.fill("")
    box.press("Enter")
    expect(page.locator("#search-message")).to_contain_text("type a query first")
    box.fill("sourdough " * 10_000)  # 100k characters
    box.press("Enter")
    expect(page.locator("#search-message")).to_contain_text("only its first")
    assert "Traceback" not in page.content()


def test_model_tab_shows_the_cards(page):
    from edge_dse import config
    from edge_dse.app import CARD_DETAILS

    page.get_by_role("tab", name="Model").click()
    cards = page.locator("#cards")
    expect(cards).to_contain_text("test/bi-teacher")
    text = cards.inner_text()
    assert "search encoder of this library" in text and "teacher (reranker)" in text and "384-d" in text
    # Each card shows its summary; the rest of it is folded until asked for.
    folds = cards.locator("details")
    assert folds.count() >= 2 and folds.count() == cards.locator("h3").count()
    assert page.evaluate("[...document.querySelectorAll('#cards details')].every(d => !d.open)")
    expect(cards.locator("h3").first).to_be_visible()
    expect(cards.get_by_text("test/bi-teacher").first).to_be_visible()
    expect(folds.first.locator("summary")).to_have_text(CARD_DETAILS)
    inside = folds.first.locator("h4").first  # card.md's own title, under the card's heading
    expect(inside).to_be_hidden()
    if any('"evaluation"' in p.read_text() for p in config.assets_dir().glob("*/card.json")):
        expect(cards.locator("table:not(details table)").first).to_be_visible()  # the held-out table
    folds.first.locator("summary").click()
    expect(inside).to_be_visible()
    assert page.evaluate("[...document.querySelectorAll('#cards details')].filter(d => d.open).length") == 1


def test_the_api_route_with_gradio_client(server, folders):
    from gradio_client import Client

    _, notes, _ = folders
    client = Client(server[0], verbose=False)
    student, teacher, timing, message, choices = client.predict(TOPICS["bike"][2], 3, "vector", True,
                                                                api_name="/search")
    assert "bike.pdf" in student.split("edse-hit")[1] and "bike.pdf" in teacher.split("edse-hit")[1]
    assert "rerank" in timing and "overlap@3" in timing and message == ""
    path, start, end = json.loads(choices["choices"][0][1])
    assert "<mark>" in client.predict(path, start, end, api_name="/open")
    secret = notes.parent / "secret.txt"
    secret.write_text("private")
    refused = client.predict(str(notes / ".." / "secret.txt"), 0, 7, api_name="/open")
    assert "refused to open" in refused and "private" not in refused
    removed = client.predict(str(notes), api_name="/remove")
    assert removed[0] == f"removed {notes}: 6 files" and str(notes) not in removed[2]
