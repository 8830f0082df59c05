"""The chat page at `/`, in a real browser (Debian's chromium driven by Playwright) against a
real `splitmind up` on the bundled reasoner: what a person trying splitmind sees and does. The
page samples as users do (the server's default temperature, 1.0), so checks are on shapes, not
on exact answers. Each state's screenshot lands in tests/artifacts/ui/.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from models import BUNDLED_MODEL
from tests.e2e.browser import (
    CHROMIUM_ARGS,
    ask,
    axe_violations,
    chromium_path,
    last_reply,
    lengthen_replies,
    screenshot,
    wait_end,
    wait_thinking,
)
from tests.e2e.cluster import RunningCluster
from tests.e2e.gateway import Gateway, absent_decode_worker, cluster_workers
from tests.e2e.test_disconnect import busy_workers, wait_idle

SUMMARY = re.compile(r"^Thought for (\d+) tokens?, \d+\.\d s$")
ANSWER = re.compile(r"The answer is -?\d+\.")
LONG_QUESTION = "What is 987654*98765?"  # hundreds of reasoning tokens: time to press Stop


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


def open_page(browser: Browser, url: str, ready: str = "true", **context: Any) -> Page:
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(url)
    expect(page.locator("body")).to_have_attribute("data-ready", ready, timeout=30_000)
    return page


@pytest.fixture
def page(browser: Browser, reasoner_cluster: RunningCluster) -> Iterator[Page]:
    wait_idle(reasoner_cluster, 60)
    page = open_page(browser, reasoner_cluster.url + "/", color_scheme="light",
                     permissions=["clipboard-read", "clipboard-write"])
    yield page
    assert page.errors == []  # type: ignore[attr-defined]  # no uncaught exception in the page
    page.context.close()


def request_body(request: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.post_data)
    return body


def test_reasoning_streams_live_then_collapses_to_its_count(page: Page) -> None:
    sent = ask(page, "What is 4821+379?")
    body = request_body(sent)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert "temperature" not in body  # the server's default, as a user gets
    wait_thinking(page)  # the panel fills while the model thinks, before any answer
    reply = last_reply(page)
    expect(reply.locator(".reasoning-summary")).to_have_text(re.compile(r"^Thinking… [1-9]\d* tokens?$"))
    expect(reply.locator("details.reasoning")).to_have_attribute("open", "")
    screenshot(page, "1-thinking")
    wait_end(page)
    expect(reply).to_have_attribute("data-phase", "done")
    expect(reply.locator(".answer")).to_have_text(ANSWER)
    expect(reply.locator("details.reasoning")).not_to_have_attribute("open", "")  # collapsed
    summary = reply.locator(".reasoning-summary").inner_text()
    tokens = int(SUMMARY.match(summary).group(1))  # type: ignore[union-attr]
    usage = reply.locator(".usage")
    assert re.search(rf"reasoning {tokens} · answer \d+ tokens · TTFT \d+\.\d+ s · \d+\.\d tokens/s",
                     usage.inner_text()), usage.inner_text()
    assert tokens > 20
    # Which workers served it, on hover (the response headers).
    assert re.match(r"prefill: prefill-0 · decode: decode-0 · request [0-9a-f]+", usage.get_attribute("title") or "")
    screenshot(page, "2-answered")


def test_show_reasoning_switch_hides_and_shows_the_text(page: Page) -> None:
    ask(page, "What is 345+678?")
    reply = wait_end(page)
    reply.locator("summary").click()  # expand the collapsed panel
    text = reply.locator(".reasoning-text")
    expect(text).to_be_visible()
    switch = page.get_by_role("switch", name="Show reasoning")
    switch.uncheck()
    expect(text).to_be_hidden()
    expect(reply.locator(".reasoning-summary")).to_have_text(SUMMARY)  # the counter stays
    screenshot(page, "3-reasoning-hidden")
    switch.check()
    expect(text).to_be_visible()


def test_thinking_off_answers_without_a_reasoning_panel(page: Page) -> None:
    page.get_by_role("switch", name="Thinking").uncheck()
    for name in ("Effort", "Thinking budget"):  # meaningless with thinking off: disabled, and says why
        control = page.get_by_label(name)
        expect(control).to_be_disabled()
        assert control.get_attribute("title") == "Thinking is off."
    sent = ask(page, "What is 12+30?")
    assert request_body(sent)["reasoning_effort"] == "none"
    reply = wait_end(page)
    expect(reply).to_have_attribute("data-phase", "done")
    expect(reply.locator("details.reasoning")).to_be_hidden()
    assert reply.locator(".answer").inner_text().strip()
    expect(reply.locator(".usage")).to_contain_text("reasoning 0 · answer")
    screenshot(page, "4-thinking-off")


def test_effort_and_budget_reach_the_server_and_limit_the_thinking(page: Page) -> None:
    effort, budget = page.get_by_label("Effort"), page.get_by_label("Thinking budget")
    effort.select_option("minimal")
    expect(budget).to_be_disabled()  # the server takes an effort or a budget, not both
    sent = ask(page, "What is 52718+46093?")
    assert request_body(sent)["reasoning_effort"] == "minimal"
    wait_end(page)
    minimal = int(SUMMARY.match(last_reply(page).locator(".reasoning-summary").inner_text()).group(1))  # type: ignore[union-attr]
    assert minimal <= 16 + 16 + 26  # the bundled profile: minimal = 16, grace 16, forced ending 26

    effort.select_option("")
    budget.fill("40")
    expect(effort).to_be_disabled()
    sent = ask(page, "What is 52718+46093?")
    body = request_body(sent)
    assert body["thinking_budget"] == 40 and "reasoning_effort" not in body
    reply = wait_end(page)
    expect(reply).to_have_attribute("data-phase", "done")
    spent = int(SUMMARY.match(reply.locator(".reasoning-summary").inner_text()).group(1))  # type: ignore[union-attr]
    assert spent <= 40 + 16 + 26


def test_stop_mid_reply_aborts_on_the_nodes(page: Page, reasoner_cluster: RunningCluster) -> None:
    lengthen_replies(page)
    ask(page, LONG_QUESTION)
    wait_thinking(page)
    page.get_by_role("button", name="Stop").click()
    reply = wait_end(page, 10_000)
    expect(reply).to_have_attribute("data-phase", "stopped")
    expect(reply.locator(".status")).to_have_text("Stopped.")
    t0 = time.monotonic()
    while busy_workers(reasoner_cluster):
        assert time.monotonic() - t0 < 2.0, busy_workers(reasoner_cluster)
        time.sleep(0.1)
    expect(page.get_by_role("button", name="Send")).to_be_visible()  # usable again
    screenshot(page, "5-stopped")


def test_second_turn_sends_no_reasoning(page: Page) -> None:
    ask(page, "What is 250+250?")
    first = wait_end(page)
    first_answer = first.locator(".answer").text_content() or ""
    reasoning = first.locator(".reasoning-text").text_content() or ""
    assert len(reasoning) > 50
    sent = ask(page, "And what is 1000+1?")
    messages = request_body(sent)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    # The answer as streamed (Markdown source), not the rendered text, and nothing else.
    assert messages[1]["content"].strip() == first_answer.strip() and set(messages[1]) == {"role", "content"}
    assert reasoning[:50] not in (sent.post_data or "")
    wait_end(page)
    expect(page.locator("article.assistant")).to_have_count(2)
    screenshot(page, "6-two-turns")


def test_copy_and_new_chat(page: Page) -> None:
    ask(page, "What is 7+8?")
    reply = wait_end(page)
    page.get_by_role("button", name="Copy answer").click()
    expect(page.get_by_role("button", name="Copy answer")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == (reply.locator(".answer").text_content() or "").strip()
    page.get_by_role("button", name="New chat").click()
    expect(page.locator("article.turn")).to_have_count(0)
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()


def test_answers_render_markdown_without_running_the_models_html(page: Page) -> None:
    """A model's output is untrusted HTML: the page renders Markdown and drops anything active."""
    html = page.evaluate("""async () => {
        const { showMarkdown } = await import('/ui/markdown.js');
        const el = document.createElement('div');
        showMarkdown(el, '**bold** <img src=x onerror="window.pwned=1"> <script>window.pwned=2</script>'
                         + ' [x](javascript:window.pwned=3)\\n\\n```\\ncode <b>\\n```');
        document.body.append(el);
        return el.innerHTML; }""")
    assert "<strong>bold</strong>" in html and "<pre><code>code &lt;b&gt;" in html
    assert "onerror" not in html and "<script" not in html and "javascript:" not in html
    assert page.evaluate("window.pwned") is None
    headers = httpx.get(page.url).headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessible_in_both_themes_and_at_phone_width(browser: Browser, reasoner_cluster: RunningCluster,
                                                      scheme: str) -> None:
    page = open_page(browser, reasoner_cluster.url + "/", color_scheme=scheme, viewport={"width": 390, "height": 844})
    for role, name in [("textbox", "Message"), ("button", "Send"), ("switch", "Show reasoning"),
                       ("switch", "Thinking"), ("combobox", "Effort"), ("spinbutton", "Thinking budget"),
                       ("button", "New chat")]:
        expect(page.get_by_role(role, name=name)).to_be_visible()  # type: ignore[arg-type]
    # Keyboard only: Tab reaches the message box, Enter sends.
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "message":
            break
    page.keyboard.type("What is 21+21?")
    page.keyboard.press("Enter")
    wait_end(page)
    last_reply(page).locator("summary").click()
    serious = [v for v in axe_violations(page) if v["impact"] in ("serious", "critical")]
    assert serious == [], json.dumps(serious, indent=1)[:4000]
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling at phone width
    screenshot(page, f"7-phone-{scheme}")
    page.context.close()


