"""The per-client-address feedback limit over real HTTP: invented `user` names from one
address share one budget; behind a configured proxy header, each forwarded address has its own."""

from __future__ import annotations

import httpx
import pytest

from feedback.store import FeedbackConfig
from tests.support.served import chat_stack, served_app

PROMPT = [{"role": "user", "content": "Hi"}]


async def _answer(http: httpx.AsyncClient, user: str) -> str:
    response = await http.post("/v1/chat/completions", json={
        "model": "acme", "messages": PROMPT, "max_tokens": 2, "user": user})
    assert response.status_code == 200, response.text
    return response.json()["id"]


async def _rate(http, interaction_id: str, user: str, **headers) -> httpx.Response:
    return await http.post("/v1/feedback", headers=headers, json={
        "interaction_id": interaction_id, "rating": "up", "user": user})


@pytest.mark.asyncio
async def test_invented_users_from_one_address_share_its_limit(tiny_model_dir, redis_url, keys):
    feedback = FeedbackConfig(address_limit=3, rate_window_s=3600)
    async with chat_stack(tiny_model_dir, redis_url, keys, feedback=feedback) as stack, \
            served_app(stack.app) as url, httpx.AsyncClient(base_url=url, timeout=120) as http:
        users = [f"sybil-{i}" for i in range(5)]
        ids = [await _answer(http, user) for user in users]
        statuses = [(await _rate(http, i, u)).status_code for i, u in zip(ids, users, strict=True)]
        assert statuses == [202, 202, 202, 429, 429]
        refused = await _rate(http, ids[4], users[4])
        assert "address rate limit" in refused.json()["error"]["message"]
        assert "address_limit" in refused.json()["error"]["message"]


@pytest.mark.asyncio
async def test_the_forwarded_address_counts_only_when_configured(tiny_model_dir, redis_url,
                                                                 keys):
    feedback = FeedbackConfig(address_limit=1, rate_window_s=3600,
                              client_address_header="x-forwarded-for")
    async with chat_stack(tiny_model_dir, redis_url, keys, feedback=feedback) as stack, \
            served_app(stack.app) as url, httpx.AsyncClient(base_url=url, timeout=120) as http:
        users = [f"u{i}" for i in range(3)]
        ids = [await _answer(http, user) for user in users]
        # The proxy appends the address it saw; what the client put first is not trusted.
        first = await _rate(http, ids[0], users[0], **{"x-forwarded-for": "1.2.3.4, 10.0.0.1"})
        second = await _rate(http, ids[1], users[1], **{"x-forwarded-for": "9.9.9.9, 10.0.0.2"})
        same = await _rate(http, ids[2], users[2], **{"x-forwarded-for": "5.5.5.5, 10.0.0.1"})
        assert [first.status_code, second.status_code, same.status_code] == [202, 202, 429]
