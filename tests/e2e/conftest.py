"""Fixtures the browser tests share: a headless Chromium per test module.

Module scope, not session: Playwright's sync API keeps an event loop running in the main thread while it
is open, and every later ``asyncio.run`` in the session (the trigger tests) would fail.

Debian's chromium (installed here if missing) driven by Playwright with executable_path: nothing is
downloaded.
"""

from __future__ import annotations

import shutil

import pytest

from devstack.util import apt_install

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if shutil.which("chromium") is None:
        apt_install(["chromium"], what="UI tests (headless chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def pytest_collection_modifyitems(config, items):
    """test_edge_deploy.py runs after the other e2e modules: it deploys the versions they trained, and moves
    the production mark only once their gates have run (it takes the mark off again when it ends)."""
    deploy = [item for item in items if item.path.name == "test_edge_deploy.py"]
    if not deploy:
        return
    rest = [item for item in items if item.path.name != "test_edge_deploy.py"]
    e2e = [n for n, item in enumerate(rest) if item.path.parent.name == "e2e"]
    at = e2e[-1] + 1 if e2e else len(rest)
    items[:] = rest[:at] + deploy + rest[at:]
