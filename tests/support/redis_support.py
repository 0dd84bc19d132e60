"""The Redis the tests use, and what they do to it beyond the product's own calls.

* :func:`reachable_redis_url` — the machine's Redis (``LORALOOP_TEST_REDIS_URL``, default
  ``redis://127.0.0.1:6379/0``) when it answers; ``None`` when it does not (the
  fixtures then start an embedded one);
* :func:`new_prefix` and :func:`delete_prefix` — a key prefix of one test, and its
  removal, so tests sharing a server never see each other's keys;
* :func:`age_pending` — makes a consumer group's pending entries look idle for
  a given time (what a consumer that stopped that long ago leaves behind),
  without waiting that long.

Every client is built by :mod:`feedback.connections`, as the product builds its own.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict

from feedback.connections import REDIS_ERRORS, sync_client, text

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def reachable_redis_url() -> str | None:
    """``LORALOOP_TEST_REDIS_URL`` (default: the machine's Redis) if it answers PING."""
    url = os.environ.get("LORALOOP_TEST_REDIS_URL") or DEFAULT_URL
    try:
        client = sync_client(url, timeout_s=1.0)
        try:
            return url if client.ping() else None
        finally:
            client.close()
    except REDIS_ERRORS:
        return None



def new_prefix(kind: str = "test") -> str:
    """A key prefix no other test uses."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix:``; returns how many there were."""
    client = sync_client(url, timeout_s=10)
    try:
        stale = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if stale:
            client.delete(*stale)
        return len(stale)
    finally:
        client.close()


async def age_pending(client, stream: str, group: str, *, idle_ms: int) -> int:
    """Set the idle time of every pending entry of ``group`` on ``stream`` to ``idle_ms``.

    ``XCLAIM ... IDLE <ms> JUSTID`` to the entry's own consumer: the owner and
    the delivery count stay as they are; only the time since the last delivery
    changes, as if the consumer had been busy (or dead) for ``idle_ms``. Returns
    how many entries were pending.
    """
    pending = await client.xpending_range(stream, group, "-", "+", 100_000)
    owned: dict[str, list[str]] = defaultdict(list)
    for entry in pending:
        owned[text(entry["consumer"])].append(text(entry["message_id"]))
    for consumer, ids in owned.items():
        await client.xclaim(stream, group, consumer, 0, ids, idle=idle_ms, justid=True)
    return len(pending)
