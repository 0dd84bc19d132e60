"""The ops view in the web UI: promote and rollback clicks against the real registry, the
learner's status, live charts, and a layout that fits a phone."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

pytest.importorskip("playwright", reason="the playwright package is not installed")

from playwright.async_api import expect

from tests.browser.ui_steps import ask, confirm, open_chat, open_ops
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio(loop_scope="module")
OVERFLOW = """() => {
  const root = document.documentElement, main = document.querySelector('main');
  return {page: root.scrollWidth - root.clientWidth, main: main.scrollWidth - main.clientWidth};
}"""


def live_of(ui, tenant: str) -> str | None:
    return next((a.version_id for a in ui.registry.ops.aliases(tenant) if a.name == "live"),
                None)


async def test_a_promote_click_changes_the_version_that_answers(ui, page_for, shots):
    p1, p2 = ui.versions["p1"], ui.versions["p2"]
    await until(lambda: getattr(ui.routes("promo"), "live", None) == p1,
                what="the replica routes promo to p1")
    chat = await open_chat(await page_for(), ui.url, model="promo")
    before = await ask(chat, "Hello")
    assert await before.get_attribute("data-version") == p1

    ops = await open_ops(await page_for(), ui.url, tenant="promo")
    await expect(ops.locator("#alias-live")).to_have_attribute("data-version", p1)
    row = ops.locator(f"#versions tr[data-version='{p2}']")
    await expect(row).to_have_attribute("data-status", "gated")
    await row.get_by_role("button", name=f"Promote {p2[:12]}").click()
    await expect(ops.locator("dialog#confirm")).to_contain_text(f"Live now: {p1[:12]}")
    await confirm(ops, reason="better answers")
    await expect(ops.locator("#ops-message")).to_have_text("Promote: done.")
    await expect(ops.locator("#alias-live")).to_have_attribute("data-version", p2)
    newest = ops.locator("#audit tbody tr").first
    await expect(newest).to_contain_text("promote")
    await expect(newest).to_contain_text("better answers")
    await ops.screenshot(path=shots / "ops-promoted.png", full_page=True)
    assert live_of(ui, "promo") == p2

    await until(lambda: ui.routes("promo").live == p2, what="the replica routes promo to p2")
    after = await ask(chat, "Hello again")
    assert await after.get_attribute("data-version") == p2
    await expect(after.locator(".meta")).to_contain_text(f"version {p2[:12]}")


async def test_a_rollback_from_a_stale_view_shows_the_conflict(ui, page_for, shots):
    r2, r3 = ui.versions["r2"], ui.versions["r3"]
    ops = await open_ops(await page_for(), ui.url, tenant="rb")
    await expect(ops.locator("#alias-live")).to_have_attribute("data-version", r2)

    await asyncio.to_thread(ui.registry.promote, r3)  # another operator, behind the UI's back
    await ops.get_by_role("button", name="Roll back live").click()
    await expect(ops.locator("dialog#confirm")).to_contain_text(f"from {r2[:12]}")
    await confirm(ops)
    message = ops.locator("#ops-message")
    await expect(message).to_contain_text("Rollback refused: HTTP 409 conflict: ")
    await expect(message).to_contain_text(
        f"the live version of tenant 'rb' is {r3}, not the expected {r2}: another change won")
    await expect(ops.locator("#alias-live")).to_have_attribute("data-version", r3)  # re-read
    await ops.screenshot(path=shots / "ops-conflict.png", full_page=True)
    assert live_of(ui, "rb") == r3  # the refused rollback changed nothing


async def test_the_learner_status_shows_missing_running_and_stale(ui, page_for, redis_client,
                                                                  shots):
    ops = await open_ops(await page_for(), ui.url, tenant="acme")
    badge = ops.locator("#learner-state")
    await expect(badge).to_have_attribute("data-state", "missing")
    await expect(badge).to_have_text("No learner has reported")

    status = {"rounds": 3, "backlog": 5, "last_version": ui.versions["a1"],
              "last_round": {"tenant": "acme", "outcome": "gated", "timings": {
                  "read_s": 0.5, "curate_s": 0.1, "train_s": 12.0, "evaluate_s": 3.0,
                  "publish_s": 0.4}}}

    def publish(updated_at: float) -> None:  # as the learner publishes it after each step
        redis_client.set(ui.keys.learner_status, json.dumps({**status, "updated_at": updated_at}),
                         ex=3600)

    publish(time.time())
    await ops.get_by_role("button", name="Refresh").click()
    await expect(badge).to_have_attribute("data-state", "running")
    facts = ops.locator("#learner")
    await expect(facts).to_contain_text("5 feedback event(s) waiting")
    await expect(facts).to_contain_text("acme: gated (16.0 s)")
    await ops.screenshot(path=shots / "ops-learner-running.png", full_page=True)

    publish(time.time() - 3600)  # the learner stopped an hour ago
    await ops.get_by_role("button", name="Refresh").click()
    await expect(badge).to_have_attribute("data-state", "stale")
    await expect(badge).to_contain_text("stopped or stuck (updated 60 min ago)")


async def test_the_next_trigger_and_feedback_to_live_follow_the_learner_without_a_reload(
        ui, page_for, redis_client, shots):
    a1 = ui.versions["a1"]
    trigger = {"reason": "settle", "backlog": 5, "needed": 16, "settle_needed": 4,
               "settle_s": 10, "max_interval_s": 300, "deferred": 0, "in_s": 600, "at": 0}
    made = {"tenant": "acme", "version": a1, "outcome": "canary at 0.1", "seconds": 16.0,
            "newest_feedback_at": time.time() - 100, "feedback_to_live_s": None,
            "settled": False}

    def publish(**status) -> None:  # as the learner publishes it after each step
        redis_client.set(ui.keys.learner_status, json.dumps(
            {"rounds": 1, "backlog": 5, "updated_at": time.time(), **status}), ex=3600)

    publish(next_trigger=trigger, recent_rounds=[made])
    ops = await open_ops(await page_for(), ui.url, tenant="acme")
    await ops.evaluate("window.sameDocument = true")
    shown = ops.locator("#next-trigger")
    await expect(shown).to_have_attribute("data-reason", "settle")
    await expect(shown).to_contain_text("the pause after 5 event(s) (4 after a 10 s pause")
    await expect(shown).to_contain_text(re.compile(r"In \d+ s"))
    legend = ops.locator(f"#legend-feedback-live li[data-version='{a1}']")
    await expect(legend).to_have_text(f"{a1[:12]}: not live yet")

    # The canary went live; the learner found when, and its next round waits for feedback.
    publish(next_trigger={**trigger, "reason": "waiting_for_feedback", "backlog": 0,
                          "in_s": None, "at": None},
            recent_rounds=[{**made, "feedback_to_live_s": 42.5, "settled": True}])
    await expect(legend).to_have_text(f"{a1[:12]}: 42.5 s", timeout=60_000)  # the next poll
    await expect(shown).to_have_text("On new feedback: 16 event(s) start one at once, "
                                     "4 after a 10 s pause")
    assert await ops.evaluate("window.sameDocument") is True  # no reload happened
    await ops.screenshot(path=shots / "ops-feedback-to-live.png", full_page=True)

    publish(round={"tenant": "acme", "phase": "training", "started_at": time.time(),
                   "step": 12, "steps": 48})
    await expect(ops.locator("#learner")).to_contain_text("acme: training step 12/48",
                                                          timeout=60_000)


async def test_the_charts_follow_requests_and_thumbs_without_a_reload(ui, page_for, shots):
    a1 = ui.versions["a1"][:12]
    ops = await open_ops(await page_for(), ui.url, tenant="acme")
    await ops.evaluate("window.sameDocument = true")
    requests = ops.locator(f"#legend-requests li[data-series='{a1}']")

    async def shown_requests() -> int:
        if not await requests.count():
            return 0
        return int(re.search(r": (\d+)$", await requests.text_content()).group(1))

    before = await shown_requests()
    chat = await open_chat(await page_for(), ui.url, user="dee")
    answer = await ask(chat, "Count to three.")
    await answer.get_by_role("button", name="Thumbs up").click()
    await expect(answer.locator(".feedback-status")).to_contain_text("recorded")

    await until(lambda: _more(shown_requests, before), what="the requests chart counts the chat")
    await expect(ops.locator(f"#legend-thumbs li[data-series='{a1}']")).to_contain_text("%")
    assert await ops.evaluate("window.sameDocument") is True  # no reload happened
    await ops.screenshot(path=shots / "ops-charts.png", full_page=True)


async def _more(read, before: int) -> bool:
    return await read() > before


async def test_the_ops_view_fits_a_phone(ui, page_for, shots):
    page = await page_for(390, 844)
    await open_ops(page, ui.url, tenant="acme")
    await expect(page.locator("#learner-state")).not_to_be_empty()
    await expect(page.locator("#audit tbody tr").first).to_be_attached()
    assert await page.evaluate(OVERFLOW) == {"page": 0, "main": 0}
    await page.screenshot(path=shots / "ops-phone.png", full_page=True)

    await page.get_by_role("tab", name="Chat").click()
    await expect(page.locator("#chat")).to_be_visible()
    assert await page.evaluate(OVERFLOW) == {"page": 0, "main": 0}
    await page.screenshot(path=shots / "chat-phone.png", full_page=True)
