"""Reading the interaction log back: the stream, one interaction by id, and the
interactions that feedback entries rate (the learner's join).

The sink (:mod:`feedback.sink`) writes each interaction twice: as an entry of
``keys.interactions_stream`` and under ``keys.interaction(id)`` with a TTL. These
readers take a ``redis.asyncio`` client (:func:`feedback.connections.async_client`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis.asyncio as aioredis

from feedback.connections import field, text
from feedback.errors import InvalidEvent
from feedback.events import FeedbackEntry, Interaction
from feedback.keys import RedisKeys

log = logging.getLogger(__name__)


async def read_interactions(client: aioredis.Redis, keys: RedisKeys, *, count: int = 100,
                            start: str = "-", end: str = "+") -> list[tuple[str, Interaction]]:
    """Stream entries ``(entry id, interaction)`` from oldest, at most ``count`` (XRANGE).

    Raises :class:`~feedback.errors.InvalidEvent` for an entry that does not parse.
    """
    entries = await client.xrange(keys.interactions_stream, min=start, max=end, count=count)
    return [(text(entry_id), Interaction.from_json(field(fields, "event") or b""))
            for entry_id, fields in entries]


async def get_interaction(client: aioredis.Redis, keys: RedisKeys,
                          interaction_id: str) -> Interaction | None:
    """The stored interaction with this id, or ``None`` if unknown or expired.

    A malformed id (not 32 hex digits) is simply unknown.
    """
    try:
        key = keys.interaction(interaction_id)
    except ValueError:
        return None
    raw = await client.get(key)
    return None if raw is None else Interaction.from_json(raw)


async def join_interactions(client: aioredis.Redis, keys: RedisKeys,
                            entries: Sequence[FeedbackEntry]
                            ) -> list[tuple[FeedbackEntry, Interaction | None]]:
    """Each entry with its interaction (one pipelined round trip); ``None`` if expired/bad."""
    if not entries:
        return []
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.get(keys.interaction(entry.feedback.interaction_id))
    raws = await pipe.execute()
    joined: list[tuple[FeedbackEntry, Interaction | None]] = []
    for entry, raw in zip(entries, raws, strict=True):
        interaction = None
        if raw is not None:
            try:
                interaction = Interaction.from_json(raw)
            except InvalidEvent as exc:
                log.warning("interaction %s of feedback %s does not parse: %.300s",
                            entry.feedback.interaction_id, entry.stream_id, exc)
        joined.append((entry, interaction))
    return joined
