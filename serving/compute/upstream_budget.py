"""The tokens each tenant spent on the upstream model, per window.

A window is ``budget_window_s`` long and aligned to the epoch (window ``i`` covers
``[i * w, (i + 1) * w)``). With a ``redis_url`` the count is the Redis counter
``RedisKeys.upstream_budget(tenant, window)`` (``INCRBY``, expiring a minute after its
window ends), so every replica on the same prefix shares one budget. A Redis that does not
answer never fails a handoff: what cannot be read or written there is counted in this
process instead (and ``fallbacks`` says how often that happened); once Redis answers again
a tenant's spend is the sum of both. Without a ``redis_url`` the count is this process's.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from typing import Any

from feedback.connections import REDIS_ERRORS, async_client, redact_url
from feedback.keys import RedisKeys

log = logging.getLogger(__name__)

#: How long a budget read or write may wait on Redis before the count falls back here.
STORE_TIMEOUT_S = 0.5
_TENANT = re.compile(r"^[^\s:{}]+$")


class UpstreamBudget:
    """Spent tokens per tenant and window; every method is safe within one event loop."""

    def __init__(self, window_s: int, *, redis_url: str = "", prefix: str = "loraloop") -> None:
        self.window_s = window_s
        self.prefix = RedisKeys(prefix).prefix  # validated as every other key prefix
        self.redis_url = redis_url
        #: Reads or writes that Redis did not answer (counted here instead).
        self.fallbacks = 0
        self._redis: Any = None
        self._local: Counter[tuple[str, int]] = Counter()
        self._down = False

    @staticmethod
    def check_tenant(tenant: str) -> str:
        if not _TENANT.match(tenant):
            raise ValueError(f"tenant {tenant!r} cannot name a budget: it must be non-empty "
                             "and free of whitespace, ':' and braces")
        return tenant

    def window(self) -> int:
        """The index of the current window."""
        return int(time.time() // self.window_s)

    def key(self, tenant: str, window: int) -> str:
        """The Redis counter of ``tenant``'s spend in ``window``."""
        return RedisKeys(self.prefix).upstream_budget(self.check_tenant(tenant), window)

    async def spent(self, tenant: str, window: int) -> int:
        """Tokens ``tenant`` spent in ``window``."""
        for stale in [k for k in self._local if k[1] < window]:
            del self._local[stale]
        local = self._local[(tenant, window)]
        if not self.redis_url:
            return local
        try:
            value = await self._store().get(self.key(tenant, window))
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return local
        self._answered()
        return local + int(value or 0)

    async def charge(self, tenant: str, window: int, tokens: int) -> None:
        """Add ``tokens`` to ``tenant``'s spend in ``window``; never raises for Redis."""
        if tokens <= 0:
            return
        if self.redis_url:
            key = self.key(tenant, window)
            # The key dies a minute after its window ends: nobody reads it after that.
            ttl = int((window + 1) * self.window_s - time.time()) + 60
            try:
                async with self._store().pipeline(transaction=True) as pipe:
                    await pipe.incrby(key, tokens).expire(key, max(ttl, 1)).execute()
            except REDIS_ERRORS as exc:
                self._failed(exc)
            else:
                self._answered()
                return
        self._local[(tenant, window)] += tokens

    async def aclose(self) -> None:
        redis, self._redis = self._redis, None
        if redis is not None:
            await redis.aclose()

    def _store(self) -> Any:
        if self._redis is None:
            self._redis = async_client(self.redis_url, timeout_s=STORE_TIMEOUT_S)
        return self._redis

    def _failed(self, exc: BaseException) -> None:
        self.fallbacks += 1
        if not self._down:
            self._down = True
            log.warning("upstream budget store %s unreachable (%s); counting in this "
                        "process until it answers", redact_url(self.redis_url), exc)

    def _answered(self) -> None:
        if self._down:
            self._down = False
            log.info("upstream budget store %s answers again", redact_url(self.redis_url))
