"""The web UI end to end in headless Chromium (Debian's, driven by Playwright).

No browser is downloaded: Playwright launches /usr/bin/chromium. Screenshots
go to screenshots/ at the repository root (ignored by git) for a person to
look at.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from .conftest import AUTH, NUMBERS, TICKS, TOKEN, make_config, running_server

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = Path(os.environ.get("FLOWSTREAM_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--mute-audio",
]


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


async def node_count(page: Page, node: str, attr: str) -> int:
    value = await page.get_attribute(f'g.node[data-node-id="{node}"]', attr)
    return int(value or 0)


async def test_ui_runs_a_workflow_live(chromium: Path, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(exist_ok=True)
    config = make_config(tmp_path, sample_interval=0.1)
    with running_server(config) as live:
        async with httpx.AsyncClient(base_url=live.url, headers=AUTH) as http:
            for doc in (TICKS, NUMBERS):
                r = await http.put(f"/api/workflows/{doc['name']}", json=doc)
                r.raise_for_status()
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(chromium), args=FLAGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 760})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{live.url}/#token={TOKEN}")
                assert "#token" not in page.url  # taken from the address bar

                # Start the stream from its Run button; its nodes come alive.
                await page.click('li[data-workflow="ticks"] button.run-workflow')
                await page.wait_for_selector('#run-status[data-status="running"]')
                for node in ("tick", "square", "sink", "other"):
                    await page.wait_for_selector(
                        f'g.node[data-node-id="{node}"][data-state="running"]'
                    )
                await page.wait_for_function(
                    "document.querySelector('g.node[data-node-id=sink]')"
                    ".dataset.itemsIn > 0"
                )
                first = await node_count(page, "sink", "data-items-in")
                await page.wait_for_function(
                    f"document.querySelector('g.node[data-node-id=sink]')"
                    f".dataset.itemsIn > {first}"
                )
                assert await node_count(page, "sink", "data-items-in") > first
                await page.wait_for_selector('#events li[data-event="WorkflowStarted"]')
                await page.screenshot(path=str(SCREENSHOTS / "ui-stream-running.png"))

                await page.click("#stop-button")
                await page.wait_for_selector('#run-status[data-status="completed"]')
                await page.wait_for_selector(
                    '#events li[data-event="WorkflowCompleted"]'
                )
                states = await page.eval_on_selector_all(
                    "g.node", "els => els.map(e => e.dataset.state)"
                )
                assert states == ["completed"] * 4

                # A DAG run shows its outputs.
                await page.click('li[data-workflow="numbers"] button.run-workflow')
                await page.wait_for_selector('#run-status[data-status="completed"]')
                await page.wait_for_function(
                    "document.getElementById('outputs').textContent.includes('16')"
                )
                # The runs list follows: both runs, the latest first, finished.
                await page.wait_for_function(
                    "[...document.querySelectorAll('#runs li .badge')]"
                    ".map(b => b.dataset.status).join() === 'completed,completed'"
                )
                await page.screenshot(path=str(SCREENSHOTS / "ui-dag-completed.png"))
                assert not errors
            except BaseException:
                await page.screenshot(path=str(SCREENSHOTS / "ui-failure.png"))
                raise
            finally:
                await browser.close()


async def test_ui_reconnects_when_the_server_restarts(
    chromium: Path, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    config = make_config(tmp_path)
    with running_server(config) as live:
        port = int(live.url.rsplit(":", 1)[1])
        async with httpx.AsyncClient(base_url=live.url, headers=AUTH) as http:
            r = await http.put("/api/workflows/numbers", json=NUMBERS)
            r.raise_for_status()
            r = await http.post("/api/workflows/numbers/runs")
            run_id = r.json()["run_id"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(chromium), args=FLAGS)
        try:
            with running_server(config, port) as live:
                page = await browser.new_page()
                await page.goto(live.url)
                await page.wait_for_selector('#connection[data-state="connected"]')
                await page.wait_for_selector(f'li[data-run-id="{run_id}"]')
            # The server is gone: the page says so and keeps trying.
            await page.wait_for_selector('#connection[data-state="reconnecting"]')
            with running_server(config, port):
                await page.wait_for_selector('#connection[data-state="connected"]')
                await page.click(f'li[data-run-id="{run_id}"]')
                await page.wait_for_selector('#run-status[data-status="completed"]')
                # No token: the events feed serves the server's own origin.
                await page.wait_for_selector(
                    '#events li[data-event="WorkflowCompleted"]'
                )
        finally:
            await browser.close()


async def test_ui_asks_for_the_token_when_reads_need_it(
    chromium: Path, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    config = make_config(tmp_path, host="0.0.0.0")  # policy only: binds 127.0.0.1
    with running_server(config) as live:
        async with httpx.AsyncClient(base_url=live.url, headers=AUTH) as http:
            r = await http.put("/api/workflows/numbers", json=NUMBERS)
            r.raise_for_status()
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(chromium), args=FLAGS)
            try:
                page = await browser.new_page()
                await page.goto(live.url)
                await page.wait_for_selector("#token-dialog[open]")
                await page.fill("#token-input", TOKEN)
                await page.click("#token-save")
                await page.wait_for_selector('li[data-workflow="numbers"]')
                await page.click('li[data-workflow="numbers"] button.run-workflow')
                await page.wait_for_selector('#run-status[data-status="completed"]')
                await page.wait_for_selector(
                    '#events li[data-event="WorkflowCompleted"]'
                )
            finally:
                await browser.close()
