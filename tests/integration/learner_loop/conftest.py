"""Fixtures of the learner-loop tests: a unique Redis prefix on the system Redis, a SQLite
registry, and learners over both."""

from __future__ import annotations

import os
import secrets

import pytest
import pytest_asyncio
from redis.exceptions import RedisError

from feedback.connections import async_client
from feedback.keys import RedisKeys
from learner.gate import GateConfig
from learner.loop import Learner, LearnerConfig
from storage import ArtifactStore
from storage.db import open_registry

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def keys():
    return RedisKeys(f"learn-{secrets.token_hex(4)}")


@pytest_asyncio.fixture
async def client(keys):
    client = async_client(REDIS_URL)
    try:
        await client.ping()
    except RedisError as exc:  # CI has Redis: a skip there would hide the whole tier
        if os.environ.get("CI"):
            pytest.fail(f"no Redis at {REDIS_URL} in CI (CI is set): {exc}")
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    yield client
    async for key in client.scan_iter(match=f"{keys.prefix}:*"):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
def registry(tmp_path):
    return open_registry(f"sqlite:///{tmp_path / 'registry.db'}")


def learner_for(keys, registry, tmp_path, model_dir, **config) -> Learner:
    """A learner of ``model_dir`` (named builtin:tiny) on the test Redis and ``registry``;
    unless ``config`` says otherwise, a version that passes the gate goes live."""
    config.setdefault("gate", GateConfig(auto_promote="live", threads=1))
    return Learner(redis_url=REDIS_URL, keys=keys, sessions=registry,
                   artifacts=ArtifactStore(tmp_path / "artifacts"), base_model=str(model_dir),
                   base_model_name="builtin:tiny", work_dir=tmp_path / "learner",
                   config=LearnerConfig(**config))
