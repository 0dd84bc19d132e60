"""Fixtures of the learner-loop tests: a unique Redis prefix on the system Redis."""

from __future__ import annotations

import secrets

import pytest
import pytest_asyncio

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
    except Exception:
        pytest.skip("no Redis at 127.0.0.1:6379")
    yield client
    async for key in client.scan_iter(match=f"{keys.prefix}:*"):
        await client.delete(key)
    await client.aclose()
