"""Feedback traffic over HTTP, for the e2e ledger test and bench/feedback_throughput.py.

Each simulated user gets one short answer (:func:`answer_each`), waits until the
app has logged it (:func:`logged`), and then rates it again and again
(:func:`rate`); ratings alternate down, up, down, ... so every one is a real
change of the user's current rating.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import httpx

from feedback.connections import async_client
from feedback.keys import RedisKeys

PROMPT = [{"role": "user", "content": "Hi"}]


async def answer_each(http: httpx.AsyncClient, url: str, users: Iterable[str]) -> list[str]:
    """One two-token answer per user, one after the other; their interaction ids in order."""
    ids = []
    for user in users:
        response = await http.post(
            f"{url}/v1/chat/completions",
            json={"model": "default", "messages": PROMPT, "max_tokens": 2, "user": user},
        )
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids


async def rate(http: httpx.AsyncClient, url: str, interaction_id: str, user: str, n: int,
               **fields: Any) -> httpx.Response:
    """``user``'s ``n``-th rating of the interaction (``n`` even: down, odd: up)."""
    body = {"interaction_id": interaction_id, "user": user, "rating": "up" if n % 2 else "down"}
    return await http.post(f"{url}/v1/feedback", json=body | fields)


async def logged(redis_url: str, prefix: str, interaction_ids: Iterable[str], *,
                 timeout_s: float = 60) -> None:
    """Return once every interaction is in Redis under ``prefix`` (serving logs them
    asynchronously); ``TimeoutError`` after ``timeout_s``."""
    keys = RedisKeys(prefix)
    missing = {keys.interaction(i) for i in interaction_ids}
    client = async_client(redis_url, timeout_s=10)
    deadline = time.monotonic() + timeout_s
    try:
        while missing:
            found = await asyncio.gather(*(client.exists(k) for k in missing))
            missing = {k for k, there in zip(missing, found, strict=True) if not there}
            if missing and time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} interactions not logged in {timeout_s} s")
            await asyncio.sleep(0.05 if missing else 0)
    finally:
        await client.aclose()


async def stored_interaction(redis_url: str, keys: RedisKeys, interaction_id: str):
    """The interaction as the app logged it (waits until it is logged)."""
    from feedback.events import Interaction

    await logged(redis_url, keys.prefix, [interaction_id])
    client = async_client(redis_url)
    try:
        raw = await client.get(keys.interaction(interaction_id))
    finally:
        await client.aclose()
    return Interaction.from_json(raw)
