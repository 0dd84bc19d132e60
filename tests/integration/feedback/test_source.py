"""FeedbackSource against a real Redis: read/ack, reclaim from a dead consumer, dead letters,
safe trimming, the interaction join and the per-round selection.

Time since a delivery is not waited for: ``age_pending`` sets the pending entries'
idle time in Redis (XCLAIM IDLE), so "the consumer stopped a minute ago" holds
however loaded the machine is, and "not idle long enough yet" holds too.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from feedback import (
    Feedback,
    FeedbackSource,
    SourceConfig,
    async_client,
    hash_user,
    join_interactions,
    select_for_round,
)
from feedback.keys import RedisKeys
from feedback.source import FeedbackEntry
from tests.support.redis_support import age_pending
from tests.support.waiting import PATIENCE_S, until

CLAIM_IDLE_MS = 60_000
FAST = dict(block_ms=0, claim_idle_ms=CLAIM_IDLE_MS, max_deliveries=3)


async def abandon(client, keys) -> int:
    """Make every pending entry look idle past ``CLAIM_IDLE_MS`` (its consumer stopped)."""
    return await age_pending(client, keys.feedback_stream, RedisKeys.LEARNER_GROUP,
                             idle_ms=CLAIM_IDLE_MS + 1)


def feedback(interaction_id: str = "a" * 32, user: str = "alice", **fields) -> Feedback:
    return Feedback(interaction_id=interaction_id, rating=fields.pop("rating", "up"),
                    user=hash_user(user), tenant="acme", **fields)


async def add(client, keys, *events: Feedback | dict) -> list[str]:
    """XADD entries as the store writes them (or raw field dicts, for poison)."""
    ids = []
    for event in events:
        fields = event if isinstance(event, dict) else {
            "id": event.id, "user": event.user, "interaction_id": event.interaction_id,
            "event": event.to_json()}
        ids.append((await client.xadd(keys.feedback_stream, fields)).decode())
    return ids


async def drain(source: FeedbackSource, *, done) -> list[FeedbackEntry]:
    """read() and ack everything until ``done()`` holds; returns what was read.

    When a read returns nothing, what is still pending (poison: never acked) is
    made to look abandoned, so the next read reclaims it: a delivery more.
    """
    seen: list[FeedbackEntry] = []

    async def step() -> bool:
        if await done():
            return True
        batch = await source.read()
        seen.extend(batch)
        await source.ack(e.stream_id for e in batch)
        if not batch:
            await abandon(source.client, source.keys)
        return False

    await until(step, what="draining the stream")
    return seen


async def test_read_then_ack_empties_the_pending_list(client, keys):
    events = [feedback(rating=r) for r in ("up", "down", 1, -1)]
    ids = await add(client, keys, *events)
    source = FeedbackSource(client, keys, "c1", SourceConfig(**FAST, batch_size=3))
    first = await source.read()
    assert [e.stream_id for e in first] == ids[:3]
    assert [e.feedback for e in first] == events[:3] and {e.deliveries for e in first} == {1}
    assert (await source.pending())["pending"] == 3
    assert await source.ack(e.stream_id for e in first) == 3
    assert [e.stream_id for e in await source.read()] == ids[3:]
    await source.ack(ids[3:])
    assert (await source.pending())["pending"] == 0
    assert await source.read() == []
    assert source.stats.read == 4 and source.stats.acked == 4


async def test_a_dead_consumers_entries_are_reclaimed_by_another(client, keys):
    ids = await add(client, keys, *[feedback() for _ in range(5)])
    dead = FeedbackSource(client, keys, "dead", SourceConfig(**FAST))
    assert len(await dead.read()) == 5  # ...and it dies before acknowledging
    alive = FeedbackSource(client, keys, "alive", SourceConfig(**FAST))
    assert await alive.read() == []  # not idle long enough yet: the owner may still be busy
    assert await abandon(client, keys) == 5
    reclaimed = await alive.read()
    assert [e.stream_id for e in reclaimed] == ids and {e.deliveries for e in reclaimed} == {2}
    pending = await client.xpending_range(keys.feedback_stream, "learner", "-", "+", 10)
    assert {p["consumer"] for p in pending} == {b"alive"}
    await alive.ack(ids)
    assert (await alive.pending())["pending"] == 0 and alive.stats.reclaimed == 5


async def test_poison_entries_go_to_the_dead_letter_stream_and_reading_goes_on(client, keys):
    good = [feedback(comment=f"ok {i}") for i in range(4)]
    bad_schema = json.loads(good[0].to_json()) | {"schema_version": 99}
    poison = [
        {"id": "x", "user": hash_user("alice"), "event": "{not json"},
        {"id": "y", "event": json.dumps(bad_schema)},
        {"id": "z", "event": good[0].to_json(), "junk": "j" * 5_000_000},
    ]
    ids = await add(client, keys, good[0], poison[0], good[1], poison[1], good[2], poison[2],
                    good[3])
    source = FeedbackSource(client, keys, "c1", SourceConfig(**FAST))

    async def dead_lettered():
        return await client.xlen(keys.dead_letter_stream) == 3

    seen = await drain(source, done=dead_lettered)
    assert sorted(e.stream_id for e in seen) == sorted(ids[0::2])  # every good one, once
    assert [e.feedback for e in seen] == good
    letters = {f[b"original_id"].decode(): f
               for _, f in await client.xrange(keys.dead_letter_stream)}
    assert sorted(letters) == sorted(ids[1::2])
    assert b"not valid JSON" in letters[ids[1]][b"reason"]
    assert letters[ids[1]][b"user"] == hash_user("alice").encode()
    assert letters[ids[1]][b"field:event"] == b"{not json"
    assert b"SchemaVersionError" in letters[ids[3]][b"reason"]
    assert b"limit is 1048576" in letters[ids[5]][b"reason"]
    assert letters[ids[5]][b"truncated"] == b"junk"
    assert len(letters[ids[5]][b"field:junk"]) == 64 * 1024
    assert {int(f[b"deliveries"]) for f in letters.values()} == {3}
    assert (await source.pending())["pending"] == 0
    assert source.stats.dead_lettered == 3 and source.stats.invalid == 9  # 3 x 3 deliveries
    # The poison stays in the feedback stream (acknowledged) until trim() removes it.
    assert await source.trim() == 7 and await client.xlen(keys.feedback_stream) == 0


async def test_an_entry_that_keeps_crashing_its_consumer_is_dead_lettered(client, keys):
    [entry_id] = await add(client, keys, feedback())
    source = FeedbackSource(client, keys, "c1", SourceConfig(**FAST))
    deliveries = []
    for _ in range(6):  # read, never ack (the learner crashes on it every time)
        deliveries += [e.deliveries for e in await source.read()]
        await abandon(client, keys)
    assert deliveries == [1, 2, 3]
    [(_, letter)] = await client.xrange(keys.dead_letter_stream)
    assert letter[b"original_id"].decode() == entry_id
    assert b"not acknowledged after 3 deliveries" in letter[b"reason"]


async def test_trim_never_deletes_an_unacknowledged_entry(client, keys):
    ids = await add(client, keys, *[feedback() for _ in range(10)])
    source = FeedbackSource(client, keys, "c1", SourceConfig(**FAST, batch_size=6))
    assert await source.trim() == 0  # no group yet: nothing is known to be consumed
    await source.read()  # delivers ids[0:6]
    await source.ack([ids[0], ids[1], ids[3], ids[4]])  # ids[2] and ids[5] stay pending
    assert await source.trim() == 2
    remaining = [i.decode() for i, _ in await client.xrange(keys.feedback_stream)]
    assert remaining == ids[2:]
    # A second, lagging group holds the trim back too.
    await client.xgroup_create(keys.feedback_stream, "audit", id=ids[3])
    await source.ack([ids[2], ids[5]])
    assert await source.trim() == 2  # up to the audit group's next entry (ids[4])
    await client.xgroup_destroy(keys.feedback_stream, "audit")
    assert await source.trim() == 2  # ids[4], ids[5]: past the last delivered, all acked
    remaining = [i.decode() for i, _ in await client.xrange(keys.feedback_stream)]
    assert remaining == ids[6:]  # never delivered: kept
    assert [e.stream_id for e in await source.read()] == ids[6:]


async def test_join_fetches_each_interaction(client, keys, put_interactions, make_interaction):
    present = make_interaction()
    await put_interactions(present)
    await add(client, keys, feedback(present.id), feedback("b" * 32))
    source = FeedbackSource(client, keys, "c1", SourceConfig(**FAST))
    joined = await join_interactions(client, keys, await source.read())
    assert [(e.feedback.interaction_id, i) for e, i in joined] == [
        (present.id, present), ("b" * 32, None)]
    assert await join_interactions(client, keys, []) == []


def test_select_for_round_keeps_the_newest_rating_and_caps_each_user():
    def entry(n: int, user: str, interaction: str, rating: str = "up") -> FeedbackEntry:
        return FeedbackEntry(f"{n}-0", feedback(interaction * 32, user, rating=rating), 1)

    first, rerated = entry(1, "alice", "a"), entry(5, "alice", "a", "down")
    alice = [entry(n, "alice", c) for n, c in ((2, "b"), (3, "c"), (4, "d"))]
    bob = entry(6, "bob", "a")
    selection = select_for_round([bob, rerated, *alice, first], per_user_cap=3)
    assert selection.superseded == [first]
    assert selection.kept == [*alice, bob]
    assert selection.over_cap == [rerated]


async def test_block_ms_must_stay_below_the_socket_timeout(redis_url, keys):
    short = async_client(redis_url, timeout_s=0.5)
    with pytest.raises(ValueError, match="block_ms"):
        FeedbackSource(short, keys, "c1", SourceConfig(block_ms=1000))
    FeedbackSource(short, keys, "c1", SourceConfig(block_ms=200))
    await short.aclose()


async def test_blocking_read_returns_as_soon_as_an_entry_arrives(redis_url, client, keys):
    # The read may block for 10 minutes; it must come back when the entry arrives, well
    # before that (how soon, in milliseconds, is bench/feedback_ops.py's to measure).
    reader = async_client(redis_url, timeout_s=None)
    name = f"{keys.prefix}-reader"
    await reader.client_setname(name)  # the pool hands this connection to the read
    source = FeedbackSource(reader, keys, "c1", SourceConfig(block_ms=600_000))
    await source.ensure_group()
    assert await source.ensure_group() is False  # idempotent

    async def blocked() -> bool:
        return any(c["name"] == name and "b" in c["flags"] for c in await client.client_list())

    async def add_once_blocked():
        await until(blocked, what="the read blocking on the stream")
        await add(client, keys, feedback())

    writer = asyncio.create_task(add_once_blocked())
    try:
        batch = await asyncio.wait_for(source.read(), PATIENCE_S)
    finally:
        await writer
        await reader.aclose()
    assert len(batch) == 1


async def test_entries_deleted_while_pending_do_not_stay_pending(embedded, keys):
    # Redis 6.2 (the embedded server) reports them as (None, None) from XAUTOCLAIM.
    client = async_client(embedded.url)
    ids = await add(client, keys, *[feedback() for _ in range(3)])
    dead = FeedbackSource(client, keys, "dead", SourceConfig(**FAST))
    assert len(await dead.read()) == 3
    await abandon(client, keys)
    await client.xdel(keys.feedback_stream, ids[1])
    alive = FeedbackSource(client, keys, "alive", SourceConfig(**FAST))
    assert [e.stream_id for e in await alive.read()] == [ids[0], ids[2]]
    await alive.ack([ids[0], ids[2]])
    assert (await alive.pending())["pending"] == 0
    await client.aclose()


async def test_touch_keeps_long_running_entries_from_being_reclaimed(client, keys):
    ids = await add(client, keys, feedback(), feedback())
    busy = FeedbackSource(client, keys, "busy", SourceConfig(**FAST))
    other = FeedbackSource(client, keys, "other", SourceConfig(**FAST))
    assert len(await busy.read()) == 2
    for _ in range(3):  # "training" for longer than claim_idle_ms, with heartbeats
        await abandon(client, keys)  # ...so long that the entries would be reclaimed
        assert await busy.touch(ids) == 2
        assert await other.read() == []
    pending = await client.xpending_range(keys.feedback_stream, "learner", "-", "+", 10)
    assert [(p["consumer"], p["times_delivered"]) for p in pending] == [(b"busy", 1)] * 2
    await abandon(client, keys)  # no heartbeat this time: another consumer takes them over
    assert [(e.stream_id, e.deliveries) for e in await other.read()] == [(i, 2) for i in ids]
