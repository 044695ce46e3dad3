"""Headless Chromium for the browser tests: the machine's own (/usr/bin/chromium, through
Playwright), one page, and every dialog it raises (a hostile value that ran would raise one)."""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from conftest import require_tool

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@asynccontextmanager
async def chromium_page(**context: Any) -> AsyncIterator[tuple[Any, list[str]]]:
    """(page, dialogs); context: Playwright's new_context options (viewport, bypass_csp, ...).
    Chromium missing: a skip, or a failure under CI=true (conftest.require_tool)."""
    chromium = require_tool("chromium")
    from playwright.async_api import async_playwright

    dialogs: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context(**context)).new_page()
            page.on("dialog", lambda d: dialogs.append(d.message))
            yield page, dialogs
        finally:
            await browser.close()