@pytest.fixture(scope="module")
def no_decode_gateway(reasoner_cluster: RunningCluster, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[Gateway]:
    """A gateway with API keys whose every decode node is gone, rate limited to one request per 20 s."""
    prefill = [w for w in cluster_workers(reasoner_cluster) if w.role.name == "PREFILL"]
    gateway = Gateway(reasoner_cluster, tmp_path_factory.mktemp("ui") / "gateway.log",
                      {"SPLITMIND_API_KEY": "sk-ui-test"}, model=BUNDLED_MODEL,
                      workers=[*prefill, absent_decode_worker()], served_model_name="tiny-reasoner",
                      wait_healthy=False, key_requests_per_s=0.05, key_burst=1)
    yield gateway
    gateway.stop()


def test_server_errors_show_inline_and_the_page_stays_usable(browser: Browser, no_decode_gateway: Gateway) -> None:
    page = open_page(browser, no_decode_gateway.url + "/", ready="key")  # the page is open, the API is not
    expect(page.locator("#model")).to_have_text("this server needs an API key")
    key = page.get_by_label("API key")
    expect(key).to_be_focused()
    key.fill("sk-wrong")
    key.press("Enter")
    expect(page.locator("#model")).to_have_text("the server refused this API key")
    key.fill("sk-ui-test")
    key.press("Enter")
    expect(page.locator("#model")).to_have_text("tiny-reasoner")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    ask(page, "What is 1+1?")
    reply = wait_end(page, 30_000)
    expect(reply).to_have_attribute("data-phase", "error")
    expect(reply.locator(".status")).to_contain_text("The server cannot take this request now (503)")
    ask(page, "What is 1+1?")
    reply = wait_end(page, 30_000)
    expect(reply.locator(".status")).to_have_text(re.compile(r"^Too many requests \(429\): .+\. Try again in \d+ s\.$"))
    expect(page.get_by_role("textbox", name="Message")).to_be_editable()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    screenshot(page, "8-errors")
    page.context.close()


@pytest.fixture
def hidden_gateway(reasoner_cluster: RunningCluster, tmp_path: Any) -> Iterator[Gateway]:
    """A second gateway in front of the bundled reasoner's nodes, on a deployment that hides reasoning."""
    gateway = Gateway(reasoner_cluster, tmp_path / "gateway.log", {}, model=BUNDLED_MODEL,
                      served_model_name="tiny-reasoner", reasoning="hidden")
    yield gateway
    gateway.stop()
    # A request whose gateway was killed runs on to its end on the nodes (#10, the router's
    # failure handling): wait for it, so that later tests start idle.
    wait_idle(reasoner_cluster, 120)


def wait_counting(page: Page) -> None:
    """Until the last reply shows hidden thinking's counter."""
    expect(last_reply(page).locator(".reasoning-summary")).to_have_text(re.compile(r"^Thinking… [1-9]\d* tokens?$"),
                                                                        timeout=60_000)


def test_hidden_deployment_shows_only_the_counter(browser: Browser, hidden_gateway: Gateway) -> None:
    page = open_page(browser, hidden_gateway.url + "/")
    switch = page.get_by_role("switch", name="Show reasoning")
    expect(switch).to_be_disabled()
    expect(switch).not_to_be_checked()
    assert "hides reasoning" in (switch.get_attribute("title") or "")
    ask(page, LONG_QUESTION)
    wait_counting(page)  # ": thinking: N reasoning tokens" comments while the model thinks
    reply = wait_end(page)
    expect(reply).to_have_attribute("data-phase", "done")
    expect(reply.locator(".reasoning-summary")).to_have_text(SUMMARY)
    assert (reply.locator(".reasoning-text").text_content() or "") == ""
    screenshot(page, "9-hidden-reasoning")
    page.context.close()


def test_a_cut_stream_and_a_lost_server_are_told_apart(browser: Browser, hidden_gateway: Gateway) -> None:
    page = open_page(browser, hidden_gateway.url + "/")
    lengthen_replies(page)
    ask(page, LONG_QUESTION)
    wait_counting(page)
    hidden_gateway.kill()  # mid-stream: the connection drops
    reply = wait_end(page, 10_000)
    expect(reply).to_have_attribute("data-phase", "error")
    expect(reply.locator(".status")).to_contain_text("The reply was cut short")
    ask(page, "What is 1+1?")
    reply = wait_end(page, 10_000)
    expect(reply.locator(".status")).to_contain_text("Network error: the server could not be reached")
    screenshot(page, "10-connection-lost")
    page.context.close()
