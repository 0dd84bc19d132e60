"""The one-hop topology over real HTTP: the OpenAI app inside each LLM replica.

Proxy -> replica -> engine, two replicas, the interaction log and feedback on the
stack's Redis: chat (plain and streamed), the OpenAI client, feedback on a logged
answer, /status listing both replicas, and backpressure answered by Serve's proxy.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import openai
import pytest

from feedback.connections import sync_client
from tests.support.waiting import wait_until

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def _config(tiny_model_dir, **overrides):
    from serving.api import IngressConfig
    from serving.app import ServeConfig
    from serving.engines.base import EngineConfig

    return ServeConfig(
        topology="one_hop",
        engine_config=EngineConfig(model=str(tiny_model_dir), threads=1),
        ingress=IngressConfig(tenants=["acme"], default_max_tokens=16),
        **overrides,
    )


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    return False


@pytest.fixture(scope="module")
def one_hop_url(serve_url, redis_server, tiny_model_dir):
    from ray import serve

    from serving.app import build_app

    config = _config(tiny_model_dir, num_replicas=2, redis_url=redis_server.url,
                     redis_prefix="onehop")
    serve.run(build_app(config), name="onehop", route_prefix="/onehop")
    url = f"{serve_url}/onehop"
    wait_until(lambda: _ready(url), what="the one-hop app answering /readyz", timeout_s=120)
    yield url
    serve.delete("onehop")


def test_one_deployment_no_ingress(tiny_model_dir):
    from serving.app import build_app

    app = build_app(_config(tiny_model_dir))
    assert app._bound_deployment.name == "llm"
    assert app._bound_deployment._deployment_config.backpressure_config.retry_after_s == 1


def test_chat_streamed_and_plain_then_feedback(one_hop_url, redis_server):
    client = openai.OpenAI(base_url=f"{one_hop_url}/v1", api_key="none", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="acme", messages=PROMPT, max_tokens=8, temperature=0, user="alice")
    assert raw.headers["x-adapter-version"] == "base"
    answer = raw.parse()
    assert answer.choices[0].message.content and answer.usage.completion_tokens >= 1
    streamed = list(client.chat.completions.create(
        model="acme", messages=PROMPT, max_tokens=8, temperature=0, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == answer.choices[0].message.content  # greedy: the same answer either way

    redis = sync_client(redis_server.url)
    try:
        wait_until(lambda: redis.exists(f"onehop:interaction:{answer.id}"),
                   what="the replica logged the interaction")
    finally:
        redis.close()
    sent = httpx.post(f"{one_hop_url}/v1/feedback", timeout=30, json={
        "interaction_id": answer.id, "rating": "up", "user": "alice"})
    assert sent.status_code == 202, sent.text


def test_status_lists_every_replica_and_metrics_count_chat(one_hop_url):
    replicas = httpx.get(f"{one_hop_url}/status", timeout=30).json()["replicas"]
    assert len({r["replica_id"] for r in replicas}) == 2, replicas
    httpx.post(f"{one_hop_url}/v1/chat/completions", timeout=60,
               json={"model": "acme", "messages": PROMPT, "max_tokens": 2}).raise_for_status()
    assert "loraloop_requests_total" in httpx.get(f"{one_hop_url}/metrics", timeout=30).text
    models = httpx.get(f"{one_hop_url}/v1/models", timeout=30).json()["data"]
    assert "acme" in {m["id"] for m in models}


def test_full_replica_gets_503_with_retry_after(serve_url, tiny_model_dir):
    """One replica taking 1 request and queueing 1: Serve's proxy refuses the rest."""
    from ray import serve

    from serving.app import build_app

    config = _config(tiny_model_dir, max_ongoing_requests=1, max_queued_requests=1)
    serve.run(build_app(config), name="tight1", route_prefix="/tight1")
    try:
        url = f"{serve_url}/tight1"
        wait_until(lambda: _ready(url), what="the one-hop app answering /readyz", timeout_s=120)
        body = {"model": "acme", "messages": PROMPT, "max_tokens": 300, "temperature": 0}

        async def run():
            async with httpx.AsyncClient(timeout=120) as http:
                return await asyncio.gather(
                    *(http.post(f"{url}/v1/chat/completions", json=body) for _ in range(6)))

        responses = asyncio.run(run())
        statuses = sorted(r.status_code for r in responses)
        assert 200 in statuses and 503 in statuses, statuses
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["retry-after"] == "1"
    finally:
        serve.delete("tight1")
