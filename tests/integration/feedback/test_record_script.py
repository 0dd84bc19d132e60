"""The record script (feedback.record_script) against a real Redis: what a post costs in
round trips, and what must hold however posts interleave: one event per accepted post,
the right tenant's counter whatever the store guessed, the interaction's adapter version
in the event, a precise error for an interaction it cannot read."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable

import pytest

from feedback import Feedback, FeedbackConfig, FeedbackStore, async_client, errors, hash_user

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def commands_sent(redis_url: str, prefix: str, action: Callable[[], Awaitable]) -> list:
    """The commands clients sent Redis (not those a script ran inside it) that name a key
    under ``prefix`` while ``action`` ran, read with MONITOR up to a marker sent after it."""
    marker = f"end-of-action-{secrets.token_hex(4)}"
    watcher, signal = async_client(redis_url), async_client(redis_url)
    seen: list[str] = []
    try:
        async with watcher.monitor() as monitor:
            await action()
            await signal.echo(marker)
            async for command in monitor.listen():
                if marker in command["command"]:
                    break
                if command["client_type"] != "lua" and prefix in command["command"]:
                    seen.append(command["command"].split()[0].upper())
    finally:
        await watcher.aclose()
        await signal.aclose()
    return seen


async def test_a_post_is_one_round_trip_and_one_with_text_two(
        redis_url, keys, put_interactions, make_interaction):
    interaction = make_interaction()
    await put_interactions(interaction)
    async with FeedbackStore(redis_url, keys) as store:
        await store.record(interaction_id=interaction.id, user="alice", rating="up")  # warm

        def rate(**text):
            return asyncio.wait_for(store.record(
                interaction_id=interaction.id, user="alice", rating="down", **text), 30)

        assert await commands_sent(redis_url, keys.prefix, rate) == ["EVALSHA"]
        with_text = await commands_sent(redis_url, keys.prefix,
                                        lambda: rate(correction="Paris", comment="wrong"))
    # A check before redaction (a refused caller costs none), then the write.
    assert with_text == ["EVALSHA", "EVALSHA"]


async def test_concurrent_duplicates_record_one_event_and_others_each_one(
        redis_url, client, keys, put_interactions, make_interaction):
    """A client retrying while its first post is still in flight: 20 copies of one post
    with one Idempotency-Key, sent at once beside 20 distinct posts, give one event and
    one id for the copies and an event for each distinct post."""
    interactions = [make_interaction(user=hash_user(f"user-{i}")) for i in range(20)]
    await put_interactions(*interactions)
    config = FeedbackConfig(user_limit=1000, tenant_limit=1000)
    async with FeedbackStore(redis_url, keys, config) as store:
        copies = [store.record(interaction_id=interactions[0].id, user="user-0", rating="up",
                               correction="Paris", idempotency_key="once") for _ in range(20)]
        distinct = [store.record(interaction_id=x.id, user=f"user-{i}", rating="down")
                    for i, x in enumerate(interactions)]
        ids = await asyncio.gather(*copies, *distinct)
    events = [Feedback.from_json(f[b"event"]) for _, f in await client.xrange(keys.feedback_stream)]
    assert len(set(ids[:20])) == 1 and len(set(ids[20:])) == 20
    assert sorted(e.id for e in events) == sorted({ids[0], *ids[20:]})
    assert len(events) == 21  # each accepted post exactly once


async def test_each_tenant_is_counted_whichever_tenant_the_store_guessed(
        redis_url, client, keys, put_interactions, make_interaction):
    """The store guesses the tenant's rate counter from its last post; posts alternating
    between tenants must still count against, and be refused by, their own tenant."""
    acme = [make_interaction(tenant="acme", user=hash_user(f"a{i}")) for i in range(3)]
    beta = [make_interaction(tenant="beta", user=hash_user(f"b{i}")) for i in range(2)]
    await put_interactions(*acme, *beta)
    config = FeedbackConfig(user_limit=10, tenant_limit=2)
    async with FeedbackStore(redis_url, keys, config) as store:
        for interaction, user in ((acme[0], "a0"), (beta[0], "b0"), (acme[1], "a1"),
                                  (beta[1], "b1")):
            await store.record(interaction_id=interaction.id, user=user, rating="up")
        with pytest.raises(errors.RateLimited, match="tenant rate limit"):
            await store.record(interaction_id=acme[2].id, user="a2", rating="up")
    events = [Feedback.from_json(f[b"event"]) for _, f in await client.xrange(keys.feedback_stream)]
    assert [e.tenant for e in events] == ["acme", "beta", "acme", "beta"]


async def test_the_event_carries_the_interactions_adapter_version_verbatim(
        redis_url, client, keys, put_interactions, make_interaction):
    version = 'v/1 "quoted" \\ é ✓'  # escapes JSON and Lua's cjson both see
    interaction = make_interaction(adapter_version=version)
    await put_interactions(interaction)
    async with FeedbackStore(redis_url, keys) as store:
        feedback_id = await store.record(interaction_id=interaction.id, user="alice",
                                         rating="down", comment="ok")
        current = await store.current(interaction.id, "alice")
    ((_, fields),) = await client.xrange(keys.feedback_stream)
    stored = Feedback.from_json(fields[b"event"])
    assert (stored.id, stored.adapter_version, stored.tenant, stored.comment) == (
        feedback_id, version, "acme", "ok")
    assert current == stored


async def test_an_interaction_the_script_cannot_read_gets_the_parsers_error(
        redis_url, client, keys, put_interactions, make_interaction):
    newer, broken = make_interaction(), make_interaction()
    await put_interactions(newer, broken)
    raw = json.loads(newer.to_json()) | {"schema_version": 99}
    await client.set(keys.interaction(newer.id), json.dumps(raw))
    await client.set(keys.interaction(broken.id), b"{not json")
    async with FeedbackStore(redis_url, keys) as store:
        with pytest.raises(errors.SchemaVersionError):
            await store.record(interaction_id=newer.id, user="alice", rating="up")
        with pytest.raises(errors.InvalidEvent, match="not valid JSON"):
            await store.record(interaction_id=broken.id, user="alice", rating="up")
    assert await client.exists(keys.feedback_stream) == 0
