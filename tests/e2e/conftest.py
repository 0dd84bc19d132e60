"""A running stack for end-to-end tests: embedded Redis, local Ray, the Serve app over HTTP.

Every fixture here is shared by the session, and no test may rely on what another left
behind: a test that needs a registry, a version or an app of its own builds it.
"""

from __future__ import annotations

import contextlib

import httpx
import pytest

from tests.support.stack import free_port
from tests.support.waiting import wait_until


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """The stack's own embedded Redis (tests stop and restart it to cause an outage)."""
    from feedback.redis_server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_cluster, redis_server, tiny_model_dir):
    """The Serve app with 2 LLM replicas on a free port; yields its base URL."""
    from ray import serve

    from serving.api import IngressConfig
    from serving.app import ServeConfig, build_app
    from serving.engines.base import EngineConfig

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = ServeConfig(
        engine="hf",
        engine_config=EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny", threads=1),
        ingress=IngressConfig(tenants=["acme"], max_body_bytes=64_000, default_max_tokens=32),
        num_replicas=2,
        redis_url=redis_server.url,
        redis_prefix="e2e",
    )
    serve.run(build_app(config), name="loraloop", route_prefix="/")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        return False

    wait_until(ready, what="the Serve app answering /readyz", timeout_s=120, every_s=0.5)
    yield url
    serve.shutdown()
