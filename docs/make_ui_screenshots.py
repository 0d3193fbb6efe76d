"""Make the README's screenshots of the web UI, and print what the page showed.

    python docs/make_ui_screenshots.py FOLDER... --query "..." [--teacher DIR] [--out docs]

Starts the real app over a fresh library in a temporary folder, adds each FOLDER through the page,
searches QUERY with the teacher rerank on, and saves docs/ui-search.png and docs/ui-library.png
(headless Debian chromium, as the browser test). Needs the ui extra and playwright.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def shrink(path: Path) -> None:
    """Palette PNG: a screenshot of text keeps its look at a third of the size."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(colors=64).save(path, optimize=True)


def settle(page) -> None:
    """Wait until gradio shows no block as pending (it greys out outputs while an event runs)."""
    page.wait_for_function("() => !document.querySelector('.pending, .generating')")
    page.wait_for_timeout(500)  # the fade back to full opacity is a CSS transition


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--query", required=True)
    ap.add_argument("--teacher", default=None)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    from edge_dse.app import serve

    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        demo = serve(Path(tmp) / "library", teacher=args.teacher, block=False)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                               "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            expect.set_options(timeout=600_000)
            page.goto(demo.local_url)
            page.get_by_role("tab", name="Library").click()
            for folder in args.folders:
                folder = str(Path(folder).resolve())
                page.locator("#folder").get_by_role("textbox").fill(folder)
                page.locator("#add-btn").click()
                expect(page.locator("#library-message")).to_contain_text(f"added {folder}")
                settle(page)
                print(page.locator("#library-message").inner_text())
            page.screenshot(path=str(out / "ui-library.png"))
            page.get_by_role("tab", name="Search").click()
            page.locator("#k").get_by_role("spinbutton").fill(str(args.k))
            box = page.locator("#query").get_by_role("textbox")
            box.fill(args.query)
            box.press("Enter")  # the first search loads the model: its timings include that
            page.locator("#search-hits .edse-hit").first.wait_for()
            page.locator("#rerank").get_by_role("checkbox").check()
            expect(page.locator("#timings")).to_contain_text("rerank")
            before = page.locator("#timings").inner_text()
            box.press("Enter")  # once more, warm, as a user's second search
            # Wait for this search's own result: the first one's timings (and a progress bar left
            # between the search and its rerank) must not be what the screenshot shows.
            expect(page.locator("#timings")).not_to_have_text(before)
            expect(page.locator("#timings")).to_contain_text("rerank")
            expect(page.locator("#timings")).not_to_contain_text("load")
            settle(page)
            page.wait_for_function("() => !document.body.innerText.includes('re-scoring the top hits')")
            print(page.locator("#timings").inner_text())
            for column in ("#search-hits", "#teacher-hits"):
                print(page.locator(column).inner_text())
            page.screenshot(path=str(out / "ui-search.png"))
            browser.close()
        demo.close()
        demo.edse_service.close()
    for name in ("ui-search.png", "ui-library.png"):
        shrink(out / name)


if __name__ == "__main__":
    main()
