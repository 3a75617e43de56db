"""The WebUI page in headless Chromium (Debian's `chromium`, driven by Playwright) against the real local
Triton: type, submit, read the bars. Skipped, saying why, where Playwright or chromium is missing
(`.ci/run` installs chromium; Playwright's own browser downloads are never used)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS
from zsc_server.triton_process import free_ports

pytest.importorskip("aiohttp", reason="the WebUI needs aiohttp: pip install 'zsc-client[webui]'")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed: pip install playwright==1.64.1")

CHROMIUM = os.environ.get("ZSC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    # CI installs chromium (.ci/run) and sets ZSC_REQUIRE_BROWSER: there a missing browser is a failure
    if os.environ.get("ZSC_REQUIRE_BROWSER"):
        raise RuntimeError(f"ZSC_REQUIRE_BROWSER is set but there is no chromium at {CHROMIUM}")
    pytest.skip(f"no chromium at {CHROMIUM}: apt-get install chromium (or set ZSC_CHROMIUM)",
                allow_module_level=True)

# no sandbox: CI runs as root in a container; the rest keeps Chromium from calling home during a test
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TEXT = "我的快递三天了还没到，请帮我查一下物流。"
LABELS = "咨询, 投诉，建议, 物流, 表扬"


@contextlib.contextmanager
def running_webui(triton_url: str, protocol: str = "grpc"):
    """`zsc webui`'s app on a free loopback port, served from a thread; yields its base URL."""
    from aiohttp import web

    from zsc_client.webui.app import create_app

    [port] = free_ports(1)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(create_app(triton_url, protocol))

    async def start():
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextlib.contextmanager
def page_on(browser, base_url: str):
    """A fresh page (own storage, so no history from another test) and the list of URLs it requested
    from anywhere but base_url."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
    page = context.new_page()
    outside: list[str] = []
    page.on("request", lambda request: None if request.url.startswith((base_url, "data:"))
            else outside.append(request.url))
    page.goto(f"{base_url}/")
    try:
        yield page, outside
    finally:
        context.close()


def test_classify_in_the_browser(structbert, browser):
    expect = sync_api.expect
    with running_webui(structbert.server.grpc_url) as base_url, page_on(browser, base_url) as (page, outside):
        expect(page.locator("#status")).to_contain_text("Triton ready")
        page.fill("#text", TEXT)
        page.fill("#labels", LABELS)
        page.click("#submit")

        rows = page.locator("#bars .bar-row")
        expect(rows).to_have_count(5)
        shown = [row.get_attribute("data-label") for row in rows.all()]
        scores = [float(row.get_attribute("data-score")) for row in rows.all()]
        assert scores == sorted(scores, reverse=True)
        # the page shows what the API answers for the same input, in the same order
        api = page.request.post(f"{base_url}/api/classify", data={"text": TEXT, "labels": LABELS}).json()
        assert shown == api["labels"]
        assert scores == pytest.approx(api["scores"], abs=1e-6)
        assert sorted(shown) == sorted(["咨询", "投诉", "建议", "物流", "表扬"])
        widths = rows.locator(".bar-fill").evaluate_all("bars => bars.map(bar => bar.getBoundingClientRect().width)")
        assert widths == sorted(widths, reverse=True) and widths[0] > 0

        expect(page.locator("#latency-e2e")).to_have_text(re.compile(r"^\d+(\.\d)? ms$"))
        expect(page.locator("#latency-server")).to_have_text(re.compile(r"^\d+(\.\d)? ms$"))
        expect(page.locator("#history .history-entry")).to_have_count(1)
        expect(page.locator("#history .history-entry")).to_contain_text(shown[0])
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "webui.png", full_page=True)

        # bad input: the message names the field and marks its input; nothing is added to the history
        page.fill("#labels", " ，, ")
        page.click("#submit")
        expect(page.locator("#error")).to_contain_text("Candidate labels: no candidate labels")
        expect(page.locator("#labels")).to_have_attribute("aria-invalid", "true")
        page.fill("#labels", "咨询,投诉")
        page.fill("#template", "这是一条文本")
        page.click("#submit")
        expect(page.locator("#error")).to_contain_text("Hypothesis template: must contain {}")
        expect(page.locator("#labels")).not_to_have_attribute("aria-invalid", "true")
        expect(page.locator("#history .history-entry")).to_have_count(1)

        # a history entry brings its input and answer back
        page.fill("#template", "")
        page.fill("#text", "你好")
        page.click("#submit")
        expect(page.locator("#history .history-entry")).to_have_count(2)
        page.locator("#history .history-entry").nth(1).click()
        expect(page.locator("#text")).to_have_value(TEXT)
        expect(rows).to_have_count(5)
        assert [row.get_attribute("data-label") for row in rows.all()] == shown
        assert outside == []  # nothing fetched from anywhere but the WebUI: it works offline


def test_triton_down_in_the_browser(browser):
    expect = sync_api.expect
    [port] = free_ports(1)
    with running_webui(f"127.0.0.1:{port}") as base_url, page_on(browser, base_url) as (page, _):
        expect(page.locator("#status")).to_contain_text(f"Triton is not ready at 127.0.0.1:{port}")
        page.fill("#text", TEXT)
        page.fill("#labels", LABELS)
        page.click("#submit")
        expect(page.locator("#error")).to_contain_text(f"Triton is unreachable. Triton is not reachable at "
                                                       f"127.0.0.1:{port} (grpc)")
        expect(page.locator("#bars .bar-row")).to_have_count(0)
        expect(page.locator("#submit")).to_be_enabled()


def test_a_malformed_history_entry_is_dropped_and_the_page_works(structbert, browser):
    """History comes from the browser's storage, which an older page (or anyone with the browser) may have
    written: an entry without the fields the page draws is left out instead of stopping the page's script."""
    expect = sync_api.expect
    good = {"request": {"text": "你好", "labels": "咨询", "multi_label": False},
            "response": {"labels": ["咨询"], "scores": [0.9]}, "endToEndMs": 12.0, "at": "2026-12-07T10:00:00Z"}
    with running_webui(structbert.server.grpc_url) as base_url, page_on(browser, base_url) as (page, _):
        page.evaluate("entries => localStorage.setItem('zsc-webui-history', JSON.stringify(entries))",
                      [{"request": {"text": "x"}, "response": {"labels": "not a list"}}, good, None])
        page.reload()
        expect(page.locator("#status")).to_contain_text("Triton ready")
        expect(page.locator("#history .history-entry")).to_have_count(1)
        expect(page.locator("#history .history-entry")).to_contain_text("咨询 0.900")
