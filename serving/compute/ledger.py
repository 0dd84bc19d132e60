"""Which strategy answered each interaction, so its thumbs can be credited to it.

The ingress records every answer's strategy (``served``) and, when the first
rating of that interaction arrives (``rated``), credits it: to the per-tenant
statistics behind ``loraloop status`` and ``/metrics`` (thumbs-up rate, compute
and handoffs per strategy and version) and to the adaptive policy's
:class:`~serving.compute.bandit.Bandit` arm. Everything is written off the
request path; a Redis error is logged and counted, never raised.

Keys: ``RedisKeys.compute_stats`` (a hash of ``<version>|<strategy>|<stat>``
counters) and ``RedisKeys.compute_answer`` (kept as long as a rating may arrive).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from feedback.connections import async_client, text
from feedback.keys import RedisKeys
from serving.compute.bandit import ARM_TTL_S, Bandit

logger = logging.getLogger(__name__)


class ComputeLedger:
    """Per-strategy outcomes in Redis, shared by every ingress and the CLI."""

    def __init__(self, redis_url: str, keys: RedisKeys) -> None:
        self.redis_url, self.keys = redis_url, keys
        self.bandit = Bandit(redis_url, keys)
        self._client = None
        self._tasks: set[asyncio.Task] = set()
        self.errors = 0

    def _redis(self):
        if self._client is None:
            self._client = async_client(self.redis_url)
        return self._client

    def _stats_key(self, tenant: str) -> str:
        return self.keys.compute_stats(tenant)

    def served(self, interaction_id: str, tenant: str, version: str,
               record: dict | None, completion_tokens: int = 0) -> None:
        """Note how ``interaction_id`` was answered (returns at once; written in a task).

        A single answer (``record`` None) cost its ``completion_tokens``."""
        record = record or {}
        strategy = record.get("strategy", "single")
        counts = {"requests": 1,
                  "compute_tokens": record.get("compute_tokens", completion_tokens),
                  "handoffs": int(bool(record.get("handed_off"))),
                  "upstream_tokens": record.get("upstream_tokens", 0),
                  "fallbacks": int(bool(record.get("fallback")))}

        async def write() -> None:
            async with self._redis().pipeline(transaction=False) as pipe:
                for stat, value in counts.items():
                    if value:
                        pipe.hincrby(self._stats_key(tenant), f"{version}|{strategy}|{stat}",
                                     int(value))
                pipe.set(self.keys.compute_answer(interaction_id),
                         f"{tenant}|{version}|{strategy}", ex=ARM_TTL_S)
                await pipe.execute()

        self._spawn(write())

    async def rated(self, interaction_id: str, rating: int) -> tuple[str, str] | None:
        """Credit the first rating of ``interaction_id``: its (tenant, strategy), or None."""
        try:
            found = await self._redis().getdel(self.keys.compute_answer(interaction_id))
            if found is None:
                return None
            tenant, version, strategy = text(found).split("|", 2)
            stat = "ups" if rating > 0 else "downs"
            await self._redis().hincrby(self._stats_key(tenant), f"{version}|{strategy}|{stat}",
                                        1)
        except Exception as exc:
            self.errors += 1
            logger.warning("rating not credited to its strategy: %r", exc)
            return None
        try:  # the bandit's reward is its own step: a failure there un-credits nothing
            await self.bandit.rewarded(interaction_id, rating)
        except Exception as exc:
            self.errors += 1
            logger.warning("rating not fed to the adaptive bandit: %r", exc)
        return tenant, strategy

    def credit(self, interaction_id: str, rating: int, counter=None) -> None:
        """:meth:`rated` off the request path; ``counter`` (tenant, strategy, up|down) +1."""

        async def work() -> None:
            credited = await self.rated(interaction_id, rating)
            if credited is not None and counter is not None:
                counter.labels(*credited, "up" if rating > 0 else "down").inc()

        self._spawn(work())

    async def summary(self, tenant: str) -> dict[str, dict[str, dict[str, float]]]:
        """``version -> strategy -> stats`` (with ``thumbs_up_rate`` and per-request means)."""
        raw = await self._redis().hgetall(self._stats_key(tenant))
        table: dict = defaultdict(lambda: defaultdict(dict))
        for name, value in raw.items():
            version, strategy, stat = text(name).split("|", 2)
            table[version][strategy][stat] = int(text(value))
        for strategies in table.values():
            for stats in strategies.values():
                requests = stats.get("requests", 0)
                rated = stats.get("ups", 0) + stats.get("downs", 0)
                stats["thumbs_up_rate"] = round(stats.get("ups", 0) / rated, 4) if rated else None
                for stat in ("compute_tokens", "handoffs", "upstream_tokens", "fallbacks"):
                    if requests:
                        stats[f"{stat}_per_request"] = round(stats.get(stat, 0) / requests, 4)
        return {v: dict(s) for v, s in table.items()}

    def _spawn(self, work) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception as exc:
                self.errors += 1
                logger.warning("compute ledger write failed: %r", exc)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bandit.close()
        if self._client is not None:
            await self._client.aclose()
