"""Chat through Ray Serve does not depend on the registry database: a real PostgreSQL made
unreachable (a TCP proxy cut) while the whole app is redeployed (every pod restarting), then
restored. The new replicas answer from the last known routes meanwhile, and converge after."""

from __future__ import annotations

import httpx
import pytest

from tests.support.postgres import migrated_database, port_of
from tests.support.registry import LocalRegistry
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

PROMPT = [{"role": "user", "content": "Hi"}]


def _version(url: str, model: str = "acme") -> str | None:
    try:
        answer = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                            json={"model": model, "messages": PROMPT, "max_tokens": 2})
    except httpx.HTTPError:
        return None
    return answer.headers.get("x-adapter-version") if answer.status_code == 200 else None


@pytest.fixture
def registry(tmp_path):
    with migrated_database() as url:
        yield url, LocalRegistry.create(tmp_path, url=url)


def test_pods_restarted_while_postgres_is_unreachable_serve_and_converge(
        serve_url, registry, tiny_model_dir, make_adapter, tmp_path):
    from ray import serve

    from serving.api import IngressConfig
    from serving.app import RegistryConfig, ServeConfig, build_app
    from serving.engines.base import EngineConfig

    database, writer = registry
    first = writer.register(make_adapter("e2e-outage-first", seed=71))
    writer.promote(first)
    proxy = TcpProxy(port_of(database))
    config = ServeConfig(
        engine="hf",
        engine_config=EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny",
                                   threads=1),
        ingress=IngressConfig(tenants=[]),  # `acme` is known from the registry only
        num_replicas=1,
        replica_cpus=0.25,
        registry=RegistryConfig(database_url=proxy.url_of(database),
                                artifacts_location=str(tmp_path / "artifacts"),
                                cache_dir=str(tmp_path / "cache"), reconcile_interval_s=1),
    )
    url = f"{serve_url}/outage"
    try:
        serve.run(build_app(config), name="outage", route_prefix="/outage")
        wait_until(lambda: _version(url) == first, what="the app serving the live version",
                   timeout_s=180)

        proxy.cut()  # PostgreSQL unreachable; every pod of the app restarts
        serve.run(build_app(config.model_copy(update={"replica_cpus": 0.2})), name="outage",
                  route_prefix="/outage")
        assert _version(url) == first
        assert _version(url, f"acme@{first[:8]}") == first

        second = writer.register(make_adapter("e2e-outage-second", seed=72))
        writer.promote(second)  # while the app cannot see the database
        assert _version(url) == first
        proxy.restore()
        wait_until(lambda: _version(url) == second, what="the app converged on the registry",
                   timeout_s=120)
    finally:
        proxy.cut()
        serve.delete("outage")
