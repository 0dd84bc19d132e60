"""A burst of feedback posts over real HTTP with Redis killed (SIGKILL) in the middle, in
strict mode: which of the accepted (202) posts are on disk after Redis restarts.

Used by ``tests/integration/feedback/test_hardening_strict_burst.py`` (accepted must
equal on disk) and ``bench/abuse.py`` (the ``durability`` section reports both).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from feedback.connections import async_client
from feedback.events import Feedback, Interaction, hash_user
from feedback.keys import RedisKeys
from feedback.redis_server import EmbeddedRedis
from feedback.store import FeedbackConfig
from tests.support.served import chat_stack, served_app


def _interaction(i: int) -> Interaction:
    return Interaction(
        tenant="acme", user=hash_user(f"user{i}"), model="acme", adapter_version="base",
        messages=[{"role": "user", "content": f"What is {i} + 1?"}], completion=str(i + 1),
        finish_reason="stop", sampling={"temperature": 0.0, "max_tokens": 8},
        prompt_tokens=8, completion_tokens=1, latency_ms=1.0,
    )


async def strict_burst(model_dir: Path, work: Path, *, posts: int = 1000, kill_after: int = 300,
                       concurrency: int = 16) -> dict:
    """Post ``posts`` ratings (one per interaction and user) with ``concurrency`` clients;
    SIGKILL Redis once ``kill_after`` were accepted; restart it; count what survived."""
    keys = RedisKeys(prefix="burst")
    redis = EmbeddedRedis(work / "redis", appendfsync="always").start()
    interactions = [_interaction(i) for i in range(posts)]
    client = async_client(redis.url)
    pipe = client.pipeline(transaction=False)
    for interaction in interactions:
        pipe.set(keys.interaction(interaction.id), interaction.to_json(), ex=3600)
    await pipe.execute()
    await client.aclose()

    accepted: set[str] = set()
    statuses: dict[int, int] = {}
    killed = asyncio.Event()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(posts):
        queue.put_nowait(i)
    feedback = FeedbackConfig(strict_durability=True, user_limit=10**6, tenant_limit=10**7,
                              address_limit=10**7)
    try:
        async with chat_stack(model_dir, redis.url, keys, feedback=feedback) as stack, \
                served_app(stack.app) as url, \
                httpx.AsyncClient(base_url=url, timeout=60) as http:

            async def poster() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    response = await http.post("/v1/feedback", json={
                        "interaction_id": interactions[i].id, "user": f"user{i}",
                        "rating": "up"})
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code == 202:
                        accepted.add(response.json()["id"])
                        if len(accepted) >= kill_after and not killed.is_set():
                            killed.set()
                            redis.kill()  # SIGKILL mid-burst: no shutdown, no flush

            await asyncio.gather(*(poster() for _ in range(concurrency)))
        redis.start()  # the same port and files: replays the AOF
        client = async_client(redis.url)
        entries = await client.xrange(keys.feedback_stream)
        await client.aclose()
    finally:
        redis.stop()
    on_disk = {Feedback.from_json(fields[b"event"]).id for _, fields in entries}
    return {"posts": posts, "accepted": len(accepted), "accepted_on_disk": len(accepted & on_disk),
            "refused": posts - statuses.get(202, 0), "statuses": statuses,
            "killed": killed.is_set()}
