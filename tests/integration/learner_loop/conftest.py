"""Fixtures of the learner-loop tests: a unique Redis prefix on the system Redis."""

from __future__ import annotations

import os
import secrets

import pytest
import pytest_asyncio
from redis.exceptions import RedisError

from feedback.keys import RedisKeys
from feedback.sink import async_client

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
