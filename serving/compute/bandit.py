"""Which escalation pays, per tenant: a cost-aware bandit rewarded by users' thumbs.

When ``adaptive`` is not confident in its cheap answer it can stop anyway,
spend more samples, think longer, or hand off. Which of these earns thumbs-up
differs by tenant and task (extra compute can even hurt), so it is learned, not
fixed: each arm's value is its thumbs-up rate (Beta(1, 1) prior) minus
``cost_weight`` times its mean relative cost, with a UCB bonus for arms tried
little. The replica records a pull when it decides; the feedback route records
the reward of the interaction's arm once, when its first rating arrives.

State lives in Redis (shared by every replica and the ingress), under
``RedisKeys.bandit`` (``<arm>:pulls|ups|downs|cost``) and
``RedisKeys.bandit_arm`` (which arm answered, for its reward).
Without Redis a replica keeps its own counts and nothing rewards them. Redis
errors never fail a request: they are logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict

from feedback.connections import async_client, text
from feedback.keys import RedisKeys

logger = logging.getLogger(__name__)
ARMS = ("stop", "more", "budget", "handoff")
#: How long an interaction's arm waits for its rating.
ARM_TTL_S = 7 * 24 * 3600


class Bandit:
    """Per-tenant arm statistics, cached from Redis for ``refresh_s``."""

    def __init__(self, redis_url: str = "", keys: RedisKeys | None = None, *,
                 cost_weight: float = 0.5, refresh_s: float = 5.0) -> None:
        self.redis_url, self.keys = redis_url, keys or RedisKeys()
        self.cost_weight, self.refresh_s = cost_weight, refresh_s
        self._stats: dict[str, dict[str, dict[str, float]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(float)))
        self._read_at: dict[str, float] = {}
        self._client = None
        self.errors = 0

    def _redis(self):
        if self._client is None and self.redis_url:
            self._client = async_client(self.redis_url)
        return self._client

    def _key(self, tenant: str) -> str:
        return self.keys.bandit(tenant)

    async def stats(self, tenant: str) -> dict[str, dict[str, float]]:
        """``arm -> {pulls, ups, downs, cost}`` for ``tenant`` (at most ``refresh_s`` old)."""
        client = self._redis()
        if client is not None and time.monotonic() - self._read_at.get(tenant, -1e9) > \
                self.refresh_s:
            try:
                raw = await client.hgetall(self._key(tenant))
                fresh: dict = defaultdict(lambda: defaultdict(float))
                for name, value in raw.items():
                    arm, _, stat = text(name).partition(":")
                    fresh[arm][stat] = float(text(value))
                self._stats[tenant] = fresh
                self._read_at[tenant] = time.monotonic()
            except Exception as exc:  # the cache serves; a request never fails on this
                self.errors += 1
                logger.warning("bandit statistics unreadable from Redis: %r", exc)
        return self._stats[tenant]

    def value(self, stats: dict[str, float], total_pulls: float) -> float:
        """Thumbs-up rate minus weighted cost, plus an exploration bonus."""
        ups, downs, pulls = stats["ups"], stats["downs"], stats["pulls"]
        rate = (ups + 1.0) / (ups + downs + 2.0)
        cost = stats["cost"] / pulls if pulls else 0.0
        bonus = math.sqrt(2.0 * math.log(total_pulls + 2.0) / (pulls + 1.0))
        return rate - self.cost_weight * cost + bonus

    async def choose(self, tenant: str, arms: tuple[str, ...]) -> str:
        """The arm with the best value for ``tenant`` among ``arms`` (ties: cheapest listed)."""
        stats = await self.stats(tenant)
        total = sum(stats[a]["pulls"] for a in arms)
        return max(arms, key=lambda a: (self.value(stats[a], total), -arms.index(a)))

    async def pulled(self, tenant: str, arm: str, interaction_id: str, cost: float) -> None:
        """Record that ``arm`` answered ``interaction_id`` at ``cost`` (relative, 0..)."""
        stats = self._stats[tenant][arm]
        stats["pulls"] += 1
        stats["cost"] += cost
        client = self._redis()
        if client is None:
            return
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hincrby(self._key(tenant), f"{arm}:pulls", 1)
                pipe.hincrbyfloat(self._key(tenant), f"{arm}:cost", cost)
                pipe.set(self.keys.bandit_arm(interaction_id), f"{tenant}|{arm}",
                         ex=ARM_TTL_S)
                await pipe.execute()
        except Exception as exc:
            self.errors += 1
            logger.warning("bandit pull not recorded in Redis: %r", exc)

    async def rewarded(self, interaction_id: str, rating: int) -> tuple[str, str] | None:
        """Credit the arm that answered ``interaction_id`` (once); (tenant, arm) or None."""
        client = self._redis()
        if client is None:
            return None
        try:
            found = await client.getdel(self.keys.bandit_arm(interaction_id))
            if found is None:
                return None
            tenant, _, arm = text(found).partition("|")
            await client.hincrby(self._key(tenant), f"{arm}:{'ups' if rating > 0 else 'downs'}",
                                 1)
            return tenant, arm
        except Exception as exc:
            self.errors += 1
            logger.warning("bandit reward not recorded in Redis: %r", exc)
            return None

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.shield(self._client.aclose())
