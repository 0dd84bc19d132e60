"""Handoff over real HTTP: the upstream is a second loraloop app, never a fake.

The local app (tenant ``acme``) hands requests to the upstream app (tenant
``oracle``, the same tiny model, so its greedy answer is known by asking it
directly). When the upstream is down or silent, every request still succeeds
with a local answer, and the fallback is recorded.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from feedback.events import Interaction
from serving.compute.runner import ComputeRunner
from serving.compute.spec import ComputeConfig
from serving.compute.upstream import Upstream, UpstreamConfig
from tests.support.faults import Silent
from tests.support.feedback_traffic import logged
from tests.support.served import chat_stack, free_port, served_app

QUESTION = [{"role": "user", "content": "Who wrote Hamlet? My email is ann@example.com"}]


def _handing_off(url: str, **upstream):
    config = UpstreamConfig(url=url, model="oracle", **upstream)

    def factory(engine):
        return ComputeRunner(engine, ComputeConfig(), upstream=Upstream(config))

    return factory


async def _stored(redis_url: str, keys, interaction_id: str) -> Interaction:
    await logged(redis_url, keys.prefix, [interaction_id])
    from feedback.connections import async_client

    client = async_client(redis_url)
    try:
        raw = await client.get(keys.interaction(interaction_id))
    finally:
        await client.aclose()
    return Interaction.from_json(raw)


@pytest.fixture
async def upstream(tiny_model_dir, redis_url, tmp_path):
    """The upstream: a second real loraloop app on its own Redis prefix."""
    from feedback.keys import RedisKeys
    from tests.support.redis_support import delete_prefix, new_prefix

    prefix = new_prefix("upstream")
    async with (
        chat_stack(tiny_model_dir, redis_url, RedisKeys(prefix), tenants=("oracle",)) as stack,
        served_app(stack.app) as url,
    ):
        yield url
    delete_prefix(redis_url, prefix)


async def _direct(http, upstream_url: str, messages, max_tokens: int) -> str:
    r = await http.post(f"{upstream_url}/v1/chat/completions", json={
        "model": "oracle", "messages": messages, "max_tokens": max_tokens, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


async def test_a_handed_off_request_gets_the_upstream_answer(tiny_model_dir, redis_url, keys,
                                                             upstream):
    options = {"compute": _handing_off(f"{upstream}/v1")}
    async with (
        chat_stack(tiny_model_dir, redis_url, keys, replica_options=options) as stack,
        served_app(stack.app) as url, httpx.AsyncClient(timeout=300) as http,
    ):
        body = {"model": "acme", "messages": QUESTION, "max_tokens": 6, "temperature": 0,
                "user": "ann", "loraloop": {"strategy": "handoff"}}
        r = await http.post(f"{url}/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.headers["x-loraloop-strategy"] == "handoff"
        answer = r.json()
        # What the upstream answers to the redacted question, asked directly.
        redacted = [{"role": "user", "content": stack.service.redactor.redact(
            QUESTION[0]["content"])}]
        assert redacted != QUESTION
        expected = await _direct(http, upstream, redacted, 6)
        assert answer["choices"][0]["message"]["content"] == expected
        assert answer["loraloop"]["handed_off"] is True
        assert answer["loraloop"]["upstream_model"] == "oracle"
        stored = await _stored(redis_url, keys, answer["id"])
        assert stored.mode == "handoff" and stored.compute.handed_off
        assert stored.compute.upstream_tokens > 0 and stored.completion == expected

        # Streamed when the client streams.
        deltas = []
        async with http.stream("POST", f"{url}/v1/chat/completions",
                               json={**body, "stream": True}) as s:
            assert s.status_code == 200
            async for line in s.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if chunk["choices"]:
                        deltas.append(chunk["choices"][0]["delta"].get("content", ""))
                    else:
                        summary = chunk.get("loraloop")
        assert "".join(deltas) == expected and summary["handed_off"] is True
        metrics = (await http.get(f"{url}/metrics")).text
        assert 'loraloop_handoffs_total{adapter_version="base",tenant="acme"} 2.0' in metrics


@pytest.mark.parametrize("how", ["down", "silent"])
async def test_with_the_upstream_down_or_silent_every_request_succeeds_locally(
        tiny_model_dir, redis_url, keys, how):
    if how == "down":
        listener, url_of = None, f"http://127.0.0.1:{free_port()}/v1"
    else:
        listener = Silent()
        url_of = f"http://127.0.0.1:{listener.port}/v1"
    options = {"compute": _handing_off(url_of, first_token_timeout_s=1.0, total_timeout_s=5.0,
                                       breaker_failures=2, breaker_cooldown_s=600)}
    try:
        async with (
            chat_stack(tiny_model_dir, redis_url, keys, replica_options=options) as stack,
            served_app(stack.app) as url, httpx.AsyncClient(timeout=300) as http,
        ):
            results = []
            for _ in range(4):
                started = time.monotonic()
                r = await http.post(f"{url}/v1/chat/completions", json={
                    "model": "acme", "messages": QUESTION, "max_tokens": 3, "user": "ann",
                    "loraloop": {"strategy": "handoff"}})
                results.append((r, time.monotonic() - started))
            stats = stack.replica.compute.upstream.stats()
    finally:
        if listener is not None:
            listener.close()
    reasons = []
    for r, _elapsed in results:
        assert r.status_code == 200, r.text
        assert r.json()["loraloop"]["handed_off"] is False
        assert r.json()["choices"][0]["message"]["content"] is not None
        reasons.append(r.json()["loraloop"]["fallback"])
    expected = "error" if how == "down" else "timeout"
    # Two failures open the circuit; later requests do not even try.
    assert reasons == [expected, expected, "breaker_open", "breaker_open"]
    assert stats["breaker"]["state"] == "open"
