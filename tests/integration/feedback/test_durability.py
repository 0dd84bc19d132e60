"""Durability of accepted feedback: mode detection, and kill -9 right after record() returns."""

from __future__ import annotations

import pytest

from feedback import (
    DurabilityUnavailable,
    EmbeddedRedis,
    Feedback,
    FeedbackConfig,
    FeedbackStore,
    async_client,
    durability_mode,
)


@pytest.mark.parametrize(("version", "appendonly", "fsync", "strict", "expected"), [
    ("7.2.4", "yes", "everysec", True, ("waitaof", True)),
    ("8.0.0", None, None, True, ("waitaof", True)),  # CONFIG refused; WAITAOF still tells
    ("7.2.4", "yes", "everysec", False, ("appendfsync-everysec (not strict)", False)),
    ("7.0.15", "yes", "always", True, ("appendfsync-always", True)),
    ("6.2.14", "yes", "everysec", True, ("appendfsync-everysec (not strict)", False)),
    ("7.0.15", "no", "everysec", False, ("none: AOF off (not durable)", False)),
    ("7.2.0", "no", "always", True, ("none: AOF off (not durable)", False)),
    ("7.0.15", None, None, False, ("unknown: CONFIG GET refused (not strict)", False)),
])
def test_durability_mode(version, appendonly, fsync, strict, expected):
    assert durability_mode(version, appendonly, fsync, strict) == expected


async def test_embedded_everysec_is_reported_and_strict_is_refused(embedded, keys):
    async with FeedbackStore(embedded.url, keys) as store:
        assert store.server_version.startswith("6.2")
        assert store.durability == "appendfsync-everysec (not strict)"
    store = FeedbackStore(embedded.url, keys, FeedbackConfig(strict_durability=True))
    with pytest.raises(DurabilityUnavailable, match="appendfsync always"):
        await store.start()
    await store.aclose()


async def test_strict_feedback_survives_kill_9_right_after_record(tmp_path, keys,
                                                                  make_interaction):
    server = EmbeddedRedis(tmp_path, appendfsync="always").start()
    try:
        interaction = make_interaction()
        client = async_client(server.url)
        await client.set(keys.interaction(interaction.id), interaction.to_json())
        await client.aclose()
        store = FeedbackStore(server.url, keys, FeedbackConfig(strict_durability=True))
        assert await store.start() == "appendfsync-always"
        ids = [await store.record(interaction_id=interaction.id, user="alice", rating=r)
               for r in ("up", "down", "up")]
        server.kill()  # SIGKILL the moment the last record() returned: no shutdown, no flush
        await store.aclose()
        server.start()  # same port, replays the AOF
        client = async_client(server.url)
        entries = await client.xrange(keys.feedback_stream)
        current = await client.get(keys.feedback_current(interaction.id,
                                                         Feedback.from_json(
                                                             entries[-1][1][b"event"]).user))
        await client.aclose()
        assert [Feedback.from_json(f[b"event"]).id for _, f in entries] == ids
        assert Feedback.from_json(current).id == ids[-1]
    finally:
        server.stop()


async def test_control_without_aof_the_same_kill_loses_the_feedback(embedded, keys,
                                                                    make_interaction):
    # Shows the test above can fail: the data survives because of the AOF, not by luck.
    interaction = make_interaction()
    client = async_client(embedded.url)
    await client.set(keys.interaction(interaction.id), interaction.to_json())
    await client.config_set("appendonly", "no")
    await client.aclose()
    async with FeedbackStore(embedded.url, keys) as store:
        assert store.durability == "none: AOF off (not durable)"
        await store.record(interaction_id=interaction.id, user="alice", rating="up")
        embedded.kill()
    embedded.start()
    client = async_client(embedded.url)
    assert await client.xlen(keys.feedback_stream) == 0
    await client.aclose()
