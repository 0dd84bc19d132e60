"""InteractionSink against a real Redis: exactly-once stream entries, TTL, trimming, counters."""

from __future__ import annotations

import asyncio

import pytest

from feedback import InteractionSink, SinkConfig, get_interaction, read_interactions


def assert_balanced(stats):
    """Every submitted event is accounted for exactly once."""
    assert stats.submitted == (stats.written + stats.duplicates + stats.dropped + stats.failed
                               + stats.invalid + stats.buffered), stats


async def test_events_reach_the_stream_and_the_keyed_store(redis_url, client, keys,
                                                           make_interaction):
    events = [make_interaction(completion=f"answer {i}") for i in range(20)]
    async with InteractionSink(redis_url, keys) as sink:
        for event in events:
            sink.submit(event)
        assert await sink.flush(5)
        stats = sink.stats()
    assert (stats.submitted, stats.written, stats.buffered) == (20, 20, 0)
    assert (stats.dropped, stats.delayed, stats.duplicates, stats.write_errors) == (0, 0, 0, 0)
    assert stats.connected
    entries = await read_interactions(client, keys, count=100)
    assert [e.id for _, e in entries] == [e.id for e in events]
    assert [e for _, e in entries] == events
    assert await get_interaction(client, keys, events[3].id) == events[3]


async def test_same_event_twice_gives_one_stream_entry(redis_url, client, keys,
                                                       make_interaction):
    event = make_interaction()
    async with InteractionSink(redis_url, keys) as sink:
        sink.submit(event)
        assert await sink.flush(5)
        sink.submit(event)  # a retry after a lost reply looks exactly like this
        sink.submit(make_interaction(id=event.id, completion="different text"))
        assert await sink.flush(5)
        stats = sink.stats()
    assert (stats.written, stats.duplicates) == (1, 2)
    assert_balanced(stats)
    assert await client.xlen(keys.interactions_stream) == 1
    # The first write wins; a duplicate never overwrites it.
    assert (await get_interaction(client, keys, event.id)).completion == event.completion


async def test_interaction_key_has_the_configured_ttl(redis_url, client, keys,
                                                      make_interaction):
    event = make_interaction()
    async with InteractionSink(redis_url, keys, SinkConfig(ttl_s=3600)) as sink:
        sink.submit(event)
        assert await sink.flush(5)
    ttl = await client.ttl(keys.interaction(event.id))
    assert 3590 <= ttl <= 3600
    assert await client.ttl(keys.interactions_stream) == -1  # the stream is trimmed, not expired


async def test_stream_trimming_is_approximate_but_bounded(redis_url, client, keys,
                                                          make_interaction):
    maxlen, total = 100, 1500
    node = int((await client.config_get("stream-node-max-entries"))["stream-node-max-entries"])
    config = SinkConfig(maxlen=maxlen, batch_size=50)
    events = [make_interaction() for _ in range(total)]
    async with InteractionSink(redis_url, keys, config) as sink:
        for event in events:
            sink.submit(event)
        assert await sink.flush(20)
        assert sink.stats().written == total
    length = await client.xlen(keys.interactions_stream)
    assert maxlen <= length <= maxlen + node, length
    # What is left is the newest entries, in order.
    entries = await read_interactions(client, keys, count=total)
    assert [e.id for _, e in entries] == [e.id for e in events[-length:]]
    # Trimming the stream does not expire the keyed copies (feedback can still join).
    assert await get_interaction(client, keys, events[0].id) == events[0]


async def test_get_interaction_of_unknown_or_malformed_id_is_none(client, keys):
    assert await get_interaction(client, keys, "0" * 32) is None
    assert await get_interaction(client, keys, "bad id:{x}") is None


async def test_batches_are_bounded_and_order_is_kept(redis_url, client, keys, make_interaction):
    events = [make_interaction() for _ in range(1000)]
    async with InteractionSink(redis_url, keys, SinkConfig(batch_size=7)) as sink:
        for event in events:
            sink.submit(event)
        assert await sink.flush(20)
    entries = await read_interactions(client, keys, count=2000)
    assert [e.id for _, e in entries] == [e.id for e in events]


async def test_submit_never_raises_and_counts_bad_events(redis_url, client, keys,
                                                         make_interaction):
    good = make_interaction()
    async with InteractionSink(redis_url, keys) as sink:
        sink.submit("not an interaction")  # type: ignore[arg-type]
        sink.submit(None)  # type: ignore[arg-type]
        sink.submit(good)
        assert await sink.flush(5)
        stats = sink.stats()
    assert (stats.invalid, stats.written) == (2, 1)
    assert_balanced(stats)
    assert [e.id for _, e in await read_interactions(client, keys)] == [good.id]


