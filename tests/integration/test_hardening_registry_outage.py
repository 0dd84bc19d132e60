"""Chat does not depend on the registry database: a real PostgreSQL made unreachable
(a TCP proxy cut) or hung (a socket that never answers) while replicas and the
ingress's catalog start, serve and converge."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from serving.api import ChatService, IngressConfig, build_api
from serving.app import RegistryConfig, ServeConfig, adapter_factory
from serving.engines import EngineConfig
from serving.engines.hf import HFEngine
from serving.registry_view import RegistryView
from serving.replica import LLMReplica
from serving.route_snapshot import CatalogCache, start_routes
from tests.support.faults import Silent
from tests.support.postgres import migrated_database, port_of
from tests.support.registry import LocalRegistry
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio(loop_scope="function")

PROMPT = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def pg_database():
    with migrated_database() as url:
        yield url


def _registry(url: str, root) -> LocalRegistry:
    """Writes to the registry straight to PostgreSQL (the learner's and operator's side)."""
    return LocalRegistry.create(root, url=url)


def _publish_live(registry: LocalRegistry, adapter_dir) -> str:
    version = registry.register(adapter_dir)
    registry.promote(version)
    return version


async def _replica(config: ServeConfig, name: str) -> LLMReplica:
    replica = LLMReplica(engine_cls=HFEngine, engine_config=config.engine_config,
                         adapters=adapter_factory(config, name))
    await replica.start()
    return replica


def _client(replica: LLMReplica, catalog) -> httpx.AsyncClient:
    # No configured tenant: `acme` is known only from the registry's catalog.
    service = ChatService(generate=replica.generate, config=IngressConfig(tenants=[]),
                          catalog=catalog)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_api(service)),
                             base_url="http://ingress")


async def _chat(client: httpx.AsyncClient, model: str) -> str:
    answer = await client.post("/v1/chat/completions",
                               json={"model": model, "messages": PROMPT, "max_tokens": 2})
    assert answer.status_code == 200, answer.text
    return answer.headers["x-adapter-version"]


async def test_chat_starts_answers_and_converges_while_postgres_is_unreachable(
        pg_database, tiny_model_dir, make_adapter, tmp_path):
    registry = _registry(pg_database, tmp_path)
    first = _publish_live(registry, make_adapter("outage-first", seed=61))
    proxy = TcpProxy(port_of(pg_database))
    engine = EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny", threads=1)

    def config(cache: str) -> ServeConfig:
        return ServeConfig(engine_config=engine, registry=RegistryConfig(
            database_url=proxy.url_of(pg_database),
            artifacts_location=str(tmp_path / "artifacts"), cache_dir=str(tmp_path / cache)))

    replicas: list[LLMReplica] = []
    try:
        # A replica and an ingress catalog that once saw the registry (their snapshots).
        seen = await _replica(config("node"), "seen")
        replicas.append(seen)
        assert await start_routes(seen.adapters) and seen.adapters.routes["acme"].live == first
        assert CatalogCache(RegistryView(**_where(config("node"))).catalog,
                            snapshot_dir=tmp_path / "node").refresh()

        proxy.cut()  # PostgreSQL unreachable from here on
        restarted = await _replica(config("node"), "restarted")
        replicas.append(restarted)
        assert await start_routes(restarted.adapters)  # from the snapshot
        fresh = await _replica(config("empty"), "fresh")  # a node that never saw the registry
        replicas.append(fresh)
        assert not await start_routes(fresh.adapters)  # starts anyway, on base

        catalog = CatalogCache(RegistryView(**_where(config("node"))).catalog,
                               snapshot_dir=tmp_path / "node")
        async with _client(restarted, catalog) as client:
            assert await _chat(client, "acme") == first
            assert await _chat(client, f"acme@{first[:8]}") == first
        async with _client(fresh, catalog) as client:
            assert await _chat(client, "acme") == "base"

        second = _publish_live(registry, make_adapter("outage-second", seed=62))  # while cut
        await restarted.adapters.reconcile()  # the snapshot again, no error
        assert restarted.adapters.routes["acme"].live == first

        proxy.restore()
        for replica in (restarted, fresh):
            await replica.adapters.reconcile()
            assert replica.adapters.routes["acme"].live == second
        async with _client(fresh, catalog) as client:
            task = asyncio.get_running_loop().create_task(catalog.run())
            await until(lambda: second in catalog().get("acme", []),
                        what="the catalog converged on the registry")
            assert await _chat(client, f"acme@{second[:8]}") == second
            task.cancel()
    finally:
        proxy.cut()
        for replica in replicas:
            await replica.shutdown()


def _where(config: ServeConfig) -> dict:
    return config.registry.model_dump(
        include={"database_url", "artifacts_location", "cache_dir"})


async def test_catalog_reads_never_run_on_the_event_loop(tiny_model_dir, tmp_path):
    """A hung database (it accepts connections, never answers) does not hold chat."""
    engine = EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny", threads=1)
    replica = LLMReplica(engine_cls=HFEngine, engine_config=engine)
    await replica.start()
    readers: list[int] = []
    with Silent() as hung:
        view = RegistryView(database_url=f"postgresql+psycopg://u@127.0.0.1:{hung.port}/x",
                            artifacts_location=str(tmp_path / "a"), cache_dir=tmp_path / "c")

        def read():
            readers.append(threading.get_ident())
            return view.catalog()

        catalog = CatalogCache(read, refresh_s=0.05)
        task = asyncio.get_running_loop().create_task(catalog.run())
        try:
            service = ChatService(generate=replica.generate,
                                  config=IngressConfig(tenants=["acme"]), catalog=catalog)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_api(service)),
                                         base_url="http://ingress") as client:
                await until(lambda: hung.accepted, what="the catalog read reached the database")
                for model in ("acme", "nobody", "acme"):  # a miss asks the registry again
                    answer = await client.post(
                        "/v1/chat/completions",
                        json={"model": model, "messages": PROMPT, "max_tokens": 2})
                    assert answer.status_code == (200 if model == "acme" else 404), answer.text
            assert readers and threading.get_ident() not in readers
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await replica.shutdown()
