"""A running stack for end-to-end tests: embedded Redis, local Ray, the Serve app over HTTP."""

from __future__ import annotations

import socket
import time

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
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

    port = _free_port()
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
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail("the Serve app did not become ready in 120 s")
    yield url
    serve.shutdown()
