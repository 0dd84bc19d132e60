"""Backlog, dead letters, stream lengths and Redis memory reach the ingress's /metrics, from
a periodic sample of a real Redis (never read by the scrape itself)."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from feedback.backlog import RedisSampler
from serving.api import ChatService, IngressConfig, build_api
from serving.metrics import RedisCollector
from tests.support.faults import Hangup
from tests.support.waiting import until


def _values(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def _nothing(_payload):
    yield {}


async def test_backlog_dead_letters_streams_and_memory_are_exported(redis_url, client, keys):
    for i in range(5):
        await client.xadd(keys.feedback_stream, {"n": str(i)})
    await client.xgroup_create(keys.feedback_stream, keys.LEARNER_GROUP, id="0")
    await client.xreadgroup(keys.LEARNER_GROUP, "learner", {keys.feedback_stream: ">"}, count=2)
    await client.xadd(keys.dead_letter_stream, {"n": "poison"})
    await client.xadd(keys.interactions_stream, {"n": "1"})

    sampler = RedisSampler(redis_url, keys, interval_s=0.05)
    service = ChatService(generate=_nothing, config=IngressConfig())
    service.metrics.registry.register(RedisCollector(sampler))
    task = asyncio.get_running_loop().create_task(sampler.run())
    try:
        await until(lambda: sampler.latest is not None, what="a first Redis sample")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_api(service)),
                                     base_url="http://ingress") as http:
            scraped = _values((await http.get("/metrics")).text)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert scraped[("loraloop_feedback_backlog", (("state", "undelivered"),))] == 3
    assert scraped[("loraloop_feedback_backlog", (("state", "pending"),))] == 2
    assert scraped[("loraloop_feedback_dead_letters", ())] == 1
    streams = {labels[0][1]: v for (name, labels), v in scraped.items()
               if name == "loraloop_redis_stream_length"}
    assert streams == {"feedback": 5, "dead-letter": 1, "interactions": 1}
    assert scraped[("loraloop_redis_used_memory_bytes", ())] > 0
    assert ("loraloop_redis_maxmemory_bytes", ()) in scraped
    assert scraped[("loraloop_redis_sample_failures_total", ())] == 0


async def test_an_unreachable_redis_is_counted_and_the_scrape_still_answers(keys):
    with Hangup() as dead:
        sampler = RedisSampler(dead.url, keys, interval_s=0.05)
        task = asyncio.get_running_loop().create_task(sampler.run())
        try:
            await until(lambda: sampler.failures >= 2, what="failed samples counted")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    service = ChatService(generate=_nothing, config=IngressConfig())
    service.metrics.registry.register(RedisCollector(sampler))
    scraped = _values(service.metrics.render().decode())
    assert scraped[("loraloop_redis_sample_failures_total", ())] >= 2
    assert ("loraloop_redis_used_memory_bytes", ()) not in scraped