async def test_first_submit_in_a_loop_starts_the_writer(redis_url, client, keys,
                                                         make_interaction):
    sink = InteractionSink(redis_url, keys)
    event = make_interaction()
    sink.submit(event)  # no start(): the running loop is used
    assert await sink.flush(5)
    await sink.close()
    assert await get_interaction(client, keys, event.id) == event


async def test_events_submitted_outside_a_loop_wait_for_start(redis_url, client, keys,
                                                              make_interaction):
    sink = InteractionSink(redis_url, keys)
    event = make_interaction()
    await asyncio.get_running_loop().run_in_executor(None, sink.submit, event)
    assert sink.stats().buffered == 1
    await sink.start()
    assert await sink.flush(5)
    await sink.close()
    assert await get_interaction(client, keys, event.id) == event


async def test_close_flushes_then_refuses(redis_url, client, keys, make_interaction):
    sink = InteractionSink(redis_url, keys)
    await sink.start()
    for _ in range(300):
        sink.submit(make_interaction())
    stats = await sink.close(timeout=10)  # no flush() before: close must write them
    assert (stats.written, stats.buffered) == (300, 0)
    sink.submit(make_interaction())
    stats = sink.stats()
    assert (stats.submitted, stats.dropped) == (301, 1)
    assert_balanced(stats)
    assert await client.xlen(keys.interactions_stream) == 300
    with pytest.raises(RuntimeError, match="closed"):
        await sink.start()


async def test_submit_from_another_thread(redis_url, client, keys, make_interaction):
    events = [make_interaction() for _ in range(50)]
    async with InteractionSink(redis_url, keys) as sink:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: [sink.submit(e) for e in events])
        assert await sink.flush(5)
    assert await client.xlen(keys.interactions_stream) == 50


async def test_ping(redis_url, keys):
    sink = InteractionSink(redis_url, keys)
    assert not await sink.ping()  # not started
    async with sink:
        assert await sink.ping()


async def test_submit_only_buffers(redis_url, keys, make_interaction):
    """On the request path, submit appends to the buffer and returns: no Redis round trip,
    no wait for the writer (what one submit costs, in µs, is bench/feedback_ops.py's)."""
    events = [make_interaction() for _ in range(5000)]
    async with InteractionSink(redis_url, keys) as sink:
        assert not asyncio.iscoroutinefunction(sink.submit)
        for n, event in enumerate(events, 1):  # no await in between: the writer cannot run
            sink.submit(event)
            assert sink.stats().buffered == n
        assert sink.stats().written == 0
        assert await sink.flush(20)
        stats = sink.stats()
    assert (stats.written, stats.buffered) == (5000, 0)


def test_config_validates_ranges():
    with pytest.raises(ValueError, match="buffer_size"):
        SinkConfig(buffer_size=0)
    with pytest.raises(ValueError, match="retry_max_s"):
        SinkConfig(retry_initial_s=1.0, retry_max_s=0.5)
    assert SinkConfig().maxlen == 1_000_000 and SinkConfig().ttl_s == 7 * 24 * 3600


async def test_retry_after_a_partial_write_adds_nothing_twice(redis_url, client, keys,
                                                              make_interaction):
    """A batch whose replies were lost is retried: the events already stored are skipped."""
    from feedback.sink import WRITE_INTERACTION_LUA

    events = [make_interaction() for _ in range(10)]
    # The first 4 made it into Redis in an attempt whose replies the sink never saw.
    for event in events[:4]:
        entry = await client.eval(WRITE_INTERACTION_LUA, 2, keys.interaction(event.id),
                                  keys.interactions_stream, event.to_json(), 60, 1000, event.id)
        assert entry is not None
    async with InteractionSink(redis_url, keys) as sink:
        for event in events:
            sink.submit(event)
        assert await sink.flush(5)
        stats = sink.stats()
    assert (stats.written, stats.duplicates) == (6, 4)
    assert [e.id for _, e in await read_interactions(client, keys)] == [e.id for e in events]



async def test_a_factory_is_built_off_the_request_path(redis_url, client, keys,
                                                       make_interaction):
    event = make_interaction()

    def broken():
        raise ValueError("a bug in the caller's event builder")

    async with InteractionSink(redis_url, keys) as sink:
        sink.submit(lambda: event)
        sink.submit(broken)  # must not raise here
        assert await sink.flush(5)
        stats = sink.stats()
    assert (stats.written, stats.invalid) == (1, 1)
    assert await get_interaction(client, keys, event.id) == event
