"""What Redis holds and what the learner has not yet done, sampled for metrics and alerts.

:class:`RedisSampler` reads, every ``interval_s`` seconds in a task of its own
(never on a request's path), the length of every stream, the learner group's
backlog on the feedback stream (entries not yet delivered, and delivered but
not acknowledged), and Redis's used and maximum memory. Best effort: a failed
sample keeps the last good one and is counted; :attr:`RedisSampler.latest`
says when it was taken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from redis.exceptions import ResponseError

from feedback.connections import async_client, redact_url, text
from feedback.keys import RedisKeys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedisSample:
    """One reading of Redis."""

    at: float  #: Unix time of the reading
    used_memory: int  #: bytes (INFO memory used_memory)
    maxmemory: int  #: bytes; 0 means no limit
    streams: dict[str, int] = field(default_factory=dict)  #: stream -> entries (XLEN)
    undelivered: int = 0  #: feedback entries the learner's group has not read yet
    pending: int = 0  #: feedback entries read by the learner and not acknowledged


async def sample_redis(client, keys: RedisKeys,
                       group: str = RedisKeys.LEARNER_GROUP) -> RedisSample:
    """Read one :class:`RedisSample` (a few round trips, one pipeline)."""
    pipe = client.pipeline(transaction=False)
    pipe.info("memory")
    for stream in keys.all_streams():
        pipe.xlen(stream)
    memory, *lengths = await pipe.execute()
    streams = {_stream_name(keys, s): int(n) for s, n in zip(keys.all_streams(), lengths,
                                                             strict=True)}
    undelivered, pending = streams["feedback"], 0  # no group yet: nothing was read
    try:
        groups = await client.xinfo_groups(keys.feedback_stream)
    except ResponseError:  # no stream yet
        groups = []
    for info in groups:
        if text(info.get("name")) == group:
            pending = int(info.get("pending") or 0)
            lag = info.get("lag")
            # lag is unknown (None) after deletions inside the group's range: bound it by
            # the stream's length, the most it can be.
            undelivered = int(lag) if lag is not None else streams["feedback"]
    return RedisSample(at=time.time(), used_memory=int(memory.get("used_memory", 0)),
                       maxmemory=int(memory.get("maxmemory", 0)), streams=streams,
                       undelivered=undelivered, pending=pending)


def _stream_name(keys: RedisKeys, stream: str) -> str:
    return stream.removeprefix(f"{keys.prefix}:stream:")


class RedisSampler:
    """Samples Redis periodically; ``latest`` is the last good :class:`RedisSample`."""

    def __init__(self, redis_url: str, keys: RedisKeys, *, interval_s: float = 15.0,
                 group: str = RedisKeys.LEARNER_GROUP) -> None:
        self.redis_url = redis_url
        self.keys = keys
        self.interval_s = interval_s
        self.group = group
        self.latest: RedisSample | None = None
        self.failures = 0  #: samples that failed (Redis unreachable or erroring)

    async def run(self) -> None:
        """Sample until cancelled (start it as a task)."""
        client = async_client(self.redis_url, timeout_s=2.0, connect_timeout_s=1.0)
        try:
            while True:
                await self.sample_once(client)
                await asyncio.sleep(self.interval_s)
        finally:
            await client.aclose()

    async def sample_once(self, client) -> bool:
        try:
            self.latest = await sample_redis(client, self.keys, self.group)
            return True
        except Exception as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("could not sample Redis at %s for metrics (%s: %s); %d failures",
                            redact_url(self.redis_url), type(exc).__name__, exc, self.failures)
            return False
