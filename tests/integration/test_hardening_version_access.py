"""Which versions a user may pin with ``<tenant>@<version>``, over real HTTP.

A real registry (SQLite) with one version in each status, a real replica
(builtin:tiny, its adapter manager on the registry) and the ingress served by
uvicorn on a loopback port: live, canary and retired versions answer; gated,
rejected and rolled-back ones are refused with a 404 naming the status.
"""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
import uvicorn

import storage
from serving.adapters import AdapterManager
from serving.api import ChatService, IngressConfig, build_api
from serving.engines import EngineConfig, engine_class
from serving.replica import LLMReplica
from tests.support.registry import LocalRegistry
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio(loop_scope="function")
PROMPT = [{"role": "user", "content": "Hi"}]


@pytest.fixture
async def stack(tmp_path, tiny_model_dir, make_adapter):
    registry = LocalRegistry.create(tmp_path)
    ids = {name: registry.register(make_adapter(f"access-{name}", seed=70 + i))
           for i, name in enumerate(("retired", "rolled_back", "gated", "live"))}
    registry.promote(ids["retired"])
    registry.promote(ids["rolled_back"])
    with registry.sessions() as session:
        storage.rollback(session, tenant="acme", actor="test")  # rolled_back; retired is live
    registry.promote(ids["live"])  # ... and retired again
    with registry.sessions() as session:
        rejected = storage.register_candidate(
            session, version_id="f" * 64, tenant="acme", base_model="builtin:tiny",
            artifact_uri="/nowhere", artifact_sha256="f" * 64, lora_config={}, actor="test")
    with registry.sessions() as session:
        storage.mark_rejected(session, version_id=rejected.id, actor="test")
    ids["rejected"] = rejected.id
    with registry.sessions() as session:
        statuses = {n: storage.get_version(session, version_id=v).status for n, v in ids.items()}
    assert statuses == {n: n for n in ids}

    config = EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny", threads=1)
    replica = LLMReplica(engine_cls=engine_class("hf"), engine_config=config,
                         adapters=lambda engine: AdapterManager(engine, registry.view))
    await replica.start()
    service = ChatService(generate=replica.generate, config=IngressConfig(tenants=["acme"]),
                          catalog=registry.view.catalog)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_api(service), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    await until(lambda: server.started or serving.done(), what="uvicorn starts")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        yield client, service, ids
    server.should_exit = True
    await serving
    await replica.shutdown()


async def _chat(client, model):
    return await client.post("/v1/chat/completions",
                             json={"model": model, "messages": PROMPT, "max_tokens": 2})


async def test_users_may_pin_only_live_canary_and_retired_versions(stack):
    client, _, ids = stack
    for name in ("live", "retired"):
        r = await _chat(client, f"acme@{ids[name][:10]}")
        assert r.status_code == 200, (name, r.text)
    for name in ("gated", "rejected", "rolled_back"):
        r = await _chat(client, f"acme@{ids[name][:10]}")
        assert r.status_code == 404, (name, r.text)
        error = r.json()["error"]
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert f"which is {name!r}" in error["message"]
        assert "live, retired" in error["message"].replace("canary, ", "")
    listed = (await client.get("/v1/models")).json()["data"]
    names = {m["id"] for m in listed}
    assert f"acme@{ids['retired']}" in names and f"acme@{ids['gated']}" not in names


async def test_a_tenant_may_allow_more_statuses(stack):
    client, service, ids = stack
    service.router.allow_statuses = {"acme": {"gated"}}
    assert (await _chat(client, f"acme@{ids['gated'][:10]}")).status_code == 200
    r = await _chat(client, f"acme@{ids['rejected'][:10]}")
    assert r.status_code == 404 and "gated" in r.json()["error"]["message"]


async def test_a_version_promoted_later_is_listed_without_a_request_for_it(stack, make_adapter,
                                                                           tmp_path):
    client, _, _ = stack
    before = {m["id"] for m in (await client.get("/v1/models")).json()["data"]}
    registry = LocalRegistry.create(tmp_path)  # the same database, a second handle
    newer = registry.register(make_adapter("access-newer", seed=80))
    registry.promote(newer)
    assert f"acme@{newer}" not in before

    async def listed() -> bool:
        names = {m["id"] for m in (await client.get("/v1/models")).json()["data"]}
        return f"acme@{newer}" in names

    # Every listing used to serve the first read of the registry until some request
    # missed; it now reads again once the last read is older than refresh_every_s.
    await until(listed, what="the new live version in /v1/models", every_s=0.2)
    assert (await _chat(client, f"acme@{newer[:10]}")).status_code == 200
