"""Browser tests: headless Chromium (Debian's ``chromium``, never a downloaded browser) driven by Playwright for
Python against the live server, with an injected EIP-1193 wallet backed by anvil's dev accounts.

They carry the marker ``browser`` and run in a pytest process of their own (Playwright's sync API holds an event
loop, so Django's ORM needs DJANGO_ALLOW_ASYNC_UNSAFE there): ``scripts/test.sh`` runs
``pytest -m browser loans/tests/browser`` after the main suite, which deselects them (pyproject.toml).

Fixtures: ``browser`` (one Chromium per session), ``open_page(width=..., height=...)`` (a new page on the live
server with the console log and the request recorder attached; the wallet, when asked for, is injected before any
page script runs), ``page`` (desktop width), ``console`` (``ConsoleLog``), ``recorder`` (``RequestRecorder``),
``wallet`` (``InjectedWallet`` of the borrower's anvil account), ``shot(page, step)`` (a numbered screenshot under
BROWSER_ARTIFACTS_DIR/<test>/, default var/browser-artifacts/), ``axe_check(page)`` (fails on serious or critical
violations), ``no_overflow(page)`` (fails when the page is wider than its viewport).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

from .harness import (
    AXE_SHA256,
    AXE_SOURCE,
    ConsoleLog,
    InjectedWallet,
    RequestRecorder,
    Screenshots,
    axe_violations,
    horizontal_overflow,
)

CHROMIUM = os.environ.get("BROWSER_EXECUTABLE", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in CI's container; the pages are our own
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}


def artifacts_root() -> Path:
    return Path(os.environ.get("BROWSER_ARTIFACTS_DIR", settings.BASE_DIR / "var" / "browser-artifacts"))


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (scripts/test.sh and .ci/run do)")
    assert hashlib.sha256(AXE_SOURCE.read_bytes()).hexdigest() == AXE_SHA256, "the vendored axe-core was changed"
    # Playwright's sync API runs an event loop in this thread: the ORM would refuse to run. This process runs only
    # browser tests (see the module's docstring); the variable is set for the session and restored after.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(autouse=True)
def _own_throttle_counters(settings):
    """Each test its own rate-limit counters (the sign-in limit is 10 a minute, and Redis outlives a run)."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": f"test-browser-{uuid.uuid4().hex}",
        }
    }


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def recorder() -> RequestRecorder:
    return RequestRecorder()


@pytest.fixture
def wallet(w3, borrower_account) -> InjectedWallet:
    """The borrower's wallet: anvil dev account 1, on anvil (chain 31337, as the desk's EVM_CHAIN_ID in tests)."""
    return InjectedWallet(account=borrower_account, w3=w3)


@pytest.fixture
def open_page(browser, live_server, transactional_db, console, recorder, request) -> Iterator[Callable]:
    """``open_page(width=1280, height=900, wallet=None)``: a new page (own cookies) on the live server."""
    contexts = []

    def _open(*, width: int = DESKTOP["width"], height: int = DESKTOP["height"], wallet: InjectedWallet | None = None):
        context = browser.new_context(
            viewport={"width": width, "height": height}, base_url=live_server.url, locale="en-US"
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        console.attach(page)
        recorder.attach(page)
        if wallet is not None:
            wallet.install(page)
        return page

    yield _open
    for context in contexts:
        context.close()


@pytest.fixture
def page(open_page):
    return open_page()


@pytest.fixture
def shot(request) -> Screenshots:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    directory = artifacts_root() / name
    shutil.rmtree(directory, ignore_errors=True)
    return Screenshots(directory)


@pytest.fixture
def axe_check() -> Callable:
    def _check(page) -> None:
        violations = axe_violations(page)
        assert not violations, "axe-core: serious or critical violations:\n" + "\n".join(
            f"  {v['impact']} {v['id']}: {v['help']} at {v['nodes']}" for v in violations
        )

    return _check


@pytest.fixture
def no_overflow() -> Callable:
    def _check(page) -> None:
        measured = horizontal_overflow(page)
        assert measured["overflow"] <= 0, f"the page is {measured['overflow']} px wider than the viewport: {measured}"

    return _check


# The browser scenarios' world (issue 12): both chains, the worker in its own process, the lender's keys.
from .scenario import stage  # noqa: E402, F401
