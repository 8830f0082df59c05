"""Screenshots of the chat page for the README, light and dark: one answered question with its
reasoning panel open. Run against a running `splitmind up`:

    .venv/bin/python scripts/ui_screenshots.py http://127.0.0.1:8000 docs/img
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--question", default="What is 4821+379?")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        for scheme in ("light", "dark"):
            page = browser.new_page(color_scheme=scheme, viewport={"width": 900, "height": 760})
            page.goto(args.url)
            expect(page.locator("body")).to_have_attribute("data-ready", "true")
            box = page.get_by_role("textbox", name="Message")
            box.fill(args.question)
            box.press("Enter")
            reply = page.locator("article.assistant").last
            expect(reply).to_have_attribute("data-phase", "done", timeout=120_000)
            reply.locator("summary").click()
            page.locator(".reasoning-text").evaluate("el => { el.style.maxHeight = '14rem'; }")
            path = args.out / f"chat-{scheme}.png"
            page.screenshot(path=str(path))
            print(path)
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
