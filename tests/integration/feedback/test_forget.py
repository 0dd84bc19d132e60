"""forget_user: a user's interactions, feedback, dead letters and keys leave Redis; others stay."""

from __future__ import annotations

from feedback import (
    FeedbackSource,
    FeedbackStore,
    InteractionSink,
    SourceConfig,
    forget_user,
    hash_user,
)
from feedback.keys import RedisKeys
from tests.support.redis_support import age_pending


async def test_forget_removes_everything_of_one_user_and_nothing_else(
        redis_url, client, keys, make_interaction, stored_bytes):
    alice, bob = hash_user("alice"), hash_user("bob")
    alices = [make_interaction(user=alice) for _ in range(3)]
    bobs = make_interaction(user=bob)
    async with InteractionSink(redis_url, keys) as sink:
        for interaction in (*alices, bobs):
            sink.submit(interaction)
        assert await sink.flush(5)
    # One of alice's entries was poison and is already dead-lettered...
    source = FeedbackSource(client, keys, "c1", SourceConfig(block_ms=0, claim_idle_ms=60_000,
                                                            max_deliveries=1))
    await client.xadd(keys.feedback_stream, {"user": alice, "event": "{broken"})
    assert await source.read() == []
    await age_pending(client, keys.feedback_stream, RedisKeys.LEARNER_GROUP, idle_ms=60_001)
    assert await source.read() == []
    assert await client.xlen(keys.dead_letter_stream) == 1
    async with FeedbackStore(redis_url, keys) as store:
        await store.record(interaction_id=alices[0].id, user="alice", rating="up")
        await store.record(interaction_id=alices[0].id, user="alice", rating="down",
                           correction="better", idempotency_key="tap-1")
        await store.record(interaction_id=alices[1].id, user="alice", rating="up")
        bob_feedback = await store.record(interaction_id=bobs.id, user="bob", rating="up")
    # ...and the learner has read the rest but acknowledged nothing yet.
    assert len(await source.read()) == 4
    feedback_ids = [i.decode() for i, _ in await client.xrange(keys.feedback_stream)]

    summary = await forget_user(client, keys, "alice")

    assert summary.user == alice
    assert summary.interaction_ids == sorted(i.id for i in alices)
    assert len(summary.interaction_stream_ids) == 3
    assert summary.feedback_stream_ids == feedback_ids[:4]  # the poison entry too
    assert len(summary.dead_letter_stream_ids) == 1
    # 3 interaction keys, 2 current ratings, 1 rate-limit counter, 1 idempotency key
    assert summary.keys_deleted == 7
    assert [k async for k in client.scan_iter(match=keys.feedback_request_pattern(alice))] == []
    raw = await stored_bytes()
    assert alice.encode() not in raw
    assert bob.encode() in raw and bobs.id.encode() in raw
    remaining = [f[b"id"].decode() for _, f in await client.xrange(keys.feedback_stream)]
    assert remaining == [bob_feedback]
    # Deleted entries were acknowledged too: the learner's pending list holds only bob's.
    pending = await client.xpending_range(keys.feedback_stream, "learner", "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [feedback_ids[4]]
    assert summary.as_dict()["user"] == alice

    again = await forget_user(client, keys, alice, hashed=True)
    assert (again.interaction_ids, again.feedback_stream_ids, again.keys_deleted) == ([], [], 0)


async def test_forget_on_an_empty_installation(client, keys):
    summary = await forget_user(client, keys, "nobody")
    assert summary.interaction_ids == summary.feedback_stream_ids == []
    assert summary.keys_deleted == 0
