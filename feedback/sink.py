"""The interaction sink: logging of served answers that never blocks or fails a request.

* :meth:`InteractionSink.submit` is synchronous, O(1) and never raises: it
  appends the event to a bounded in-memory buffer, or drops and counts it
  (``dropped``) when the buffer is full. Nothing on the request path waits on Redis.
* A background asyncio task drains the buffer in batches, one pipeline round
  trip per batch. A Lua script writes each event atomically and idempotently:
  ``SET <interaction key> <json> NX EX <ttl>`` and, only if that created the
  key, ``XADD <stream> MAXLEN ~ <maxlen>``; a retry after a lost reply never
  adds a second stream entry, so every event kept in the buffer appears in the
  stream exactly once. A handed-off answer also gets its distillation entry in the
  feedback stream (:mod:`feedback.distill`) in the same script: both land or neither.
* While Redis is unreachable, events stay buffered; the writer retries with
  capped exponential backoff and writes them when Redis returns (``delayed``).
  :meth:`InteractionSink.close` flushes what it can in the time it is given.

Counters (:meth:`InteractionSink.stats`) satisfy, at any moment::

    submitted == written + duplicates + dropped + failed + invalid + buffered
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, model_validator
from redis.exceptions import NoScriptError

from feedback.bounds import StoredBounds, bound_interaction
from feedback.connections import async_client, redact_url
from feedback.distill import Distillation
from feedback.events import Interaction
from feedback.interactions import get_interaction, read_interactions
from feedback.keys import RedisKeys

# Re-exported: they were defined here before feedback.connections / feedback.interactions.
__all__ = ["InteractionSink", "SinkConfig", "SinkStats", "async_client", "get_interaction",
           "read_interactions"]

log = logging.getLogger(__name__)

# KEYS[1] interaction key, KEYS[2] interactions stream, KEYS[3] feedback stream; ARGV[1]
# event JSON, ARGV[2] TTL s, ARGV[3] stream MAXLEN (approximate), ARGV[4] id, ARGV[5..] the
# distillation entry's fields and values (handed off only). Returns the new entry id, or nil
# when the interaction was already stored. Scripts are not rolled back: check, then write.
WRITE_INTERACTION_LUA = """
local kind = #ARGV > 4 and redis.call('TYPE', KEYS[3])['ok'] or 'none'
if kind ~= 'stream' and kind ~= 'none' then return redis.error_reply('WRONGTYPE ' .. KEYS[3]) end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return false end
if #ARGV > 4 then redis.call('XADD', KEYS[3], '*', unpack(ARGV, 5)) end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'id', ARGV[4], 'event', ARGV[1])
"""


class SinkConfig(BaseModel):
    """Tuning of an :class:`InteractionSink`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    buffer_size: int = Field(10_000, ge=1, description="Events held in memory while waiting "
                             "for Redis; beyond it new events are dropped (counted).")
    batch_size: int = Field(256, ge=1, description="Most events written in one round trip.")
    maxlen: int = Field(1_000_000, ge=1, description="Approximate cap of the interactions "
                        "stream (XADD MAXLEN ~).")
    ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Expiry of the per-interaction key: "
                       "how long feedback can refer to the interaction.")
    retry_initial_s: float = Field(0.05, gt=0, description="First backoff after a failure.")
    retry_max_s: float = Field(2.0, gt=0, description="Cap of the exponential backoff.")
    socket_timeout_s: float = Field(1.0, gt=0, description="Socket read/write timeout.")
    connect_timeout_s: float = Field(0.5, gt=0, description="Connect timeout.")
    max_event_errors: int = Field(10, ge=1, description="Error replies to one event (not "
                                  "outages) before it is given up and counted in `failed`.")
    bounds: StoredBounds = Field(default_factory=StoredBounds, description="Caps of each "
                                 "stored interaction's texts (feedback.bounds).")

    @model_validator(mode="after")
    def _backoff_order(self) -> SinkConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(f"retry_max_s ({self.retry_max_s}) must be >= retry_initial_s "
                             f"({self.retry_initial_s})")
        return self


@dataclass(frozen=True)
class SinkStats:
    """A snapshot of the sink's counters (monotonic except ``buffered`` and ``connected``)."""

    submitted: int  #: events given to submit()
    written: int  #: events this sink added to the stream
    distilled: int  #: of those, handed-off answers written with their distillation entry
    duplicates: int  #: events found already stored (same id again, or a retry of a lost reply)
    dropped: int  #: events refused because the buffer was full (or the sink was closed)
    delayed: int  #: written or duplicates that waited for Redis: submitted while it was
    #:                 unreachable, or through at least one failed write
    failed: int  #: events given up after max_event_errors Redis error replies
    invalid: int  #: events that could not be serialised
    write_errors: int  #: failed write attempts (outages, timeouts, error replies)
    buffered: int  #: events in memory now, including the batch in flight
    connected: bool  #: the last Redis round trip succeeded

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Pending:
    event: Any  # an Interaction, or a callable building one
    mark: int  # write_errors at submit, less one if Redis was down: a failure after it
    #            makes the event "delayed"
    json: str | None = None
    key: str | None = None
    distill: list[str] | None = None  # the distillation entry's fields (handed off only)
    errors: int = 0


