"""An address that keeps sending refused requests is slowed down over real HTTP, while
clients at other addresses are answered as before (``serving.refusals``).

The attacker's client binds 127.0.0.2: another address on the loopback network, as
another machine would be."""

from __future__ import annotations

import httpx
import pytest

from serving.refusals import RefusalConfig
from tests.support.served import chat_stack, served_app
from tests.support.waiting import until

PROMPT = [{"role": "user", "content": "Hi"}]
CHAT = {"model": "acme", "messages": PROMPT, "max_tokens": 2, "user": "alice"}
#: Forgiven slowly, so that even a slow machine refuses faster than it forgives.
REFUSALS = RefusalConfig(limit=20, forgive_per_s=1, delay_s=0.2)


def _client(url: str, address: str | None = None) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address) if address else None
    return httpx.AsyncClient(base_url=url, timeout=120, transport=transport)


@pytest.mark.asyncio
async def test_an_address_sending_refused_requests_is_slowed_and_others_are_not(
        tiny_model_dir, redis_url, keys):
    async with chat_stack(tiny_model_dir, redis_url, keys, refusals=REFUSALS) as stack, \
            served_app(stack.app) as url, _client(url, "127.0.0.2") as attacker, \
            _client(url) as honest:
        codes = []
        for _ in range(500):
            refused = await attacker.post("/v1/chat/completions", json=CHAT | {"max_tokens": -1})
            codes.append(refused.json()["error"].get("code"))
            if codes[-1] == "too_many_refused_requests":
                break
        assert codes[0] != "too_many_refused_requests"  # refused for what it was at first
        assert codes[-1] == "too_many_refused_requests", codes[-3:]
        assert len(codes) > REFUSALS.limit

        # Slowed down, even its valid requests are refused unhandled, saying why and when.
        valid = await attacker.post("/v1/chat/completions", json=CHAT)
        assert valid.status_code == 429 and int(valid.headers["retry-after"]) >= 1
        assert "too many refused requests from this address" in \
            valid.json()["error"]["message"]
        # Another address is answered as before, and the metrics count the slowed requests.
        assert (await honest.post("/v1/chat/completions", json=CHAT)).status_code == 200
        metrics = (await honest.get("/metrics")).text
        assert "loraloop_throttled_requests_total 2.0" in metrics

        # Once it stops, it is forgiven.
        async def answered() -> bool:
            return (await attacker.post("/v1/chat/completions", json=CHAT)).status_code == 200
        await until(answered, what="the attacker's address is forgiven", every_s=2)


@pytest.mark.asyncio
async def test_a_huge_body_refused_unread_counts_as_a_refusal(tiny_model_dir, redis_url, keys):
    """BodyLimit's 413 (the body never read) is seen by the throttle, which wraps it."""
    refusals = RefusalConfig(limit=2.5, forgive_per_s=0.01, delay_s=0)
    async with chat_stack(tiny_model_dir, redis_url, keys, refusals=refusals) as stack, \
            served_app(stack.app) as url, _client(url, "127.0.0.2") as attacker:
        statuses = [(await attacker.post("/v1/feedback", content=b"{" + b" " * 2_000_000))
                    .json()["error"].get("code") for _ in range(4)]
        assert statuses == [None, None, None, "too_many_refused_requests"]  # 413s, then 429
