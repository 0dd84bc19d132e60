"""Errors from the replica to the HTTP answer, in one process: the replica yields typed
errors (as it does through Ray), the ingress raises them, the error table answers."""

from __future__ import annotations

import pickle

import httpx
import pytest
import pytest_asyncio

from serving.api import ChatService, IngressConfig, build_api
from serving.auth import ApiKey
from serving.engines import EngineConfig, engine_class
from serving.errors import PromptTooLong
from serving.replica import LLMReplica

VERSION = "abcdef0123456789"
PROMPT = [{"role": "user", "content": "Hi"}]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replica(tiny_model_dir):
    config = EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny", threads=1)
    started = LLMReplica(engine_cls=engine_class("hf"), engine_config=config)
    await started.start()
    yield started
    await started.shutdown()


def _client(replica, **config) -> httpx.AsyncClient:
    service = ChatService(
        generate=replica.generate,
        config=IngressConfig(tenants=["acme"], **config),
        catalog=lambda: {"acme": [VERSION]},
    )
    transport = httpx.ASGITransport(app=build_api(service))
    return httpx.AsyncClient(transport=transport, base_url="http://ingress")


def _long_prompt(replica) -> list[dict]:
    return [{"role": "user", "content": "word " * (replica.engine.max_context + 10)}]


@pytest.mark.asyncio(loop_scope="module")
async def test_the_replica_yields_typed_errors_that_survive_pickling(replica):
    from serving.engines.base import SamplingParams

    payload = {
        "request_id": "r1",
        "messages": _long_prompt(replica),
        "sampling": SamplingParams(max_tokens=4),
        "route": {"tenant": "acme", "alias": "live"},
    }
    [event] = pickle.loads(pickle.dumps(await replica.generate_all(payload)))
    assert isinstance(event, PromptTooLong) and str(replica.engine.max_context) in str(event)


@pytest.mark.asyncio(loop_scope="module")
async def test_engine_errors_become_openai_errors(replica):
    async with _client(replica, retry_after_s=4) as client:
        ok = await client.post(
            "/v1/chat/completions", json={"model": "acme", "messages": PROMPT, "max_tokens": 2}
        )
        assert ok.status_code == 200, ok.text
        long = await client.post(
            "/v1/chat/completions", json={"model": "acme", "messages": _long_prompt(replica)}
        )
        error = long.json()["error"]
        assert long.status_code == 400, long.text
        assert (error["code"], error["param"]) == ("prompt_too_long", "messages")
        # A pinned version on a replica without a registry: it is not loaded here.
        pinned = await client.post(
            "/v1/chat/completions", json={"model": f"acme@{VERSION}", "messages": PROMPT}
        )
        assert pinned.status_code == 503, pinned.text
        assert pinned.json()["error"]["code"] == "adapter_not_loaded"
        assert pinned.headers["retry-after"] == "4"
        streamed = await client.post(
            "/v1/chat/completions",
            json={"model": f"acme@{VERSION}", "messages": PROMPT, "stream": True},
        )
        assert streamed.status_code == 503  # refused before the stream started
        metrics = (await client.get("/metrics")).text
        assert 'loraloop_errors_total{status="503",type="server_error"} 2.0' in metrics


@pytest.mark.asyncio(loop_scope="module")
async def test_auth_and_feedback_refusals_use_the_same_table(replica):
    keys = {"sk-alice": ApiKey(user="alice", tenant="other")}
    async with _client(replica, api_keys=keys) as client:
        body = {"model": "acme", "messages": PROMPT, "max_tokens": 2}
        missing = await client.post("/v1/chat/completions", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "missing_api_key"
        wrong = await client.post(
            "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-alice"}
        )
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "wrong_tenant")
        no_redis = await client.post(
            "/v1/feedback",
            json={"interaction_id": "x" * 32, "rating": "up"},
            headers={"Authorization": "Bearer sk-alice"},
        )
        assert no_redis.status_code == 503 and "retry-after" in no_redis.headers
        assert no_redis.json()["error"]["code"] == "feedback_unavailable"
        bad = await client.post("/v1/feedback", content=b"{nope")
        assert bad.status_code == 400 and "JSON" in bad.json()["error"]["message"]
