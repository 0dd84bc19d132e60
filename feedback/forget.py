"""Deleting one user's data from Redis (``loraloop users forget USER``).

:func:`forget_user` removes, for one (hashed) user: the interaction keys, the
interactions stream entries, the feedback stream entries, the dead letters of
their feedback, their current-rating keys and rate-limit counters. Deleted
stream entries are also acknowledged in every consumer group, so no pending
list keeps pointing at them. It returns what it removed; ``loraloop users forget``
(:mod:`loraloop.forget`) then lists the versions that trained on them, anonymizes the
SQL rows that held them and keeps them out of later rounds' replay::

    summary = await forget_user(client, keys, "alice")
    versions_trained_on(session, user=summary.user, stream_ids=summary.feedback_stream_ids)

Streams are scanned in full (``XRANGE`` pages), keys with ``SCAN``: the cost is
linear in what Redis holds, which is fine for an operator command. Data written
for the user *while* it runs (a request in flight) may survive; run it again
after revoking the user's access.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from feedback.connections import field, text
from feedback.events import hash_user
from feedback.keys import RedisKeys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForgetSummary:
    """What :func:`forget_user` deleted (ids sorted)."""

    user: str  #: the hashed user, as stored (``DatasetMember.user`` in storage)
    interaction_ids: list[str]
    interaction_stream_ids: list[str]
    feedback_stream_ids: list[str]
    dead_letter_stream_ids: list[str]
    keys_deleted: int  #: interaction, current-rating and rate-limit keys

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _event_user(raw: Any, user: str) -> bool:
    """Whether the JSON event ``raw`` belongs to ``user`` (cheap substring test first)."""
    if raw is None:
        return False
    data = raw if isinstance(raw, bytes | bytearray) else str(raw).encode()
    if user.encode() not in data:
        return False
    try:
        event = json.loads(data)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("user") == user


async def _entries(client: aioredis.Redis, stream: str,
                   page: int) -> AsyncIterator[tuple[str, dict[Any, Any]]]:
    start = "-"
    while True:
        batch = await client.xrange(stream, min=start, max="+", count=page)
        for entry_id, fields in batch:
            yield text(entry_id), fields
        if len(batch) < page:
            return
        start = f"({text(batch[-1][0])}"


async def _scan(client: aioredis.Redis, pattern: str, page: int) -> list[str]:
    return [text(k) async for k in client.scan_iter(match=pattern, count=page)]


async def _delete_entries(client: aioredis.Redis, stream: str, ids: list[str],
                          page: int) -> None:
    if not ids:
        return
    try:
        groups = [text(g["name"]) for g in await client.xinfo_groups(stream)]
    except ResponseError:
        groups = []
    for i in range(0, len(ids), page):
        chunk = ids[i:i + page]
        pipe = client.pipeline(transaction=True)
        for group in groups:
            pipe.xack(stream, group, *chunk)
        pipe.xdel(stream, *chunk)
        await pipe.execute()


async def forget_user(client: aioredis.Redis, keys: RedisKeys, user: str, *,
                      hashed: bool = False, page_size: int = 1000) -> ForgetSummary:
    """Delete ``user``'s interactions and feedback from Redis; returns what was removed.

    ``user`` is the raw user name (hashed here with ``hash_user``, as everywhere
    it is stored), or the stored hash itself with ``hashed=True``.
    """
    user_hash = user if hashed else hash_user(user)
    interaction_ids: set[str] = set()
    key_names: set[str] = set()

    interaction_stream_ids = []
    async for entry_id, fields in _entries(client, keys.interactions_stream, page_size):
        if _event_user(field(fields, "event"), user_hash):
            interaction_stream_ids.append(entry_id)
            if field(fields, "id") is not None:
                interaction_ids.add(text(field(fields, "id")))

    candidates = await _scan(client, keys.interaction_pattern(), page_size)
    for i in range(0, len(candidates), page_size):
        chunk = candidates[i:i + page_size]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.get(key)
        for key, raw in zip(chunk, await pipe.execute(), strict=True):
            if _event_user(raw, user_hash):
                key_names.add(key)
                interaction_ids.add(key.rsplit(":", 1)[1])

    feedback_stream_ids = []
    async for entry_id, fields in _entries(client, keys.feedback_stream, page_size):
        owner = field(fields, "user")
        if (text(owner) == user_hash if owner is not None
                else _event_user(field(fields, "event"), user_hash)):
            feedback_stream_ids.append(entry_id)

    dead_letter_ids = []
    async for entry_id, fields in _entries(client, keys.dead_letter_stream, page_size):
        owner = field(fields, "user")
        if (owner is not None and text(owner) == user_hash) or _event_user(
                field(fields, "field:event"), user_hash):
            dead_letter_ids.append(entry_id)

    for interaction_id in interaction_ids:
        try:
            key_names.add(keys.interaction(interaction_id))
        except ValueError:
            continue
    for pattern in (keys.feedback_current_pattern(user_hash),
                    keys.feedback_request_pattern(user_hash),
                    keys.rate_limit_pattern(RedisKeys.USER_FEEDBACK, user_hash)):
        key_names.update(await _scan(client, pattern, page_size))
    deleted = 0
    names = sorted(key_names)
    for i in range(0, len(names), page_size):
        deleted += int(await client.delete(*names[i:i + page_size]))
    await _delete_entries(client, keys.interactions_stream, interaction_stream_ids, page_size)
    await _delete_entries(client, keys.feedback_stream, feedback_stream_ids, page_size)
    await _delete_entries(client, keys.dead_letter_stream, dead_letter_ids, page_size)
    summary = ForgetSummary(
        user=user_hash, interaction_ids=sorted(interaction_ids),
        interaction_stream_ids=interaction_stream_ids, feedback_stream_ids=feedback_stream_ids,
        dead_letter_stream_ids=dead_letter_ids, keys_deleted=deleted)
    log.info("forgot user %s: %d interactions, %d feedback entries, %d dead letters, %d keys",
             user_hash, len(summary.interaction_ids), len(feedback_stream_ids),
             len(dead_letter_ids), deleted)
    return summary
