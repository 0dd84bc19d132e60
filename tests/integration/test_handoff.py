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

from serving.compute.runner import ComputeRunner
from serving.compute.spec import ComputeConfig
from serving.compute.upstream import Upstream, UpstreamConfig
from tests.support.faults import Silent
from tests.support.feedback_traffic import stored_interaction
from tests.support.served import chat_stack, free_port, served_app

QUESTION = [{"role": "user", "content": "Who wrote Hamlet? My email is ann@example.com"}]


def _handing_off(url: str, **upstream):
    config = UpstreamConfig(url=url, model="oracle", **upstream)

    def factory(engine):
        return ComputeRunner(engine, ComputeConfig(), upstream=Upstream(config))

    return factory


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
        served = stack.replica.engine.encode_text(expected)
        assert answer["usage"]["completion_tokens"] == len(served) > 0
        stored = await stored_interaction(redis_url, keys, answer["id"])
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


def _adaptive(url: str, keys, redis_url: str, **adaptive):
    from serving.compute.bandit import Bandit
    from serving.compute.spec import AdaptiveConfig

    def factory(engine):
        config = ComputeConfig(adaptive=AdaptiveConfig(**adaptive))
        return ComputeRunner(engine, config, bandit=Bandit(redis_url, keys, refresh_s=0),
                             upstream=Upstream(UpstreamConfig(url=url, model="oracle")))

    return factory


async def test_adaptive_hands_off_below_its_threshold_and_learns_from_the_thumbs(
        tiny_model_dir, redis_url, keys, upstream, redis_client):
    # A threshold above any confidence: every answer escalates, and handoff is the only arm.
    options = {"compute": _adaptive(f"{upstream}/v1", keys, redis_url,
                                    confidence_threshold=1.0, arms=["handoff"],
                                    probe_n=2, probe_max_tokens=3)}
    async with (
        chat_stack(tiny_model_dir, redis_url, keys, replica_options=options) as stack,
        served_app(stack.app) as url, httpx.AsyncClient(timeout=300) as http,
    ):
        r = await http.post(f"{url}/v1/chat/completions", json={
            "model": "acme", "messages": QUESTION, "max_tokens": 4, "user": "ann",
            "temperature": 0, "loraloop": {"strategy": "adaptive", "n": 2}})
        assert r.status_code == 200, r.text
        assert r.headers["x-loraloop-strategy"] == "adaptive"
        summary = r.json()["loraloop"]
        assert summary["handed_off"] is True and summary["decision"] == "handoff"
        stored = await stored_interaction(redis_url, keys, r.json()["id"])
        assert stored.compute.samples == 2 and len(stored.compute.candidates) == 2
        assert 0 <= stored.compute.confidence < 1.0
        assert stored.compute.disagreement is not None
        pulls = redis_client.hgetall(keys.bandit("acme"))
        assert pulls[b"handoff:pulls"] == b"1" and float(pulls[b"handoff:cost"]) > 0
        f = await http.post(f"{url}/v1/feedback", json={"interaction_id": r.json()["id"],
                                                        "user": "ann", "rating": "up"})
        assert f.status_code == 202
        from tests.support.waiting import until

        await until(lambda: redis_client.hget(keys.bandit("acme"), "handoff:ups") == b"1",
                    what="the thumbs-up rewards the handoff arm")


async def test_adaptive_stops_at_its_probe_when_confident(tiny_model_dir, redis_url, keys,
                                                          upstream, redis_client):
    options = {"compute": _adaptive(f"{upstream}/v1", keys, redis_url,
                                    confidence_threshold=0.0, probe_n=2, probe_max_tokens=2)}
    async with (
        chat_stack(tiny_model_dir, redis_url, keys, replica_options=options) as stack,
        served_app(stack.app) as url, httpx.AsyncClient(timeout=300) as http,
    ):
        r = await http.post(f"{url}/v1/chat/completions", json={
            "model": "acme", "messages": QUESTION, "max_tokens": 5, "user": "ann",
            "loraloop": {"strategy": "adaptive", "n": 2}})
        assert r.status_code == 200, r.text
        summary = r.json()["loraloop"]
        assert summary["decision"] == "stop" and summary["handed_off"] is False
        # The probe's 2-token answer is carried on to the request's max_tokens.
        assert r.json()["usage"]["completion_tokens"] in range(1, 6)
    assert not redis_client.exists(keys.bandit("acme"))  # a confident stop is no escalation


async def test_an_upstream_lost_mid_answer_is_finished_by_the_local_model(
        tiny_model_dir, redis_url, keys, tmp_path):
    from feedback.keys import RedisKeys
    from tests.support.redis_support import delete_prefix, new_prefix
    from tests.support.upstream_recorder import Recorder

    prefix = new_prefix("upstream")
    try:
        async with chat_stack(tiny_model_dir, redis_url, RedisKeys(prefix),
                              tenants=("oracle",)) as upstream_stack:
            recorder = Recorder(upstream_stack.app)
            recorder.drop_after = 2
            async with served_app(recorder) as upstream_url:
                options = {"compute": _handing_off(f"{upstream_url}/v1")}
                async with (
                    chat_stack(tiny_model_dir, redis_url, keys,
                               replica_options=options) as stack,
                    served_app(stack.app) as url, httpx.AsyncClient(timeout=300) as http,
                ):
                    r = await http.post(f"{url}/v1/chat/completions", json={
                        "model": "acme", "messages": QUESTION, "max_tokens": 8,
                        "temperature": 0, "user": "ann", "loraloop": {"strategy": "handoff"}})
    finally:
        delete_prefix(redis_url, prefix)
    assert r.status_code == 200, r.text
    summary = r.json()["loraloop"]
    assert summary["fallback"] == "error" and summary["handed_off"] is False
    text = r.json()["choices"][0]["message"]["content"]
    # The two upstream chunks that arrived, then the local model's continuation.
    partial = "".join(recorder.sent)
    assert partial and text.startswith(partial) and len(text) > len(partial)