class InteractionSink:
    """Best-effort, bounded, counted logging of :class:`Interaction` events to Redis.

    Use from one asyncio event loop::

        sink = InteractionSink(redis_url, RedisKeys(prefix), SinkConfig())
        await sink.start()
        sink.submit(interaction)          # on the request path: never waits, never raises
        ...
        await sink.close(timeout=5.0)     # flush what Redis takes in 5 s, then stop

    ``submit`` may also be called from other threads (the wake-up is thread
    safe); counters are exact when it is called from the loop's thread.
    """

    def __init__(self, redis_url: str, keys: RedisKeys, config: SinkConfig | None = None,
                 *, redact: Callable[[str], str] | None = None) -> None:
        """``redact`` is applied to the stored ``stop`` strings (messages come redacted)."""
        self.redis_url = redis_url
        self._redact = redact
        self.keys = keys
        self.config = config or SinkConfig()
        self._where = redact_url(redis_url)
        self._buffer: deque[_Pending] = deque()
        self._inflight = 0
        self._client: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False
        self._sha: str | None = None
        self._connected = False
        self._submitted = self._written = self._duplicates = self._dropped = self._distilled = 0
        self._delayed = self._failed = self._invalid = self._write_errors = 0

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Create the Redis client and start the writer task (idempotent).

        Does not need Redis to be up: events are buffered until it is. The first
        :meth:`submit` from inside a running event loop also starts the writer.
        """
        if self._closed:
            raise RuntimeError("this InteractionSink was closed; create a new one")
        self._start_on(asyncio.get_running_loop())

    def _start_on(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is not None:
            return
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._client = async_client(self.redis_url, timeout_s=self.config.socket_timeout_s,
                                    connect_timeout_s=self.config.connect_timeout_s)
        self._task = loop.create_task(self._run(), name="interaction-sink-writer")

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every buffered event has left the buffer; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while self._buffer or self._inflight:
            if time.monotonic() >= deadline or self._task is None or self._task.done():
                return False
            await asyncio.sleep(0.005)
        return True

    async def close(self, timeout: float = 5.0) -> SinkStats:
        """Stop accepting events, write what Redis takes within ``timeout`` s, then stop.

        Events still buffered at the deadline are lost (logged; ``buffered`` in the
        returned stats says how many).
        """
        self._closed = True
        if self._task is not None:
            assert self._wake is not None
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        stats = self.stats()
        if stats.buffered:
            log.error("interaction sink closed with %d events not written to %s (Redis "
                      "unreachable); they are lost", stats.buffered, self._where)
        return stats

    async def __aenter__(self) -> InteractionSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- request path -----------------------------------------------------------------
    def _known_down(self) -> bool:
        """The last write failed to reach Redis (not merely: none was tried yet)."""
        return self._write_errors > 0 and not self._connected

    def submit(self, event: Interaction | Callable[[], Interaction]) -> None:
        """Queue ``event`` for writing. O(1); never blocks, never raises.

        ``event`` may be a zero-argument callable returning the Interaction: it is
        then built by the writer, off the request path (its failure counts as
        ``invalid``, never reaching the caller).
        """
        try:
            self._submitted += 1
            if self._closed or len(self._buffer) + self._inflight >= self.config.buffer_size:
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    log.warning("interaction sink %s: dropped %d events so far (buffer of %d "
                                "full or sink closed)", self._where, self._dropped,
                                self.config.buffer_size)
                return
            # Submitted while Redis is known to be down, it waits for Redis whether or not
            # a write fails again before Redis returns (the writer may be in its backoff).
            self._buffer.append(_Pending(event, self._write_errors - self._known_down()))
            if self._task is None:
                # Not started yet: start on the caller's loop if it runs in one; else the
                # event waits for start().
                try:
                    self._start_on(asyncio.get_running_loop())
                except RuntimeError:
                    return
            if self._wake is not None:
                if threading.get_ident() == self._loop_thread:
                    self._wake.set()
                else:
                    assert self._loop is not None
                    self._loop.call_soon_threadsafe(self._wake.set)
        except Exception:  # the request path must never see a logging failure
            log.exception("interaction sink: submit failed")

    # -- observability ----------------------------------------------------------------
    def stats(self) -> SinkStats:
        """The counters now (cheap; safe to call from a /metrics handler)."""
        return SinkStats(
            submitted=self._submitted, written=self._written, distilled=self._distilled,
            duplicates=self._duplicates, dropped=self._dropped, delayed=self._delayed,
            failed=self._failed,
            invalid=self._invalid, write_errors=self._write_errors,
            buffered=len(self._buffer) + self._inflight, connected=self._connected,
        )

    async def ping(self, timeout: float | None = None) -> bool:
        """Whether Redis answers PING within ``timeout`` s (default: the socket timeout)."""
        if self._client is None:
            return False
        try:
            ok = await asyncio.wait_for(self._client.ping(),
                                        timeout or self.config.socket_timeout_s)
        except Exception:
            return False
        return bool(ok)

    # -- writer -----------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        delay = self.config.retry_initial_s
        batch: list[_Pending] = []
        while True:
            if not batch:
                batch = await self._take_batch()
                if not batch:
                    if self._closed:
                        return
                    self._wake.clear()
                    if not self._buffer:
                        await self._wake.wait()
                    continue
            try:
                results = await self._write(batch)
            except Exception as exc:
                self._record_failure(exc, len(batch))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.retry_max_s)
                continue
            if self._write_errors and not self._connected:
                log.info("interaction sink: Redis at %s is back; writing %d buffered events",
                         self._where, len(self._buffer) + len(batch))
            self._connected = True
            batch, retry_now = self._settle(batch, results)
            self._inflight = len(batch)
            if batch and not retry_now:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.retry_max_s)
            elif not batch:
                delay = self.config.retry_initial_s

    async def _take_batch(self) -> list[_Pending]:
        taken: list[_Pending] = []
        while self._buffer and len(taken) < self.config.batch_size:
            taken.append(self._buffer.popleft())
        self._inflight = len(taken)
        if not taken:
            return taken
        # Building (redaction) and serialising a batch of long chats takes a while:
        # in a thread, so the requests sharing this event loop never wait for it.
        batch = await asyncio.to_thread(self._prepare, taken)
        self._invalid += len(taken) - len(batch)
        self._inflight = len(batch)
        return batch

    def _prepare(self, taken: list[_Pending]) -> list[_Pending]:
        batch = []
        for pending in taken:
            try:
                if not isinstance(pending.event, Interaction):
                    pending.event = pending.event()
                pending.event = bound_interaction(pending.event, self.config.bounds,
                                                  self._redact)
                pending.json = pending.event.to_json()
                pending.key = self.keys.interaction(pending.event.id)
                distill = Distillation.of(pending.event)
                pending.distill = distill.stream_fields() if distill else None
            except Exception:
                log.exception("interaction sink: cannot build or serialise event %r; "
                              "skipped", getattr(pending.event, "id", pending.event))
                continue
            batch.append(pending)
        return batch

    async def _write(self, batch: list[_Pending]) -> list[Any]:
        assert self._client is not None
        if self._sha is None:
            self._sha = await self._client.script_load(WRITE_INTERACTION_LUA)
        pipe = self._client.pipeline(transaction=False)
        stream, ttl, maxlen = self.keys.interactions_stream, self.config.ttl_s, self.config.maxlen
        for p in batch:
            pipe.evalsha(self._sha, 3, p.key, stream, self.keys.feedback_stream, p.json, ttl,
                         maxlen, p.event.id, *(p.distill or ()))
        return await pipe.execute(raise_on_error=False)

    def _record_failure(self, exc: BaseException, size: int) -> None:
        self._write_errors += 1
        if self._connected or self._write_errors == 1:
            log.warning("interaction sink: cannot write to Redis at %s (%s: %s); buffering "
                        "%d events and retrying", self._where, type(exc).__name__, exc,
                        len(self._buffer) + size)
        self._connected = False

    def _settle(self, batch: list[_Pending], results: list[Any]) -> tuple[list[_Pending], bool]:
        """Count each event's outcome; return the events to retry and whether to retry now."""
        retry: list[_Pending] = []
        error_replies = False
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):
                # The server lost its script cache (restart, SCRIPT FLUSH): reload, retry now.
                self._sha = None
                retry.append(pending)
            elif isinstance(result, Exception):
                error_replies = True
                self._write_errors += 1
                pending.errors += 1
                if pending.errors >= self.config.max_event_errors:
                    self._failed += 1
                    log.error("interaction sink: giving up interaction %s after %d error "
                              "replies, last: %s", pending.event.id, pending.errors, result)
                else:
                    retry.append(pending)
            else:
                if result is None:
                    self._duplicates += 1
                else:
                    self._written += 1
                    self._distilled += pending.distill is not None
                if self._write_errors > pending.mark:
                    self._delayed += 1
        return retry, not error_replies
