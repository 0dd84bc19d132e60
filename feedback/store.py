"""The feedback store: validates, rate-limits, redacts and durably records users' ratings.

:meth:`FeedbackStore.record` is what ``POST /v1/feedback`` calls. An accepted
feedback (the call returns its id) is in the feedback stream exactly once: one Lua
script (:mod:`feedback.record_script`) loads the interaction and checks that the caller
owns it, applies the per-user, per-tenant and per-address limits (fixed windows aligned
to the epoch), ``XADD``\\ s the event and replaces the "current rating" of
``(interaction, user)``, atomically, in one round trip. A post with a correction or a
comment is checked by the same script first, so that a caller who is not the owner or
is already over a limit is refused before its text is redacted. Only acknowledged
entries are ever removed from the stream (:meth:`feedback.source.FeedbackSource.trim`),
never by MAXLEN.

Failures are typed (``feedback.errors``); ``serving.http_errors`` gives each its HTTP
status. Any other exception is a bug (500).

Durability (:attr:`FeedbackStore.durability`, :mod:`feedback.durability`): with
``strict_durability`` the store returns only once the event is on disk; a server
that cannot promise that makes :meth:`FeedbackStore.start` raise
``DurabilityUnavailable``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

import feedback.errors as errors
from feedback.connections import REDIS_ERRORS, async_client, redact_url, text
from feedback.durability import detect_durability, durability_mode
from feedback.events import (
    MAX_COMMENT_CHARS,
    MAX_CORRECTION_CHARS,
    Feedback,
    Interaction,
    hash_user,
    normalize_rating,
)
from feedback.keys import RedisKeys
from feedback.record_script import RECORD_FEEDBACK_LUA, RecordCall, digest
from feedback.redact import Redactor, RedactorName, make_redactor
from feedback.script_batcher import ScriptBatcher

# Re-exported: durability_mode was defined here before feedback.durability.
__all__ = ["FEEDBACK_EVENTS", "FeedbackConfig", "FeedbackStore", "durability_mode"]

log = logging.getLogger(__name__)

FEEDBACK_EVENTS = Counter(
    "loraloop_feedback_total", "Feedback requests by outcome.", ["outcome"]
)

class FeedbackConfig(BaseModel):
    """Limits and durability of the feedback store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_correction_chars: int = Field(8_000, ge=0, le=MAX_CORRECTION_CHARS, description=(
        "Longest accepted correction, in characters (longer: FeedbackTooLarge / 413)."))
    max_comment_chars: int = Field(2_000, ge=0, le=MAX_COMMENT_CHARS, description=(
        "Longest accepted comment, in characters."))
    rate_window_s: int = Field(60, ge=1, description="Length of a rate-limit window (fixed "
                               "windows aligned to the epoch).")
    user_limit: int = Field(60, ge=1, description="Feedback events one user may give per "
                            "window; more: RateLimited / 429.")
    tenant_limit: int = Field(6_000, ge=1, description="Feedback events all users of one "
                              "tenant may give per window.")
    address_limit: int = Field(600, ge=1, description=(
        "Feedback events one client address may give per window, whatever `user` names "
        "it sends (with auth off, invented users share their address). Behind a proxy, "
        "set client_address_header, or every client is the proxy's address."))
    client_address_header: str | None = Field(None, description=(
        "Header holding the client's address as the operator's own proxy saw it (e.g. "
        "x-forwarded-for; its last entry is used), for address_limit. Set it only behind "
        "a proxy that sets it: clients can send any header."))
    current_ttl_s: int = Field(30 * 24 * 3600, ge=1, description="Expiry of the 'current "
                               "rating' key of (interaction, user).")
    strict_durability: bool = Field(False, description="Return only once the event is on "
                                    "disk (WAITAOF on Redis >= 7.2, else appendfsync always).")
    waitaof_timeout_ms: int = Field(1_000, ge=1, description="How long WAITAOF may wait for "
                                    "the fsync before the request fails with 503.")
    socket_timeout_s: float = Field(0.5, gt=0, description="Redis socket read/write timeout "
                                    "(a hung server fails this fast).")
    connect_timeout_s: float = Field(0.5, gt=0, description="Redis connect timeout (a "
                                     "refused connection fails at once; this bounds a "
                                     "blackholed host).")
    redactor: RedactorName = Field("regex", description="PII redactor of corrections and "
                                   "comments: regex (default), presidio, none.")
    idempotency_ttl_s: int = Field(24 * 3600, ge=1, description=(
        "How long an Idempotency-Key is remembered: a retry with it within this time "
        "returns the first feedback id and adds no event."))
    interaction_grace_s: float = Field(1.0, ge=0, le=30, description=(
        "How long feedback on an interaction not (yet) in Redis waits for it before the "
        "answer is 404. Serving logs interactions asynchronously, so a client rating an "
        "answer the moment it arrives can be a few milliseconds ahead of the log."))


