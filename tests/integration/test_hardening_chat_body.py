"""A chat body too big to hold a prompt of max_prompt_chars is refused unread (413),
not parsed first and refused as a long prompt (issue 13, item 5: floods of huge prompts
must cost the server as little as possible)."""

from __future__ import annotations

import httpx
import pytest

from tests.support.served import chat_stack, served_app

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_a_body_that_cannot_hold_an_allowed_prompt_is_refused_unread(
        tiny_model_dir, redis_url, keys):
    async with chat_stack(tiny_model_dir, redis_url, keys, max_prompt_chars=1_000) as stack, \
            served_app(stack.app) as url, httpx.AsyncClient(base_url=url, timeout=120) as http:
        # 1,000 characters can take at most 12 kB of JSON: 200 kB is refused from its header.
        big = {"model": "acme", "user": "u", "max_tokens": 4,
               "messages": [{"role": "user", "content": "x" * 200_000}]}
        refused = await http.post("/v1/chat/completions", json=big)
        assert refused.status_code == 413, refused.text
        # Within the body limit but over the prompt limit: parsed, then refused by length.
        long = {**big, "messages": [{"role": "user", "content": "x" * 5_000}]}
        too_long = await http.post("/v1/chat/completions", json=long)
        assert too_long.status_code == 400, too_long.text
        assert too_long.json()["error"]["code"] == "prompt_too_long"
        ok = await http.post("/v1/chat/completions", json={**big, "messages": [
            {"role": "user", "content": "Hi"}]})
        assert ok.status_code == 200, ok.text
