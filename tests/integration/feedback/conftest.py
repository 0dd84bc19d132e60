"""Real Redis for the feedback tests: the machine's server if reachable, else an embedded one.

Each test gets its own key prefix (``RedisKeys``), and its keys are deleted
afterwards, so tests never see each other's data on a shared server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from feedback import (
    REDIS_ERRORS,
    EmbeddedRedis,
    Interaction,
    RedisKeys,
    async_client,
    hash_user,
    sync_client,
)

SYSTEM_REDIS_URL = os.environ.get("LORALOOP_REDIS_URL") or "redis://127.0.0.1:6379/0"


def _reachable(url: str) -> bool:
    try:
        client = sync_client(url, timeout_s=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except REDIS_ERRORS:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A shared Redis: the system server when it answers, else an embedded one."""
    if _reachable(SYSTEM_REDIS_URL):
        yield SYSTEM_REDIS_URL
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("shared-redis")) as server:
        yield server.url


@pytest.fixture
def keys(redis_url) -> Iterator[RedisKeys]:
    """A fresh key prefix; every key under it is deleted after the test."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield RedisKeys(prefix)
    client = sync_client(redis_url)
    try:
        stale = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if stale:
            client.delete(*stale)
    finally:
        client.close()


@pytest_asyncio.fixture
async def client(redis_url):
    """An asyncio client of the shared Redis."""
    c = async_client(redis_url)
    yield c
    await c.aclose()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private embedded Redis that the test may stop and restart (same port, same data)."""
    server = EmbeddedRedis(tmp_path).start()
    yield server
    server.stop()


def _make_interaction(**fields) -> Interaction:
    values = dict(
        tenant="acme",
        user=hash_user("alice"),
        model="acme",
        adapter_version="base",
        messages=[{"role": "user", "content": "What is 2 + 2?"}],
        completion="4",
        finish_reason="stop",
        sampling={"temperature": 0.0, "max_tokens": 16},
        prompt_tokens=12,
        completion_tokens=1,
        latency_ms=3.5,
    )
    # The plural forms (n > 1) replace the single-choice ones.
    if "completions" in fields:
        values.pop("completion")
    if "finish_reasons" in fields:
        values.pop("finish_reason")
    values.update(fields)
    return Interaction(**values)


@pytest.fixture
def make_interaction():
    """``make(**fields)``: a valid interaction; keyword arguments override fields."""
    return _make_interaction


@pytest.fixture
def put_interactions(client, keys):
    """``await put(*interactions, ttl_s=3600)``: store interactions as the sink does (SET EX)."""

    async def put(*interactions: Interaction, ttl_s: int = 3600) -> None:
        pipe = client.pipeline(transaction=False)
        for interaction in interactions:
            pipe.set(keys.interaction(interaction.id), interaction.to_json(), ex=ttl_s)
        await pipe.execute()

    return put


@pytest.fixture
def stored_bytes(client, keys):
    """``await stored_bytes()``: every value under the test's prefix, concatenated."""
    return lambda: _stored_values(client, keys.prefix)


async def _stored_values(client, prefix: str) -> bytes:
    chunks: list[bytes] = []
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        kind = (await client.type(key)).decode()
        if kind == "string":
            chunks.append(await client.get(key))
        elif kind == "hash":
            chunks.extend(v for kv in (await client.hgetall(key)).items() for v in kv)
        elif kind == "stream":
            for _id, fields in await client.xrange(key):
                chunks.extend(v for kv in fields.items() for v in kv)
        elif kind in ("set", "list", "zset"):
            raise AssertionError(f"unexpected {kind} {key!r}: extend stored_values")
    return b"\n".join(chunks)
