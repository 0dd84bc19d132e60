"""Chat in the web UI: answers stream in with their version, and the thumbs and corrections
a person gives reach the feedback stream the learner reads (and its curation)."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("playwright", reason="the playwright package is not installed")

from playwright.async_api import expect

from feedback.events import hash_user
from tests.browser.ui_steps import MAX_TOKENS, ask, open_chat

pytestmark = pytest.mark.asyncio(loop_scope="module")
#: Text lengths the answer showed, recorded in the page as the DOM changes.
RECORD_LENGTHS = """() => {
  window.lengths = [];
  new MutationObserver(() => {
    const text = document.querySelector('#transcript > li.assistant:last-child .text');
    if (text) window.lengths.push(text.textContent.length);
  }).observe(document.getElementById('transcript'),
             {subtree: true, childList: true, characterData: true});
}"""


def feedback_events(redis_client, keys, interaction_id: str) -> list[dict]:
    """The feedback stream's events about ``interaction_id``, as the learner reads them."""
    found = []
    for _, fields in redis_client.xrange(keys.feedback_stream):
        if fields.get(b"interaction_id", b"").decode() == interaction_id:
            found.append(json.loads(fields[b"event"]))
    return found


async def test_an_answer_streams_in_and_names_its_version(ui, page_for, shots):
    page = await open_chat(await page_for(), ui.url)
    # A slow link, as on a phone: the answer's chunks arrive over a few seconds, so the
    # page must show each as it comes (one that waited for the whole body shows one step).
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 20, "downloadThroughput": 4000, "uploadThroughput": -1})
    await page.evaluate(RECORD_LENGTHS)
    answer = await ask(page, "What is the capital of France?")
    await page.screenshot(path=shots / "chat-answer.png", full_page=True)

    lengths = [n for n in await page.evaluate("window.lengths") if n > 0]
    final = await answer.locator(".text").text_content()
    assert final and lengths[-1] == len(final)
    assert len(set(lengths)) >= 3, f"the answer appeared in {len(set(lengths))} step(s)"
    assert lengths == sorted(lengths), "the shown answer shrank while streaming"
    assert int(await answer.get_attribute("data-chunks")) >= MAX_TOKENS // 2

    live = ui.versions["a1"]
    assert await answer.get_attribute("data-version") == live
    meta = answer.locator(".meta")
    await expect(meta).to_contain_text(f"version {live[:12]}")
    await expect(meta).to_contain_text("strategy single")
    await expect(meta.locator("code")).to_have_attribute("title", live)


async def test_a_thumbs_up_reaches_the_feedback_stream(ui, page_for, redis_client):
    page = await open_chat(await page_for(), ui.url, user="bea")
    answer = await ask(page, "Name a prime number.")
    interaction_id = await answer.get_attribute("data-interaction")
    assert interaction_id
    await answer.get_by_role("button", name="Thumbs up").press("Enter")  # by keyboard
    await expect(answer.locator(".feedback-status")).to_contain_text("thumbs up recorded")
    await expect(answer.get_by_role("button", name="Thumbs up")).to_have_attribute(
        "aria-pressed", "true")

    events = feedback_events(redis_client, ui.keys, interaction_id)
    assert [(e["rating"], e["user"], e["tenant"]) for e in events] == [
        (1, hash_user("bea"), "acme")]


async def test_a_correction_becomes_a_training_example(ui, page_for, redis_client, redis_url,
                                                       shots):
    from feedback.connections import async_client
    from feedback.interactions import join_interactions
    from feedback.source import FeedbackSource, SourceConfig
    from learner.curate import curate
    from learner.distill import split_entries

    better = "The capital of Veltrania is Oskarra."
    page = await open_chat(await page_for(), ui.url, user="cyd")
    answer = await ask(page, "What is the capital of Veltrania?")
    interaction_id = await answer.get_attribute("data-interaction")
    served = await answer.locator(".text").text_content()
    await answer.get_by_role("button", name="Suggest a better answer").click()
    await answer.get_by_label("A better answer").fill(better)
    await answer.get_by_role("button", name="Send correction").click()
    await expect(answer.locator(".feedback-status")).to_contain_text("Correction recorded")
    await page.screenshot(path=shots / "chat-correction.png", full_page=True)

    [event] = feedback_events(redis_client, ui.keys, interaction_id)
    assert (event["rating"], event["correction"]) == (-1, better)

    # What the learner's next round makes of it: its consumer group reads the stream,
    # joins each rating to its interaction, and curation labels the examples.
    client = async_client(redis_url)
    try:
        source = FeedbackSource(client, ui.keys, "ui-test", SourceConfig(block_ms=0))
        rated, _ = split_entries(await source.read())
        joined = await join_interactions(client, ui.keys, rated)
    finally:
        await client.aclose()
    curated = curate(joined, tenant="acme", per_user_cap=50, holdout_fraction=0.0)
    made = {(e.completion, e.desirable, e.source) for e in curated.train
            if e.interaction_id == interaction_id}
    assert made == {(better, True, "correction"), (served, False, "correction")}
    [example] = [e for e in curated.train if e.completion == better]
    assert example.prompt[-1] == {"role": "user", "content": "What is the capital of Veltrania?"}
    assert example.user == hash_user("cyd")


async def test_the_strategy_picked_is_shown_with_its_compute(ui, page_for):
    page = await open_chat(await page_for(), ui.url)
    await page.locator("#chat").get_by_label("Strategy").select_option("best_of_n")
    answer = await ask(page, "What is 17 + 25?")
    meta = answer.locator(".meta")
    await expect(meta).to_contain_text("strategy best_of_n")
    await expect(meta).to_contain_text("answered locally")
    await expect(meta.locator(".compute")).to_have_text(re.compile(r"^[1-9]\d* compute tokens$"))
    assert int(await answer.get_attribute("data-samples")) > 1

    await page.locator("#chat").get_by_label("Strategy").select_option("")
    await page.locator("#chat").get_by_label("Reasoning effort").select_option("medium")
    answer = await ask(page, "And 18 + 25?")  # medium: best of 4 by vote (the defaults)
    await expect(answer.locator(".meta")).to_contain_text("strategy best_of_n")


async def test_a_keyboard_alone_can_ask_and_rate(ui, page_for):
    page = await page_for()
    await page.goto(ui.url + "/")
    await expect(page.locator("#model option[value='acme']")).to_have_count(1)
    order = []
    for _ in range(12):
        await page.keyboard.press("Tab")
        order.append(await page.evaluate("document.activeElement.id || document.activeElement"
                                         ".textContent"))
    assert order == ["Skip to content", "tab-chat", "model", "strategy", "samples", "effort",
                     "max-tokens", "temperature", "user", "user-key", "prompt", "send"], order
    await page.keyboard.press("Shift+Tab")  # back to the message
    await page.keyboard.type("Hello from the keyboard")
    await page.keyboard.press("Control+Enter")
    answer = page.locator("li.turn.assistant").first
    await expect(answer).to_have_attribute("data-state", "done")
    await expect(page.locator("#prompt")).to_be_focused()
    for name in ("Suggest a better answer", "Thumbs down", "Thumbs up"):  # backwards
        await page.keyboard.press("Shift+Tab")
        await expect(answer.get_by_role("button", name=name)).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(answer.locator(".feedback-status")).to_contain_text("thumbs up recorded")

    await page.keyboard.press("ArrowRight")  # no effect off the tabs
    await page.locator("#tab-chat").focus()
    await page.keyboard.press("ArrowRight")  # tabs move with the arrow keys
    await expect(page.locator("#tab-ops")).to_be_focused()
    await expect(page.locator("#ops")).to_be_visible()
