"""The learner's reader of the feedback stream: a Redis consumer group with at-least-once delivery.

Protocol for a consumer (one :class:`FeedbackSource` per consumer name)::

    source = FeedbackSource(client, keys, consumer="learner-0")
    entries = await source.read()            # reclaimed stale entries first, then new ones
    ...train, commit the dataset (its stream ids) to SQL...
    await source.ack([e.stream_id for e in entries])
    await source.trim()                      # from time to time

* **Reclaim.** An entry read but not acknowledged for ``claim_idle_ms`` (its
  consumer died, or could not parse it) is taken over by whichever consumer
  reads next (``XAUTOCLAIM``), so nothing read is lost.
* **Dead letters.** Each delivery counts (``XPENDING``). An entry reclaimed after
  ``max_deliveries`` deliveries is copied to ``keys.dead_letter_stream`` with the
  reason and its original id and acknowledged, atomically (a Lua script that
  adds it only if the ``XACK`` acknowledged it, so it is dead-lettered once).
  Entries that do not parse (bad JSON, another schema version, over
  ``max_entry_bytes``) are not returned and stay pending, so they take this path;
  the reader goes on with the other entries.
* **Two kinds of entry.** Users' ratings arrive as :class:`FeedbackEntry`; handed-off
  answers the sink logged (``source=distill``, :mod:`feedback.distill`) as
  :class:`~feedback.distill.DistillEntry`. Both share everything above and below.
* **Trimming** (:meth:`FeedbackSource.trim`) removes only entries that every
  consumer group has acknowledged: ``XTRIM MINID`` up to the oldest pending entry,
  or past the last delivered one when nothing is pending.
* **A lost group** (``NOGROUP``: the group destroyed, or Redis restarted from data
  without it) is recreated at once, from id ``0``: every entry still in the stream
  is delivered again. Trimming keeps every entry the lost group had not
  acknowledged, so none is skipped; those a committed dataset already holds are
  acknowledged by the learner without retraining (its ledger).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ResponseError

from feedback.connections import field as entry_field
from feedback.connections import stream_id, text
from feedback.distill import Distillation, DistillEntry, is_distill, parse_distill
from feedback.errors import InvalidEvent
from feedback.events import Feedback, FeedbackEntry
from feedback.interactions import join_interactions
from feedback.keys import RedisKeys
from feedback.rounds import RoundSelection, select_for_round

# Re-exported: the learner's helpers were defined here before feedback.interactions and
# feedback.rounds, and FeedbackEntry before feedback.events.
__all__ = ["DistillEntry", "FeedbackEntry", "FeedbackSource", "RoundSelection", "SourceConfig",
           "SourceEntry", "SourceStats", "join_interactions", "select_for_round"]

log = logging.getLogger(__name__)

#: What the reader delivers: a user's rating, or a handed-off answer to distil.
SourceEntry = FeedbackEntry | DistillEntry

# KEYS[1] feedback stream, KEYS[2] dead-letter stream; ARGV[1] group, ARGV[2] entry id,
# ARGV[3] dead-letter MAXLEN (approximate), ARGV[4..] the dead letter's field/value pairs.
DEAD_LETTER_LUA = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
"""


