"""Fixtures of the feedback tests: interactions, and what a test stored under its prefix.

Redis itself (``redis_url``, ``keys``, ``client``, ``embedded``) comes from
``tests/conftest.py``: the machine's server or an embedded one, a key prefix
per test that is deleted afterwards.
"""

from __future__ import annotations

import pytest

from feedback import Interaction, hash_user


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
