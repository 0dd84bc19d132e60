"""Outages in the web UI are shown in the API's words, never waited on: Redis down (feedback
503), the API gone (chat and the health line say it is unreachable)."""

from __future__ import annotations

import pytest

pytest.importorskip("playwright", reason="the playwright package is not installed")

from playwright.async_api import expect

from tests.browser.ui_steps import ask, open_chat
from tests.support.served import free_port, served_app

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_redis_down_and_the_api_gone_are_shown(ui, page_for, shots):
    from feedback.store import FeedbackStore
    from serving.api import ChatService, IngressConfig, build_api

    # An ingress on the module's replica whose Redis is down (nothing listens there).
    store = FeedbackStore(f"redis://127.0.0.1:{free_port()}/0", ui.keys)
    service = ChatService(generate=ui.replica.generate, config=IngressConfig(tenants=["acme"]),
                          feedback=store, catalog=ui.registry.view.catalog)
    page = await page_for()
    try:
        async with served_app(build_api(service)) as url:
            await open_chat(page, url)
            await expect(page.locator("#health")).to_have_text("API up")
            answer = await ask(page, "Is Redis there?")
            await answer.get_by_role("button", name="Thumbs up").click()
            status = answer.locator(".feedback-status")
            await expect(status).to_contain_text(
                "Feedback not recorded: HTTP 503 feedback_unavailable: Redis at redis://")
            await expect(status).to_contain_text("retry later")
            await expect(answer.get_by_role("button", name="Thumbs up")).to_be_enabled()
            await page.screenshot(path=shots / "outage-redis.png", full_page=True)
    finally:
        await store.aclose()

    # The server is gone: the next question says so instead of spinning.
    await page.get_by_label("Message").fill("Are you there?")
    await page.get_by_role("button", name="Send", exact=True).click()
    failed = page.locator("li.turn.assistant").last
    await expect(failed).to_have_attribute("data-state", "error")
    await expect(failed.get_by_role("alert")).to_contain_text("No answer: API unreachable")
    await expect(page.get_by_role("button", name="Send", exact=True)).to_be_enabled()
    await page.screenshot(path=shots / "outage-api.png", full_page=True)
