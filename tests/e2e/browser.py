"""Debian's chromium driven by Playwright for the chat page's tests. Playwright's own browser
download is not reachable here (and not needed): it drives the system binary. Screenshots of
each state go to tests/artifacts/ui/ (CI keeps the folder as the run's artifacts)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, Request, Route, expect

from tests.e2e.cluster import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts" / "ui"
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
# Without the background-networking flags chromium keeps dialling Google's hosts, which this
# closed network refuses (PLATFORM notes for the machine); --no-sandbox because CI runs as root.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
END_PHASES = re.compile("^(done|stopped|error)$")


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Debian's chromium is not installed: scripts/test.sh installs it (apt-get install chromium)")
    return path


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def last_reply(page: Page) -> Locator:
    return page.locator("article.assistant").last


def ask(page: Page, text: str) -> Request:
    """Type into "Message" and press Enter, as a user does; the request the page sent."""
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions") and r.method == "POST") as sent:
        box = page.get_by_role("textbox", name="Message")
        box.fill(text)
        box.press("Enter")
    return sent.value


def wait_end(page: Page, timeout_ms: float = 120_000) -> Locator:
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-phase", END_PHASES, timeout=timeout_ms)
    return reply


def wait_thinking(page: Page, timeout_ms: float = 60_000) -> None:
    """Until the last reply streams reasoning text and no answer yet."""
    page.wait_for_function(
        """() => { const r = [...document.querySelectorAll('article.assistant')].pop();
                   return r && r.dataset.phase === 'thinking'
                       && r.querySelector('.reasoning-text').textContent.length > 0
                       && r.querySelector('.answer').textContent.length === 0; }""",
        timeout=timeout_ms, polling=10)


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core (vendored from the npm registry by scripts/vendor_ui.sh) on the page as it is.
    Evaluated through the DevTools protocol: the page's Content-Security-Policy refuses an
    injected script tag, as it should."""
    page.evaluate(AXE.read_text() + "\n;undefined")
    result: dict[str, Any] = page.evaluate("async () => await axe.run(document)")
    return list(result["violations"])


def lengthen_replies(page: Page, max_tokens: int = 1500) -> None:
    """Every chat request the page sends from now on also asks for `ignore_eos` and `max_tokens`,
    so that a reply outlasts a Stop or a killed gateway the test means to land mid-stream: the
    bundled model thinks its few hundred tokens in under a second once the engines stopped
    spinning (docs/design.md). The page's own fields are left as the page set them."""

    def longer(route: Route) -> None:
        request = route.request
        if request.method != "POST" or not request.post_data:
            route.continue_()
            return
        body = json.loads(request.post_data)
        route.continue_(post_data=json.dumps({**body, "ignore_eos": True, "max_tokens": max_tokens}))

    page.route("**/v1/chat/completions", longer)
