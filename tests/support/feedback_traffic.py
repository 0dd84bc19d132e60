"""Feedback traffic over HTTP, for the e2e ledger test and bench/feedback_throughput.py.

Each simulated user gets one short answer (:func:`answer_each`) and then rates it
again and again (:func:`rate`); ratings alternate down, up, down, ... so every
one is a real change of the user's current rating.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

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
