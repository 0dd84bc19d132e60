"""The feedback ledger over real HTTP: every accepted post is in the stream exactly once."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.support.feedback_traffic import answer_each, logged, rate

CLIENTS, POSTS = 50, 10_000


@pytest.fixture(scope="module")
def ledger_url(serve_url, redis_server, tiny_model_dir):
    from ray import serve

    from feedback.store import FeedbackConfig
    from serving.api import IngressConfig
    from serving.app import ServeConfig, build_app
    from serving.engines.base import EngineConfig

    config = ServeConfig(
        engine_config=EngineConfig(model=str(tiny_model_dir), threads=1),
        ingress=IngressConfig(feedback=FeedbackConfig(user_limit=10**6, tenant_limit=10**7,
                                                     address_limit=10**7)),
        redis_url=redis_server.url,
        redis_prefix="ledger",
    )
    serve.run(build_app(config), name="ledger", route_prefix="/ledger")
    yield f"{serve_url}/ledger"
    serve.delete("ledger")


@pytest.mark.timeout(600)
def test_ten_thousand_posts_from_fifty_clients_are_each_in_the_stream_once(
    ledger_url, redis_server
):
    from feedback.connections import async_client, sync_client
    from feedback.keys import RedisKeys
    from feedback.source import FeedbackSource

    async def run():
        async with httpx.AsyncClient(
            timeout=60, limits=httpx.Limits(max_connections=CLIENTS)
        ) as http:
            users = [f"client-{i}" for i in range(CLIENTS)]
            ids = await answer_each(http, ledger_url, users)
            await logged(redis_server.url, "ledger", ids)
            accepted: list[str] = []
            statuses: dict[int, int] = {}

            async def client(i: int):
                for n in range(POSTS // CLIENTS):
                    r = await rate(http, ledger_url, ids[i], users[i], n, comment=f"{i}/{n}")
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 202:
                        accepted.append(r.json()["id"])

            await asyncio.gather(*(client(i) for i in range(CLIENTS)))
            return accepted, statuses

    accepted, statuses = asyncio.run(run())
    assert statuses == {202: POSTS}, statuses
    client = sync_client(redis_server.url, timeout_s=10, decode=True)
    stream = [
        json.loads(fields["event"])["id"] for _, fields in client.xrange("ledger:stream:feedback")
    ]
    assert len(stream) == len(set(stream)) == POSTS
    assert set(stream) == set(accepted)

    async def drain():
        reader = async_client(redis_server.url, timeout_s=10)
        source = FeedbackSource(reader, RedisKeys("ledger"), "ledger-test")
        read = 0
        while True:
            entries = await source.read(count=1000, block_ms=0)
            if not entries:
                break
            read += len(entries)
            await source.ack([e.stream_id for e in entries])
        pending = await reader.xpending("ledger:stream:feedback", RedisKeys.LEARNER_GROUP)
        await reader.aclose()
        return read, pending["pending"]

    read, pending = asyncio.run(drain())
    assert (read, pending) == (POSTS, 0)
