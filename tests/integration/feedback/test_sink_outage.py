"""InteractionSink through a Redis outage (an embedded server stopped and restarted).

While Redis is down ``submit`` only buffers (it never waits on Redis), events
wait in the bounded buffer, and when Redis returns each kept event lands in
the stream exactly once; events beyond the buffer are dropped and counted
exactly. What submit and close cost in time during an outage is measured by
``bench/feedback_ops.py``.
"""

from __future__ import annotations

import asyncio

from feedback import InteractionSink, SinkConfig, async_client, read_interactions
from tests.support.waiting import PATIENCE_S, until

FAST_RETRY = dict(retry_initial_s=0.01, retry_max_s=0.1, socket_timeout_s=0.5,
                  connect_timeout_s=0.2)


async def wait_for(predicate) -> None:
    await until(predicate, what="the sink's counters")


async def stream_ids(url, keys) -> list[str]:
    client = async_client(url)
    try:
        return [e.id for _, e in await read_interactions(client, keys, count=100_000)]
    finally:
        await client.aclose()


async def test_outage_buffers_then_delivers_each_event_exactly_once(embedded, keys,
                                                                    make_interaction):
    sink = InteractionSink(embedded.url, keys, SinkConfig(**FAST_RETRY))
    await sink.start()
    before = [make_interaction() for _ in range(5)]
    for event in before:
        sink.submit(event)
    assert await sink.flush(5)

    embedded.stop()
    during = [make_interaction() for _ in range(200)]
    for event in during:
        buffered = sink.stats().buffered
        sink.submit(event)  # synchronous: it cannot wait on Redis, only buffer
        assert sink.stats().buffered == buffered + 1
        await asyncio.sleep(0)  # let the writer run (and fail) between submissions
    errors_after_last_submit = sink.stats().write_errors
    await wait_for(lambda: sink.stats().write_errors > errors_after_last_submit + 2)
    stats = sink.stats()
    assert (stats.buffered, stats.written, stats.dropped) == (200, 5, 0)
    assert not stats.connected

    embedded.start()  # same port, same AOF
    assert await sink.flush(10)
    stats = await sink.close()
    assert (stats.submitted, stats.written, stats.delayed) == (205, 205, 200)
    assert (stats.dropped, stats.duplicates, stats.failed, stats.buffered) == (0, 0, 0, 0)
    assert stats.write_errors >= 3 and stats.connected
    ids = await stream_ids(embedded.url, keys)
    assert ids == [e.id for e in before + during]  # all, once each, in order


async def test_events_submitted_while_redis_is_down_count_as_delayed(embedded, keys,
                                                                    make_interaction):
    """Even those the writer never failed on: Redis came back during its backoff."""
    sink = InteractionSink(embedded.url, keys, SinkConfig(retry_initial_s=3, retry_max_s=3,
                                                          socket_timeout_s=0.5,
                                                          connect_timeout_s=0.2))
    await sink.start()
    embedded.stop()
    events = [make_interaction() for _ in range(4)]
    sink.submit(events[0])
    await wait_for(lambda: sink.stats().write_errors == 1)  # then 3 s of backoff
    for event in events[1:]:
        sink.submit(event)
    embedded.start()
    assert await sink.flush(30)
    stats = await sink.close()
    assert (stats.written, stats.delayed) == (4, 4), stats
    assert await stream_ids(embedded.url, keys) == [e.id for e in events]


async def test_full_buffer_drops_exactly_the_excess(embedded, keys, make_interaction):
    sink = InteractionSink(embedded.url, keys, SinkConfig(buffer_size=10, batch_size=4,
                                                          **FAST_RETRY))
    await sink.start()
    embedded.stop()
    events = [make_interaction() for _ in range(25)]
    for i, event in enumerate(events):
        sink.submit(event)
        if i % 3 == 0:
            await asyncio.sleep(0.02)  # the writer takes batches in flight meanwhile
    stats = sink.stats()
    assert (stats.submitted, stats.dropped, stats.buffered) == (25, 15, 10)

    embedded.start()
    assert await sink.flush(10)
    stats = await sink.close()
    assert (stats.written, stats.dropped, stats.delayed, stats.buffered) == (10, 15, 10, 0)
    assert await stream_ids(embedded.url, keys) == [e.id for e in events[:10]]


async def test_redis_down_from_the_start(embedded, keys, make_interaction):
    embedded.stop()
    sink = InteractionSink(embedded.url, keys, SinkConfig(**FAST_RETRY))
    await sink.start()
    assert not await sink.ping(0.5)
    events = [make_interaction() for _ in range(3)]
    for event in events:
        sink.submit(event)
    await wait_for(lambda: sink.stats().write_errors >= 2)
    embedded.start()
    assert await sink.flush(10)
    assert await sink.ping()
    await sink.close()
    assert await stream_ids(embedded.url, keys) == [e.id for e in events]


async def test_close_while_redis_is_down_is_bounded(embedded, keys, make_interaction):
    sink = InteractionSink(embedded.url, keys, SinkConfig(**FAST_RETRY))
    await sink.start()
    embedded.stop()
    for _ in range(7):
        sink.submit(make_interaction())
    # The writer retries for as long as Redis is down; close gives up at its timeout.
    stats = await asyncio.wait_for(sink.close(timeout=0.5), PATIENCE_S)
    assert (stats.buffered, stats.written) == (7, 0)


async def test_crash_with_a_write_in_flight_never_duplicates(embedded, keys, make_interaction):
    """Events already stored before a failure are recognised on retry, not re-added."""
    sink = InteractionSink(embedded.url, keys, SinkConfig(**FAST_RETRY))
    await sink.start()
    events = [make_interaction() for _ in range(50)]
    for event in events:
        sink.submit(event)
    # The writer may be mid-batch: some events stored, their replies never read.
    await asyncio.sleep(0)
    embedded.kill()
    embedded.start()
    more = [make_interaction() for _ in range(50)]
    for event in more:
        sink.submit(event)
    assert await sink.flush(10)
    stats = await sink.close()
    ids = await stream_ids(embedded.url, keys)
    assert len(ids) == len(set(ids))
    # Whatever the kill lost from the AOF (everysec) is gone from Redis, but nothing is doubled
    # and every event submitted after the restart is there.
    assert set(e.id for e in more) <= set(ids)
    assert stats.buffered == 0 and stats.dropped == 0


async def test_lost_script_cache_is_reloaded(embedded, keys, make_interaction):
    """SCRIPT FLUSH (what a restart does to the cache) costs no error and no event."""
    client = async_client(embedded.url)
    async with InteractionSink(embedded.url, keys) as sink:
        sink.submit(make_interaction())
        assert await sink.flush(5)
        await client.script_flush()
        sink.submit(make_interaction())
        assert await sink.flush(5)
        stats = sink.stats()
    await client.aclose()
    assert (stats.written, stats.write_errors) == (2, 0)