class FeedbackStore:
    """Records feedback in Redis; use from one asyncio event loop.

    ``client_or_url`` is a Redis URL (the store makes and owns a client with the
    configured short timeouts and no retries) or an existing ``redis.asyncio``
    client (whose timeouts then apply; every call is also bounded by an
    asyncio deadline). Call :meth:`start` at boot (it detects the durability
    mode); :meth:`record` and :meth:`current` start lazily if Redis was down then.
    """

    def __init__(self, client_or_url: aioredis.Redis | str, keys: RedisKeys,
                 config: FeedbackConfig | None = None, *,
                 redactor: Redactor | None = None) -> None:
        self.config = config or FeedbackConfig()
        self.keys = keys
        if isinstance(client_or_url, str):
            self._where = redact_url(client_or_url)
            self._client = async_client(client_or_url, timeout_s=self.config.socket_timeout_s,
                                        connect_timeout_s=self.config.connect_timeout_s)
            self._owns_client = True
        else:
            self._where = "redis"
            self._client = client_or_url
            self._owns_client = False
        self.redactor = redactor or make_redactor(self.config.redactor)
        self.durability = "undetected"
        self.server_version: str | None = None
        self._waitaof = False
        self._tenant_hint: str | None = None  # the tenant the last post found
        # Concurrent posts share round trips (each still its own atomic script run).
        self._batcher = ScriptBatcher(self._client, RECORD_FEEDBACK_LUA,
                                      timeout_s=self._deadline_s())

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> str:
        """Detect the server version and durability mode; returns :attr:`durability`.

        Raises ``FeedbackUnavailable`` if Redis does not answer, and
        ``DurabilityUnavailable`` if ``strict_durability`` is on but the server can
        provide neither WAITAOF nor ``appendfsync always``.
        """
        async with self._redis("detect the durability mode"):
            found = await detect_durability(self._client, where=self._where,
                                            strict=self.config.strict_durability)
        self.server_version, self.durability = found.server_version, found.label
        self._waitaof = found.waitaof
        self._batcher.timeout_s = self._deadline_s()
        log.info("feedback store on %s: Redis %s, durability %s", self._where,
                 found.server_version, found.label)
        return found.label

    async def aclose(self) -> None:
        """Close the client if the store created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> FeedbackStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- API --------------------------------------------------------------------------
    async def record(self, *, interaction_id: str, user: str | None, rating: object,
                     correction: str | None = None, comment: str | None = None,
                     tenant: str | None = None, idempotency_key: str | None = None,
                     address: str | None = None) -> str:
        """Record ``user``'s rating of an interaction; returns the new feedback id.

        ``user`` is the caller's raw identity (hashed here with ``hash_user``, as
        the serving side hashes the request's user); ``tenant``, when the caller's
        tenant is known (API key), must also match the interaction's. A second
        rating of the same interaction replaces the current one (both stay in the
        stream). With an ``idempotency_key`` (the client's ``Idempotency-Key``), a
        repeat of the same request returns the first feedback id and writes
        nothing; the same key with a different request raises
        ``IdempotencyKeyReused``. ``address`` is the client's network address (the
        route passes it): at most ``address_limit`` events per window come from one.
        Raises the errors listed in the module docstring.
        """
        try:
            return await self._record(interaction_id, user, rating, correction, comment, tenant,
                                      idempotency_key, address)
        except errors.FeedbackError as exc:
            FEEDBACK_EVENTS.labels(type(exc).__name__).inc()
            raise

    async def current(self, interaction_id: str, user: str | None, *,
                      tenant: str | None = None) -> Feedback | None:
        """``user``'s current rating of the interaction, or ``None`` if they gave none.

        Raises ``InteractionNotFound`` (unknown/expired and never rated by ``user``),
        ``NotYourInteraction`` (someone else's) or ``FeedbackUnavailable``.
        """
        user_hash = hash_user(user)
        try:
            ikey = self.keys.interaction(interaction_id)
            ckey = self.keys.feedback_current(interaction_id, user_hash)
        except ValueError:
            raise errors.InteractionNotFound(interaction_id) from None
        async with self._redis("read the current rating"):
            pipe = self._client.pipeline(transaction=False)
            pipe.get(ckey)
            pipe.get(ikey)
            raw_current, raw_interaction = await pipe.execute()
        if raw_current is None and raw_interaction is None:
            raw_interaction = await self._load_interaction(ikey)
        if raw_current is not None:
            feedback = Feedback.from_json(raw_current)
            if tenant is not None and feedback.tenant != tenant:
                raise errors.NotYourInteraction(
                    f"interaction {interaction_id!r} belongs to another tenant")
            return feedback
        if raw_interaction is None:
            raise errors.InteractionNotFound(interaction_id)
        self._check_owner(Interaction.from_json(raw_interaction), user_hash, tenant)
        return None

    # -- internals --------------------------------------------------------------------
    async def _record(self, interaction_id: str, user: str | None, rating: object,
                      correction: str | None, comment: str | None, tenant: str | None,
                      idempotency_key: str | None, address: str | None) -> str:
        value = normalize_rating(rating)
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
            raise errors.InvalidFeedback(f"Idempotency-Key must be 1 to 255 characters, got "
                                         f"{len(idempotency_key)}")
        cfg = self.config
        for field, given, limit, setting in (
            ("correction", correction, cfg.max_correction_chars, "max_correction_chars"),
            ("comment", comment, cfg.max_comment_chars, "max_comment_chars"),
        ):
            if given is not None and len(given) > limit:
                raise errors.FeedbackTooLarge(field, len(given), limit, setting)
        user_hash = hash_user(user)
        try:
            post = RecordCall(self.keys, interaction_id, user_hash, tenant, address)
        except ValueError:
            raise errors.InteractionNotFound(interaction_id) from None
        if self.durability == "undetected":
            await self.start()
        if correction or comment:  # a caller refused anyway costs no redaction
            await self._run(post, "check")
            # Redaction (regex or Presidio) can take milliseconds: not on the event loop.
            correction, comment = await asyncio.to_thread(self._redact_texts, correction,
                                                          comment)
        post.fields = {"interaction_id": interaction_id, "rating": value, "user": user_hash,
                       "correction": correction, "comment": comment, "created_at": time.time()}
        if idempotency_key is not None:
            post.request_key = self.keys.feedback_request(user_hash, digest(idempotency_key))
            post.fingerprint = digest(json.dumps([interaction_id, value, correction, comment]))
        result = await self._run(post, "write")
        if text(result[0]) == "repeat":
            earlier_id, _, earlier_fingerprint = text(result[1]).partition(" ")
            if earlier_fingerprint != post.fingerprint:
                raise errors.IdempotencyKeyReused(
                    f"Idempotency-Key {idempotency_key!r} already recorded feedback "
                    f"{earlier_id} for a different request; use a new key for a new rating")
            FEEDBACK_EVENTS.labels("repeat").inc()
            return earlier_id
        FEEDBACK_EVENTS.labels("accepted").inc()
        log.debug("feedback %s on %s is %s", post.feedback_id, interaction_id, text(result[1]))
        return post.feedback_id

    async def _run(self, post: RecordCall, mode: str) -> list:
        """Run the record script (:mod:`feedback.record_script`) in ``mode`` until it
        answers ``ok``, ``checked`` or ``repeat``; raise what any other answer means.

        An interaction not in Redis yet is waited for up to ``interaction_grace_s``
        (serving logs it asynchronously); an answer naming the interaction's tenant
        (``post.tenant`` was a guess) is run again with that tenant's rate counter.
        """
        cfg = self.config
        deadline = time.monotonic() + cfg.interaction_grace_s
        pause, tenant_answers = 0.01, 0
        while True:
            result = await self._call(post, mode)
            status = text(result[0])
            if status in ("ok", "checked", "repeat"):
                return result
            if status == "tenant_is" and tenant_answers < 2:
                tenant_answers += 1  # twice only if the interaction was replaced meanwhile
                post.tenant = self._tenant_hint = text(result[1])
            elif status == "gone":
                left = deadline - time.monotonic()
                if left <= 0:
                    raise errors.InteractionNotFound(post.interaction_id)
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, 0.1)
            elif status == "not_owner" and text(result[1]) == "tenant":
                raise _not_yours(post.interaction_id, text(result[2]), post.caller_tenant)
            elif status == "not_owner":
                raise _not_yours(post.interaction_id)
            elif status in ("user", "tenant", "address"):
                limit = {"user": cfg.user_limit, "tenant": cfg.tenant_limit}.get(
                    status, cfg.address_limit)
                raise errors.RateLimited(status, limit, cfg.rate_window_s,
                                         max(1, math.ceil(max(int(result[1]), 0) / 1000)))
            else:  # malformed (or the tenant changed under us): let the parser say what
                await self._raise_unreadable(post.ikey, post.interaction_id)

    async def _call(self, post: RecordCall, mode: str) -> list:
        """One run of the record script; it shares its round trip with the runs of other
        posts waiting at the same time (:mod:`feedback.script_batcher`)."""
        cfg = self.config
        keys, args = post.script_call(mode, cfg, self._tenant_hint)
        strict = cfg.waitaof_timeout_ms if self._waitaof and mode == "write" else None
        async with self._redis("record feedback"):
            result, local = await self._batcher(keys, args, waitaof_ms=strict)
        if local is not None and text(result[0]) == "ok" and local < 1:
            raise errors.FeedbackUnavailable(
                f"feedback {post.feedback_id} was written but not confirmed on disk within "
                f"{cfg.waitaof_timeout_ms} ms (WAITAOF): retry")
        return result

    async def _raise_unreadable(self, key: str, interaction_id: str) -> None:
        """The stored interaction is one the script could not read: parse it here, to raise
        the precise error (another schema version, a bad field)."""
        async with self._redis("load the interaction"):
            raw = await self._client.get(key)
        if raw is None:
            raise errors.InteractionNotFound(interaction_id)
        Interaction.from_json(raw)
        raise errors.InvalidEvent(f"interaction {interaction_id!r} is stored in a form the "
                                  "feedback store cannot read")

    def _redact_texts(self, *texts: str | None) -> list[str | None]:
        return [None if t is None else self.redactor.redact(t) for t in texts]

    async def _load_interaction(self, key: str) -> bytes | None:
        """The stored interaction, waiting up to ``interaction_grace_s`` for one just served."""
        deadline = time.monotonic() + self.config.interaction_grace_s
        pause = 0.01
        while True:
            async with self._redis("load the interaction"):
                raw = await self._client.get(key)
            if raw is not None:
                return raw
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.1)

    @staticmethod
    def _check_owner(interaction: Interaction, user_hash: str, tenant: str | None) -> None:
        if interaction.user != user_hash:
            raise _not_yours(interaction.id)
        if tenant is not None and interaction.tenant != tenant:
            raise _not_yours(interaction.id, interaction.tenant, tenant)

    def _deadline_s(self) -> float:
        """How long one round trip may take: connect, answer, and WAITAOF when strict."""
        cfg = self.config
        return cfg.connect_timeout_s + cfg.socket_timeout_s + (
            cfg.waitaof_timeout_ms / 1000 if self._waitaof else 0)

    @asynccontextmanager
    async def _redis(self, what: str) -> AsyncIterator[None]:
        """Bound a Redis round trip in time and turn its failures into FeedbackUnavailable."""
        try:
            async with asyncio.timeout(self._deadline_s()):
                yield
        except errors.FeedbackError:
            raise
        except REDIS_ERRORS as exc:  # also asyncio.timeout's TimeoutError (an OSError)
            log.warning("feedback store: cannot %s on %s: %s", what, self._where, exc)
            raise errors.FeedbackUnavailable(
                f"Redis at {self._where} is unavailable ({type(exc).__name__}: {exc}); could "
                f"not {what}: retry later") from exc


def _not_yours(interaction_id: str, its_tenant: str | None = None,
               caller_tenant: str | None = None) -> errors.NotYourInteraction:
    """The refusal of a caller who is not the interaction's user (or not of its tenant)."""
    if its_tenant is None:
        return errors.NotYourInteraction(
            f"interaction {interaction_id!r} was served to another user: only the user "
            "who got an answer can rate it (check the API key or the `user` field)")
    return errors.NotYourInteraction(
        f"interaction {interaction_id!r} belongs to tenant {its_tenant!r}, not {caller_tenant!r}")
