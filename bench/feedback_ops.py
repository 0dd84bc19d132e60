"""Feedback side channels, per operation: what the tests check as behaviour, timed here.

- ``submit_us``: one ``InteractionSink.submit`` (the request path's only cost of logging),
  with Redis up and during an outage;
- ``close_down_s``: ``InteractionSink.close(timeout=0.5)`` while Redis is down;
- ``store_fail_ms``: how long ``FeedbackStore.record`` takes to answer "unavailable" when
  Redis is stopped, when nothing listens on the port, and when a server never answers
  (socket timeout 0.3 s, connect timeout 0.2 s);
- ``wake_ms``: from an entry's XADD to the return of a blocked ``FeedbackSource.read``.

Against an embedded Redis of its own (the tests' assertions need no timing):

    python bench/feedback_ops.py [--events 5000] [--json out.json]
"""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import bench_parser, run_script

from feedback import (
    FeedbackConfig,
    FeedbackSource,
    FeedbackStore,
    FeedbackUnavailable,
    InteractionSink,
    SinkConfig,
    async_client,
)
from feedback.events import Feedback, Interaction, hash_user
from feedback.keys import RedisKeys
from feedback.redis_server import EmbeddedRedis
from tests.support.faults import Silent

FAST_RETRY = SinkConfig(retry_initial_s=0.01, retry_max_s=0.1, socket_timeout_s=0.5,
                        connect_timeout_s=0.2, buffer_size=10**6)


def _interaction() -> Interaction:
    return Interaction(tenant="acme", user=hash_user("bench"), model="acme",
                       messages=[{"role": "user", "content": "What is 2 + 2?"}], completion="4")


def _submit_us(sink: InteractionSink, count: int) -> float:
    events = [_interaction() for _ in range(count)]
    started = time.perf_counter()
    for event in events:
        sink.submit(event)
    return round(1e6 * (time.perf_counter() - started) / count, 2)


async def _fail_ms(url: str, config: FeedbackConfig, rounds: int = 5) -> float:
    """Median time for ``record`` to raise FeedbackUnavailable against ``url``."""
    times = []
    for _ in range(rounds):
        store = FeedbackStore(url, RedisKeys("bench"), config)
        started = time.perf_counter()
        try:
            await store.record(interaction_id="a" * 32, user="bench", rating="up")
        except FeedbackUnavailable:
            times.append(time.perf_counter() - started)
        await store.aclose()
    return round(1000 * statistics.median(times), 2)


async def _wake_ms(url: str, rounds: int = 10) -> float:
    """Median time from XADD to a blocked read's return."""
    keys = RedisKeys("bench-wake")
    reader, writer = async_client(url, timeout_s=None), async_client(url)
    source = FeedbackSource(reader, keys, "bench")
    await source.ensure_group("$")
    times = []
    for _ in range(rounds):
        read = asyncio.create_task(source.read(block_ms=10_000))
        await asyncio.sleep(0.1)  # the read is blocked by now (a bench may sleep)
        event = Feedback(interaction_id="a" * 32, rating="up", user=hash_user("b"), tenant="acme")
        added = time.perf_counter()
        await writer.xadd(keys.feedback_stream, {"event": event.to_json()})
        entries = await read
        times.append(time.perf_counter() - added)
        await source.ack(e.stream_id for e in entries)
    await reader.aclose()
    await writer.aclose()
    return round(1000 * statistics.median(times), 3)


async def run(args) -> dict:
    logging.getLogger("feedback").setLevel(logging.CRITICAL)  # the outages are on purpose
    work = Path(tempfile.mkdtemp(prefix="loraloop-bench-"))
    redis = EmbeddedRedis(work).start()
    result: dict = {}
    try:
        sink = InteractionSink(redis.url, RedisKeys("bench"), FAST_RETRY)
        await sink.start()
        result["submit_us"] = {"redis_up": _submit_us(sink, args.events)}
        await sink.flush(60)
        result["wake_ms"] = await _wake_ms(redis.url)

        redis.stop()
        result["submit_us"]["redis_down"] = _submit_us(sink, args.events)
        started = time.perf_counter()
        await sink.close(timeout=0.5)
        result["close_down_s"] = round(time.perf_counter() - started, 3)
        result["store_fail_ms"] = {"redis_stopped": await _fail_ms(redis.url, FeedbackConfig())}
    finally:
        redis.stop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    result["store_fail_ms"]["refused"] = await _fail_ms(refused, FeedbackConfig())
    with Silent() as hung:
        hung_config = FeedbackConfig(socket_timeout_s=0.3, connect_timeout_s=0.2)
        result["store_fail_ms"]["hung"] = await _fail_ms(hung.url, hung_config, rounds=3)
    return result


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    parser.add_argument("--events", type=int, default=5000, help="submits per figure")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script(run, parse_args)
