"""Alias-change notifications over a real Redis, and the key-name module."""

from __future__ import annotations

import socket

import pytest

import storage
from feedback.keys import RedisKeys
from storage.alias_events import AliasChangePublisher, AliasChangeSubscriber


def test_key_names_live_under_the_prefix_and_are_validated():
    keys, other = RedisKeys("acme"), RedisKeys("beta")
    names = [
        keys.interactions_stream,
        keys.feedback_stream,
        keys.dead_letter_stream,
        keys.alias_changes_channel,
        keys.interaction("abc123"),
        keys.rate_limit("feedback", "user-1", 28_000_000),
    ]
    assert all(n.startswith("acme:") for n in names)
    assert len(set(names)) == len(names)
    assert not set(names) & {other.interactions_stream, other.alias_changes_channel}
    assert keys.all_streams() == tuple(names[:3])
    with pytest.raises(ValueError, match="prefix 'bad prefix'"):
        RedisKeys("bad prefix")
    with pytest.raises(ValueError, match="interaction id"):
        keys.interaction("a:b")


def test_a_committed_promotion_is_announced_to_subscribers(
    redis_client, redis_prefix, session, tenant, new_version
):
    keys = RedisKeys(redis_prefix)
    publisher = AliasChangePublisher(redis_client, keys)
    a, b = new_version(), new_version()
    with AliasChangeSubscriber(redis_client, keys) as sub:
        storage.promote(session, version_id=a.id, actor="ops", on_alias_change=publisher)
        storage.start_canary(
            session, version_id=b.id, fraction=0.2, actor="ops", on_alias_change=publisher
        )
        with pytest.raises(storage.Conflict):  # refused: nothing is announced
            storage.promote(
                session, version_id=b.id, actor="ops", expected_live=None, on_alias_change=publisher
            )
        first, second, third = sub.get(timeout=5), sub.get(timeout=5), sub.get(timeout=0.5)
    assert first["tenant"] == tenant and first["alias"] == "live"
    assert (first["version_id"], first["previous_version_id"], first["revision"]) == (a.id, None, 1)
    assert first["action"] == "promote" and first["actor"] == "ops" and first["at"]
    assert (second["alias"], second["version_id"], second["fraction"]) == ("canary", b.id, 0.2)
    assert third is None
    assert (publisher.published, publisher.failures) == (2, 0)
    change = storage.AliasChange.from_dict(first)
    assert change.version_id == a.id and change.at.tzinfo is not None


def test_a_subscriber_with_another_prefix_hears_nothing(redis_client, redis_prefix):
    mine, theirs = RedisKeys(redis_prefix), RedisKeys(redis_prefix + "-other")
    with AliasChangeSubscriber(redis_client, theirs) as sub:
        assert AliasChangePublisher(redis_client, mine)({"tenant": "t", "alias": "live"})
        assert sub.get(timeout=0.5) is None


def test_redis_down_does_not_break_the_registry_caller(session, tenant, new_version):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    publisher = AliasChangePublisher.from_url(
        f"redis://127.0.0.1:{port}/0", prefix="down", timeout_s=0.5
    )
    v = new_version()
    alias = storage.promote(session, version_id=v.id, actor="ops", on_alias_change=publisher)
    assert alias.version_id == v.id
    assert storage.get_alias(session, tenant=tenant).version_id == v.id
    assert (publisher.published, publisher.failures) == (0, 1)


def test_malformed_messages_are_skipped(redis_client, redis_prefix):
    keys = RedisKeys(redis_prefix)
    with AliasChangeSubscriber(redis_client, keys) as sub:
        redis_client.publish(keys.alias_changes_channel, b"not json")
        redis_client.publish(keys.alias_changes_channel, b"[1, 2]")
        redis_client.publish(keys.alias_changes_channel, b'{"tenant": "t"}')
        got = [sub.get(timeout=2) for _ in range(3)]
    assert got == [None, None, {"tenant": "t"}]
