"""The ledger: 10,000 feedback records from 50 concurrent clients, then two consumers.

Every accepted record is in the stream exactly once, nothing refused is, and
consumers that read and acknowledge everything leave an empty pending list.
"""

from __future__ import annotations

import asyncio
import collections

from feedback import (
    FeedbackConfig,
    FeedbackSource,
    FeedbackStore,
    NotYourInteraction,
    SourceConfig,
    hash_user,
)

CLIENTS = 50
PER_CLIENT = 100  # interactions per client, each rated twice: 50 * 100 * 2 = 10,000


async def test_ten_thousand_concurrent_records_are_each_in_the_stream_once(
        redis_url, client, keys, put_interactions, make_interaction):
    interactions = {
        c: [make_interaction(user=hash_user(f"user-{c}")) for _ in range(PER_CLIENT)]
        for c in range(CLIENTS)
    }
    await put_interactions(*(i for batch in interactions.values() for i in batch))
    # Generous timeouts: this test is about the ledger, not latency. (On a 503 after the
    # script ran, the entry would be in the stream without having been accepted.)
    config = FeedbackConfig(user_limit=10_000, tenant_limit=100_000, socket_timeout_s=10,
                            connect_timeout_s=10)
    accepted: list[str] = []
    refused = 0

    async def run_client(c: int) -> None:
        nonlocal refused
        for n, interaction in enumerate(interactions[c]):
            for rating in ("up", "down"):
                accepted.append(await store.record(
                    interaction_id=interaction.id, user=f"user-{c}", rating=rating,
                    correction=f"answer {n} by user-{c}" if rating == "down" else None))
            if n % 20 == 0:  # someone else's interaction: refused, never written
                other = interactions[(c + 1) % CLIENTS][n]
                try:
                    await store.record(interaction_id=other.id, user=f"user-{c}", rating="up")
                except NotYourInteraction:
                    refused += 1

    async with FeedbackStore(redis_url, keys, config) as store:
        await asyncio.gather(*(run_client(c) for c in range(CLIENTS)))
        sample = interactions[7][42]
        current = await store.current(sample.id, "user-7")
    assert len(accepted) == CLIENTS * PER_CLIENT * 2 == 10_000
    assert len(set(accepted)) == len(accepted) and refused == CLIENTS * PER_CLIENT // 20
    assert (current.rating, current.correction) == (-1, "answer 42 by user-7")
    assert await client.xlen(keys.feedback_stream) == 10_000

    # Two consumers read and acknowledge concurrently.
    seen: list[str] = []

    async def consume(name: str) -> None:
        source = FeedbackSource(client, keys, name, SourceConfig(block_ms=0, batch_size=500))
        while batch := await source.read():
            seen.extend(e.feedback.id for e in batch)
            await source.ack(e.stream_id for e in batch)

    await FeedbackSource(client, keys, "setup").ensure_group()
    await asyncio.gather(consume("c1"), consume("c2"))
    counts = collections.Counter(seen)
    assert set(counts) == set(accepted) and set(counts.values()) == {1}
    summary = await client.xpending(keys.feedback_stream, "learner")
    assert summary["pending"] == 0  # records/s over HTTP: bench/feedback_throughput.py
