"""feedback.connections: how clients are built, how replies are read, how URLs are logged."""

from __future__ import annotations

import logging

import pytest

from feedback import FeedbackStore, FeedbackUnavailable, InteractionSink, redact_url
from feedback.connections import REDIS_ERRORS, async_client, field, stream_id, sync_client, text
from tests.support.faults import Hangup


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://app:s3cret@cache:6380/1", "rediss://app:***@cache:6380/1"),
    ("redis://app:s3@cr/et?x@cache/0", "redis://app:***@cache/0"),  # unencoded @ / ? in it
    ("redis://s3cret@cache", "redis://***@cache"),  # a lone token may be a password
    ("redis://cache/0?password=s3cret&db=1", "redis://cache/0?password=***&db=1"),
    ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
])
def test_redact_url_hides_the_password_and_keeps_the_rest(url, shown):
    assert redact_url(url) == shown


def test_text_field_and_stream_id_read_bytes_and_str_alike():
    assert (text(b"abc"), text("abc"), text(7), text(None)) == ("abc", "abc", "7", None)
    assert field({b"event": b"x"}, "event") == b"x"
    assert field({"event": "x"}, "event") == "x"
    assert field({b"other": b"x"}, "event") is None
    assert field({b"event": b""}, "event") == b""  # empty is a value, not a miss
    assert stream_id(b"1700000000000-3") == stream_id("1700000000000-3") == (1700000000000, 3)
    assert stream_id("5") == (5, 0)
    assert sorted(["10-0", "9-1", "9-0"], key=stream_id) == ["9-0", "9-1", "10-0"]


async def test_clients_talk_to_a_real_redis(redis_url, keys):
    key = f"{keys.prefix}:probe"
    plain, decoded = sync_client(redis_url), sync_client(redis_url, decode=True)
    try:
        plain.set(key, "v")
        assert (plain.get(key), decoded.get(key)) == (b"v", "v")
    finally:
        plain.close()
        decoded.close()
    client = async_client(redis_url)
    try:
        assert await client.get(key) == b"v"
    finally:
        await client.aclose()


@pytest.fixture
def hangup():
    with Hangup() as server:
        yield server


def test_a_dropped_connection_is_not_retried_behind_the_callers_back(hangup):
    # redis-py's default would reconnect three more times, with backoff, inside one call.
    client = sync_client(hangup.url, timeout_s=0.5)
    with pytest.raises(REDIS_ERRORS):
        client.ping()
    client.close()
    assert hangup.accepted == 1


async def test_the_async_client_does_not_retry_either(hangup):
    client = async_client(hangup.url, timeout_s=0.5)
    with pytest.raises(REDIS_ERRORS):
        await client.ping()
    await client.aclose()
    assert hangup.accepted == 1


async def test_passwords_stay_out_of_errors_and_logs(hangup, keys, caplog, make_interaction):
    caplog.set_level(logging.INFO)
    store = FeedbackStore(hangup.url + "?password=s3cret", keys)
    with pytest.raises(FeedbackUnavailable) as info:
        await store.start()
    await store.aclose()
    assert "127.0.0.1" in str(info.value) and "s3cret" not in str(info.value)
    sink = InteractionSink(hangup.url, keys)
    await sink.start()
    sink.submit(make_interaction())
    await sink.close(timeout=0.5)
    assert "s3cret" not in caplog.text
    assert "***@127.0.0.1" in caplog.text  # the sink did log where it could not write
