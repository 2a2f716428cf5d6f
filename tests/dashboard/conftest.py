"""Fixtures for the dashboard's browser tests: an engine node and headless Chromium.

Chromium is Debian's (`make test` installs it where missing); Playwright drives it as
the system browser. Locally a missing browser skips these tests; under CI=true it fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.api.testing import add_users, cheap_password_hashing, running_node, write_config

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage"]

cheap_password_hashing()


def _chromium() -> str:
    found = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if found:
        return found
    reason = "Debian chromium is not installed (make system-deps installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


# Module scope, not session: Playwright's sync API keeps an event loop marked running on
# the main thread while it is open, which would break asyncio.run() in later test modules.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, headless=True, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Any]:
    with running_node(write_config(tmp_path)) as running:
        add_users(running.store)
        yield running


@pytest.fixture
def base_url(node: Any) -> str:
    return f"http://127.0.0.1:{node.http_port}"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(30_000)
    opened = context.new_page()
    yield opened
    context.close()
