"""What a person does in the web UI, as Playwright steps shared by the browser tests."""

from __future__ import annotations

import re

from playwright.async_api import Locator, Page, expect

from tests.browser.conftest import ADMIN_TOKEN

#: Greedy and short: the tiny model never stops this soon, so every answer has this many
#: tokens, streamed one by one.
MAX_TOKENS = 48


async def open_chat(page: Page, url: str, *, model: str = "acme", user: str = "alice") -> Page:
    await page.goto(url + "/")
    await expect(page.locator(f"#model option[value='{model}']")).to_have_count(1)
    chat = page.locator("#chat")
    await chat.get_by_label("Model").select_option(model)
    await chat.get_by_label("User name").fill(user)
    await chat.get_by_label("Max tokens").fill(str(MAX_TOKENS))
    await chat.get_by_label("Temperature").fill("0")
    return page


async def ask(page: Page, prompt: str) -> Locator:
    """Send ``prompt``; the answer's list item once it is complete."""
    before = await page.locator("li.turn.assistant").count()
    await page.get_by_label("Message").fill(prompt)
    await page.get_by_role("button", name="Send", exact=True).click()
    answer = page.locator("li.turn.assistant").nth(before)
    await expect(answer).to_have_attribute("data-state", re.compile("^(done|error)$"))
    if await answer.get_attribute("data-state") == "error":
        raise AssertionError(f"no answer: {await answer.get_by_role('alert').text_content()}")
    return answer


async def open_ops(page: Page, url: str, *, tenant: str) -> Page:
    """The ops view of ``tenant``, with the admin token entered."""
    await page.goto(url + "/#ops")
    ops = page.locator("#ops")
    await ops.get_by_label("Admin token").fill(ADMIN_TOKEN)
    await ops.get_by_role("button", name="Use token").click()
    await expect(page.locator(f"#ops-tenant option[value='{tenant}']")).to_have_count(1)
    await ops.get_by_label("Tenant").select_option(tenant)
    await expect(page.locator("#versions tbody tr[data-version]").first).to_be_visible()
    return page


async def confirm(page: Page, *, reason: str = "") -> None:
    dialog = page.locator("dialog#confirm")
    await expect(dialog).to_be_visible()
    if reason:
        await dialog.get_by_label("Reason").fill(reason)
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(dialog).to_be_hidden()
