"""The OpenAI-compatible API over real HTTP, through Ray Serve, with the official client."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def chat(serve_url: str, **fields) -> httpx.Response:
    """POST a chat completion for tenant acme with PROMPT, plus ``fields``."""
    body = {"model": "acme", "messages": PROMPT, **fields}
    return httpx.post(f"{serve_url}/v1/chat/completions", json=body)


@pytest.fixture(scope="module")
def client(serve_url):
    return openai.OpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=0)


def test_openai_client_completion_stream_and_models(client):
    done = client.chat.completions.create(
        model="acme", messages=PROMPT, temperature=0, max_tokens=16
    )
    text = done.choices[0].message.content
    assert text and len(done.id) == 32
    assert done.usage.completion_tokens == 16 or done.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model="acme",
        messages=PROMPT,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens
    models = [m.id for m in client.models.list()]
    assert {"base", "acme", "acme@canary"} <= set(models)


def test_adapter_version_header_and_n_choices(serve_url):
    response = chat(
        serve_url, n=3, temperature=1.0, seed=5, max_tokens=8, logprobs=True, top_logprobs=2
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-adapter-version"] == "base"
    body = response.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["logprobs"]["content"] for c in body["choices"])


BAD_REQUESTS = [
    ({"model": "acme", "messages": []}, 400, "messages"),
    ({"model": "acme", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ({"model": "acme", "messages": [{"role": "user", "content": 42}]}, 400, "content"),
    ({"model": "acme", "messages": PROMPT, "temperature": 3}, 400, "temperature"),
    ({"model": "acme", "messages": PROMPT, "top_p": 0}, 400, "top_p"),
    ({"model": "acme", "messages": PROMPT, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "acme", "messages": PROMPT, "n": 99}, 400, "n"),
    ({"model": "acme", "messages": PROMPT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": "acme", "messages": [{"role": "user", "content": "word " * 2000}]}, 400, "context"),
    ({"model": "nobody", "messages": PROMPT}, 404, "acme"),
    ({"model": "acme@v-unknown", "messages": PROMPT}, 404, "acme@canary"),
]


@pytest.mark.parametrize(("body", "status", "mentions"), BAD_REQUESTS)
def test_bad_requests_get_openai_errors(serve_url, body, status, mentions):
    response = httpx.post(f"{serve_url}/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert mentions in error["message"]
    assert error["type"]


def test_non_json_and_oversized_bodies(serve_url):
    response = httpx.post(
        f"{serve_url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]
    big = {"model": "acme", "messages": [{"role": "user", "content": "x" * 70_000}]}
    response = httpx.post(f"{serve_url}/v1/chat/completions", json=big)
    assert response.status_code == 413 and "64000" in response.json()["error"]["message"]


def test_status_lists_every_replica(serve_url):
    replicas = httpx.get(f"{serve_url}/status", timeout=30).json()["replicas"]
    assert len(replicas) == 2
    assert all(r["engine"] == "HFEngine" and r["max_context"] == 1024 for r in replicas)


def test_health_ready_and_metrics(serve_url):
    assert httpx.get(f"{serve_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{serve_url}/readyz").json()
    assert ready["ready"] is True and ready["checks"]["redis"] is True
    chat(serve_url, max_tokens=4)
    text = httpx.get(f"{serve_url}/metrics").text
    assert (
        'loraloop_requests_total{adapter_version="base",status="ok",stream="false",tenant="acme"}'
        in text
    )
    assert "loraloop_request_latency_seconds_bucket" in text
    assert "loraloop_interaction_log_dropped" in text


def test_concurrent_clients_all_succeed(serve_url):
    async def run():
        async with httpx.AsyncClient(timeout=120) as http:

            async def one(i):
                r = await http.post(
                    f"{serve_url}/v1/chat/completions",
                    json={
                        "model": "acme",
                        "messages": PROMPT,
                        "max_tokens": 16,
                        "temperature": 0,
                        "stream": i % 2 == 0,
                    },
                )
                return r.status_code

            return await asyncio.gather(*(one(i) for i in range(16)))

    assert asyncio.run(run()) == [200] * 16


def test_every_answer_is_logged_once_with_its_version(serve_url, redis_server):
    from feedback.connections import sync_client
    from tests.support.waiting import wait_until

    ids = []
    for stream in (False, True):
        r = chat(serve_url, max_tokens=8, stream=stream, user="alice")
        assert r.status_code == 200
        if stream:
            first = next(line for line in r.text.splitlines() if line.startswith("data: {"))
            ids.append(json.loads(first[6:])["id"])
        else:
            ids.append(r.json()["id"])
    client = sync_client(redis_server.url, decode=True)

    def both_logged() -> list[dict]:
        entries = client.xrange("e2e:stream:interactions")
        logged = [json.loads(e["event"]) for _, e in entries if e["id"] in ids]
        return logged if {e["id"] for e in logged} == set(ids) else []

    logged = wait_until(both_logged, what="both answers in the interactions stream")
    client.close()
    assert sorted(e["id"] for e in logged) == sorted(ids)
    assert all(e["adapter_version"] == "base" and not e["abandoned"] for e in logged)
    assert all(e["user"] != "alice" for e in logged)  # stored hashed


def test_full_replica_queue_gets_503_with_retry_after(serve_url, tiny_model_dir):
    """A second app whose single replica takes 1 request and queues 1: the rest are refused."""
    from ray import serve

    from serving.api import IngressConfig
    from serving.app import ServeConfig, build_app
    from serving.engines.base import EngineConfig

    config = ServeConfig(
        engine_config=EngineConfig(model=str(tiny_model_dir), threads=1),
        ingress=IngressConfig(tenants=["acme"]),
        num_replicas=1,
        max_ongoing_requests=1,
        max_queued_requests=1,
    )
    serve.run(build_app(config), name="tight", route_prefix="/tight")
    try:
        body = {"model": "acme", "messages": PROMPT, "max_tokens": 300, "temperature": 0}

        async def run():
            async with httpx.AsyncClient(timeout=120) as http:
                return await asyncio.gather(
                    *(
                        http.post(f"{serve_url}/tight/v1/chat/completions", json=body)
                        for _ in range(6)
                    )
                )

        responses = asyncio.run(run())
        statuses = sorted(r.status_code for r in responses)
        assert 200 in statuses and 503 in statuses, statuses
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "replicas_busy"
    finally:
        serve.delete("tight")


def test_openai_client_asks_for_test_time_compute(client):
    """`reasoning_effort` and the `loraloop` object (extra_body) through Ray Serve."""
    raw = client.chat.completions.with_raw_response.create(
        model="acme", messages=PROMPT, max_tokens=4,
        extra_body={"loraloop": {"strategy": "best_of_n", "n": 3, "aggregator": "vote"}})
    assert raw.headers["x-loraloop-strategy"] == "best_of_n"
    done = raw.parse()
    assert done.model_extra["loraloop"]["strategy"] == "best_of_n"
    assert 2 <= done.model_extra["loraloop"]["samples"] <= 3
    effort = client.chat.completions.create(model="acme", messages=PROMPT, max_tokens=4,
                                            reasoning_effort="medium")
    assert effort.model_extra["loraloop"]["strategy"] == "best_of_n"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="acme", messages=PROMPT, max_tokens=4,
                                       extra_body={"loraloop": {"strategy": "best_of_n",
                                                                "n": 500}})
    assert refused.value.body["param"] == "loraloop.n"
    stream = client.chat.completions.create(
        model="acme", messages=PROMPT, max_tokens=4, stream=True,
        extra_body={"loraloop": {"strategy": "refine", "rounds": 1}})
    chunks = list(stream)
    summary = [c.model_extra["loraloop"] for c in chunks if "loraloop" in (c.model_extra or {})]
    assert len(summary) == 1 and summary[0]["strategy"] == "refine"
