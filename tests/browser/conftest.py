"""The web UI in a real headless browser: Debian's Chromium driven by Playwright.

One stack per module, on the module's event loop: the ingress app (``chat_stack``:
a real hf replica on builtin:tiny, the real sink and feedback store on Redis) with
the admin API over a real registry (SQLite, ``LocalRegistry``), served by uvicorn on
a loopback port. The replica follows alias moves as in production: every committed
change kicks its reconciler. The browser is never downloaded: Playwright launches
the system's ``chromium`` (``make install-dev`` installs it as root); without one the
tests skip, saying so.

Screenshots go to ``test-artifacts/browser/`` (ignored by git; ``LORALOOP_TEST_ARTIFACTS``
moves it); the run's summary says where.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.redis_support import delete_prefix, new_prefix

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "ui-admin-token"
#: How long the browser side waits for a condition (a hang guard under load, not a measure).
PATIENCE_MS = 60_000
_STARTED = time.time()
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "/usr/lib/chromium/chromium")


def chromium_path() -> str | None:
    """The system's Chromium (``LORALOOP_TEST_CHROMIUM`` names another), or None."""
    wanted = os.environ.get("LORALOOP_TEST_CHROMIUM")
    for candidate in ((wanted,) if wanted else CHROMIUM_CANDIDATES):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def artifacts_dir() -> Path:
    return Path(os.environ.get("LORALOOP_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"


def pytest_terminal_summary(terminalreporter) -> None:
    found = artifacts_dir().glob("*.png") if artifacts_dir().is_dir() else ()
    shots = [p for p in found if p.stat().st_mtime >= _STARTED]  # this run's
    if shots:
        terminalreporter.write_line(
            f"browser screenshots: {len(shots)} in {artifacts_dir()}")


@dataclass
class UiStack:
    """What the module's stack holds for tests to drive and check."""

    url: str
    service: object
    replica: object
    registry: object
    keys: object
    versions: dict[str, str] = field(default_factory=dict)

    def routes(self, tenant: str):
        return self.replica.adapters.routes.get(tenant)


@pytest.fixture(scope="session")
def chromium() -> str:
    pytest.importorskip("playwright", reason="the playwright package is not installed: "
                        "`make install-dev` (it is a dev dependency)")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium on this machine: `apt-get install chromium` (make install-dev "
                    "does it when run as root); Playwright's own browser is never downloaded")
    return path


@pytest.fixture(scope="session")
def shots() -> Path:
    """Where screenshots are saved: ``shots / "name.png"`` (a previous run's are removed)."""
    path = artifacts_dir()
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.png"):
        old.unlink()
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium):
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, headless=True)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page_for(browser):
    """``await page_for(width, height)``: a page in a fresh context (no storage shared)."""
    from playwright.async_api import expect

    expect.set_options(timeout=PATIENCE_MS)
    contexts = []

    async def make(width: int = 1280, height: int = 800):
        context = await browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(PATIENCE_MS)
        return page

    yield make
    for context in contexts:
        await context.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ui(tiny_model_dir, make_adapter, redis_url, tmp_path_factory):
    """The stack, with versions: ``acme`` (one live), ``promo`` (p1 live, p2 gated) and
    ``rb`` (r1 retired, r2 live, r3 gated)."""
    from feedback.keys import RedisKeys
    from serving.adapters import AdapterManager, run_reconciler
    from serving.admin_routes import include_admin
    from tests.support.registry import LocalRegistry
    from tests.support.served import chat_stack, served_app

    prefix = new_prefix("ui")
    keys = RedisKeys(prefix)
    holder: dict = {}
    loop = asyncio.get_running_loop()

    def kick(_change=None) -> None:  # the alias-change notification, from any thread
        manager = holder.get("manager")
        if manager is not None:
            loop.call_soon_threadsafe(manager.kick.set)

    registry = LocalRegistry.create(tmp_path_factory.mktemp("ui-registry"), notifier=kick)
    ids = {}
    for seed, (tenant, name) in enumerate((("acme", "a1"), ("promo", "p1"), ("promo", "p2"),
                                           ("rb", "r1"), ("rb", "r2"), ("rb", "r3"))):
        ids[name] = registry.register(make_adapter(f"ui-{name}", seed=90 + seed), tenant=tenant)
    for name in ("a1", "p1", "r1", "r2"):
        registry.promote(ids[name])

    options = {"adapters": lambda engine: AdapterManager(engine, registry.view)}
    try:
        async with chat_stack(tiny_model_dir, redis_url, keys, tenants=("acme",),
                              replica_options=options, catalog=registry.view.catalog) as stack:
            holder["manager"] = stack.replica.adapters
            reconciler = asyncio.create_task(run_reconciler(stack.replica.adapters,
                                                            interval_s=30))
            include_admin(stack.app, service=stack.service, session_factory=registry.sessions,
                          admin_token=ADMIN_TOKEN, notifier=kick)
            try:
                async with served_app(stack.app) as url:
                    yield UiStack(url, stack.service, stack.replica, registry, keys, ids)
            finally:
                reconciler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reconciler
    finally:
        delete_prefix(redis_url, prefix)