class SourceConfig(BaseModel):
    """Tuning of a :class:`FeedbackSource`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str = Field(RedisKeys.LEARNER_GROUP, min_length=1, description="Consumer group.")
    batch_size: int = Field(256, ge=1, description="Most entries one read() returns (COUNT).")
    block_ms: int = Field(500, ge=0, description="How long read() waits for new entries "
                          "when none are ready (BLOCK); 0: do not wait. Must stay below the "
                          "client's socket timeout.")
    claim_idle_ms: int = Field(60_000, ge=1, description="Idle time after which another "
                               "consumer's unacknowledged entry is reclaimed (XAUTOCLAIM).")
    max_deliveries: int = Field(5, ge=1, description="Deliveries after which an entry that "
                                "was still not acknowledged goes to the dead-letter stream.")
    max_entry_bytes: int = Field(1 << 20, ge=1024, description="Entries larger than this "
                                 "are poison (never parsed; dead-lettered).")
    dead_letter_maxlen: int = Field(100_000, ge=1, description="Approximate cap of the "
                                    "dead-letter stream.")
    dead_letter_field_bytes: int = Field(64 * 1024, ge=0, description="Each original field "
                                         "is copied into the dead letter up to this size.")


@dataclass
class SourceStats:
    """Counters of one :class:`FeedbackSource` (monotonic)."""

    read: int = 0  #: entries delivered by XREADGROUP
    reclaimed: int = 0  #: entries taken over by XAUTOCLAIM
    acked: int = 0  #: entries acknowledged by ack()
    invalid: int = 0  #: deliveries of entries that did not parse (left pending)
    dead_lettered: int = 0  #: entries moved to the dead-letter stream by this consumer
    groups_recreated: int = 0  #: times the group was found lost (NOGROUP) and recreated
    errors: dict[str, int] = field(default_factory=dict)  #: invalid deliveries by error type

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeedbackSource:
    """Consumer ``consumer`` of the group ``config.group`` on ``keys.feedback_stream``.

    ``client`` is a ``redis.asyncio`` client whose socket timeout (if any) exceeds
    ``block_ms``. Not safe for concurrent use from several tasks; run one source
    per consumer task.
    """

    def __init__(self, client: aioredis.Redis, keys: RedisKeys, consumer: str,
                 config: SourceConfig | None = None) -> None:
        self.client = client
        self.keys = keys
        self.consumer = consumer
        self.config = config or SourceConfig()
        self.stream = keys.feedback_stream
        self.stats = SourceStats()
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        if timeout is not None and self.config.block_ms and timeout * 1000 <= self.config.block_ms:
            raise ValueError(
                f"SourceConfig.block_ms ({self.config.block_ms}) must be below the client's "
                f"socket timeout ({timeout * 1000:.0f} ms), or blocked reads time out: lower "
                "block_ms or give a client with a longer socket_timeout")
        self._dead_letter = client.register_script(DEAD_LETTER_LUA)
        self._cursor = "0-0"
        self._group_ready = False

    async def ensure_group(self, start_id: str = "0") -> bool:
        """Create the group (and the stream) if missing; ``True`` if it was created.

        ``start_id="0"`` makes a new group deliver the whole stream.
        """
        try:
            await self.client.xgroup_create(self.stream, self.config.group, id=start_id,
                                            mkstream=True)
            created = True
            log.info("created consumer group %s on %s", self.config.group, self.stream)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            created = False
        self._group_ready = True
        return created

    async def _recreate_group(self, exc: ResponseError) -> None:
        """Recreate a lost group (from id 0, so nothing unacknowledged is skipped); any
        other Redis error is raised."""
        if "NOGROUP" not in str(exc):
            raise exc
        log.warning("consumer group %s of %s is gone (%s); recreating it from id 0: every "
                    "entry still in the stream is delivered again", self.config.group,
                    self.stream, exc)
        self.stats.groups_recreated += 1
        self._cursor = "0-0"
        await self.ensure_group("0")

    # -- reading ----------------------------------------------------------------------
    async def read(self, count: int | None = None,
                   block_ms: int | None = None) -> list[SourceEntry]:
        """Up to ``count`` entries: stale pending ones first (reclaimed), then new ones.

        Waits up to ``block_ms`` (default ``config.block_ms``) for new entries only
        when nothing was reclaimed. Entries that do not parse are left pending
        (and dead-lettered once they exceed ``max_deliveries``).
        """
        count = count or self.config.batch_size
        block = self.config.block_ms if block_ms is None else block_ms
        if not self._group_ready:
            await self.ensure_group()
        entries = await self.reclaim(count)
        if len(entries) >= count:
            return entries
        try:
            reply = await self.client.xreadgroup(
                self.config.group, self.consumer, {self.stream: ">"},
                count=count - len(entries), block=None if entries or not block else block)
        except ResponseError as exc:
            await self._recreate_group(exc)  # the next read delivers the stream again
            return entries
        for _stream, messages in reply or []:
            for entry_id, fields in messages:
                self.stats.read += 1
                parsed = self._parse(text(entry_id), fields, 1)
                if parsed is not None:
                    entries.append(parsed)
        return entries

    async def reclaim(self, count: int | None = None) -> list[SourceEntry]:
        """Take over entries idle for ``claim_idle_ms`` (any consumer's, this one's too).

        Entries past ``max_deliveries`` are dead-lettered instead of returned.
        """
        count = count or self.config.batch_size
        try:
            reply = await self.client.xautoclaim(
                self.stream, self.config.group, self.consumer,
                min_idle_time=self.config.claim_idle_ms, start_id=self._cursor, count=count)
        except ResponseError as exc:
            await self._recreate_group(exc)
            return []
        self._cursor = text(reply[0])
        claimed = [(text(i), f) for i, f in reply[1] if i is not None]
        if len(claimed) < len(reply[1]):
            await self._ack_deleted()
        if not claimed:
            return []
        self.stats.reclaimed += len(claimed)
        pipe = self.client.pipeline(transaction=False)
        for entry_id, _ in claimed:
            pipe.xpending_range(self.stream, self.config.group, min=entry_id, max=entry_id,
                                count=1)
        counts = await pipe.execute()
        entries: list[SourceEntry] = []
        for (entry_id, fields), pending in zip(claimed, counts, strict=True):
            deliveries = int(pending[0]["times_delivered"]) if pending else 1
            if deliveries > self.config.max_deliveries:
                await self._move_to_dead_letter(entry_id, fields, deliveries)
                continue
            parsed = self._parse(entry_id, fields, deliveries)
            if parsed is not None:
                entries.append(parsed)
        return entries

    async def _ack_deleted(self) -> None:
        """Acknowledge this consumer's pending entries that were deleted (XDEL).

        Redis 6.2's XAUTOCLAIM returns such an entry as ``(None, None)`` and keeps it
        pending (7.x drops it itself); re-reading our own history shows which ids
        they are. ``forget_user`` acknowledges what it deletes, so this is rare.
        """
        reply = await self.client.xreadgroup(self.config.group, self.consumer,
                                             {self.stream: "0"}, count=10_000)
        gone = [text(i) for _s, messages in reply or [] for i, f in messages if not f]
        if gone:
            await self.client.xack(self.stream, self.config.group, *gone)
            log.info("acknowledged %d deleted pending entries of %s", len(gone), self.stream)

    def _parse(self, entry_id: str, fields: dict[Any, Any],
               deliveries: int) -> SourceEntry | None:
        try:
            event = self.parse_fields(fields)
            if isinstance(event, Distillation):
                return DistillEntry(entry_id, event, deliveries)
            return FeedbackEntry(entry_id, event, deliveries)
        except InvalidEvent as exc:
            self.stats.invalid += 1
            name = type(exc).__name__
            self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
            log.warning("feedback entry %s (delivery %d of at most %d) is invalid, left "
                        "pending: %.300s", entry_id, deliveries, self.config.max_deliveries, exc)
            return None

    def parse_fields(self, fields: dict[Any, Any]) -> Feedback | Distillation:
        """The event in a stream entry's fields; ``InvalidEvent`` if it is poison."""
        size = sum(len(k) + len(v) for k, v in fields.items())
        if size > self.config.max_entry_bytes:
            raise InvalidEvent(f"feedback entry is {size} bytes; the limit is "
                               f"{self.config.max_entry_bytes} (SourceConfig.max_entry_bytes)")
        event = entry_field(fields, "event")
        if is_distill(fields):
            return parse_distill(event)
        if event is None:
            raise InvalidEvent("feedback entry has no `event` field")
        return Feedback.from_json(event)

    # -- acknowledging, dead letters, trimming ------------------------------------------
    async def ack(self, stream_ids: Iterable[str]) -> int:
        """Acknowledge entries (after their effect is committed); returns how many were pending."""
        ids = list(stream_ids)
        if not ids:
            return 0
        try:
            done = int(await self.client.xack(self.stream, self.config.group, *ids))
        except ResponseError as exc:
            # Nothing is pending in a recreated group: these come again, and the
            # learner's ledger acknowledges those it committed without retraining.
            await self._recreate_group(exc)
            return 0
        self.stats.acked += done
        return done

    async def touch(self, stream_ids: Iterable[str]) -> int:
        """Reset the idle time of entries this consumer still works on (a heartbeat).

        Call it more often than ``claim_idle_ms`` during long processing (training),
        or another consumer reclaims the entries. Does not count as a delivery.
        """
        ids = list(stream_ids)
        if not ids:
            return 0
        try:
            kept = await self.client.xclaim(self.stream, self.config.group, self.consumer,
                                            min_idle_time=0, message_ids=ids, justid=True)
        except ResponseError as exc:
            await self._recreate_group(exc)  # they are delivered again, to this consumer
            return 0
        return len(kept)

    async def _move_to_dead_letter(self, entry_id: str, fields: dict[Any, Any],
                                   deliveries: int) -> bool:
        try:
            self.parse_fields(fields)
            reason = (f"not acknowledged after {deliveries - 1} deliveries (max_deliveries "
                      f"{self.config.max_deliveries}): its consumers crashed or failed on it")
        except InvalidEvent as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:2000]}"
        limit = self.config.dead_letter_field_bytes
        letter: dict[str, Any] = {
            "original_id": entry_id, "stream": self.stream, "group": self.config.group,
            "reason": reason, "deliveries": deliveries - 1, "consumer": self.consumer,
            "dead_at": f"{time.time():.3f}",
        }
        truncated = []
        for key, value in fields.items():
            name = text(key)
            if len(value) > limit:
                truncated.append(name)
            letter[f"field:{name}"] = value[:limit]
        if truncated:
            letter["truncated"] = ",".join(truncated)
        user = entry_field(fields, "user")
        if user is not None:  # lets forget_user find the user's dead letters
            letter["user"] = user[:128]
        args: list[Any] = [self.config.group, entry_id, self.config.dead_letter_maxlen]
        for key, value in letter.items():
            args.extend((key, value))
        moved = await self._dead_letter(keys=[self.stream, self.keys.dead_letter_stream],
                                        args=args)
        if moved:
            self.stats.dead_lettered += 1
            log.error("feedback entry %s moved to %s: %s", entry_id,
                      self.keys.dead_letter_stream, reason)
        return bool(moved)

    async def pending(self) -> dict[str, Any]:
        """The group's pending summary (``pending``, ``min``, ``max``, ``consumers``)."""
        return await self.client.xpending(self.stream, self.config.group)

    async def trim(self) -> int:
        """Delete entries every group has acknowledged (``XTRIM MINID``); returns how many.

        The bound, per group, is its oldest pending entry, or just past its last
        delivered entry when nothing is pending; the lowest bound over all groups
        wins. Nothing is trimmed while this source's own group is missing (it is
        recreated instead), nor without any group.
        """
        try:
            groups = await self.client.xinfo_groups(self.stream)
        except ResponseError:
            return 0  # no such stream
        if not any(text(g["name"]) == self.config.group for g in groups):
            # Our group is lost: the others' progress says nothing of what it had not
            # acknowledged. Recreate it (from 0) and trim nothing this time.
            await self._recreate_group(ResponseError(f"NOGROUP {self.config.group} is gone"))
            return 0
        bound: tuple[int, int] | None = None
        for group in groups:
            summary = await self.client.xpending(self.stream, group["name"])
            if summary["pending"]:
                candidate = stream_id(summary["min"])
            else:
                ms, seq = stream_id(group["last-delivered-id"])
                candidate = (ms, seq + 1)
            bound = candidate if bound is None else min(bound, candidate)
        if bound is None:
            return 0
        removed = int(await self.client.xtrim(self.stream, minid=f"{bound[0]}-{bound[1]}",
                                              approximate=False))
        if removed:
            log.info("trimmed %d acknowledged entries from %s", removed, self.stream)
        return removed
