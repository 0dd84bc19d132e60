"""Handed-off answers, logged as serving logs them: through the real interaction sink.

A handed-off interaction (``mode="handoff"``) carries the upstream's answer as its
completion and a :class:`~feedback.events.ComputeRecord` with ``handed_off=True``, the
local candidates and their disagreement with the upstream; the sink writes its
distillation entry to the feedback stream with it (feedback.distill).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from feedback.events import ComputeRecord, Interaction, hash_user
from feedback.keys import RedisKeys
from feedback.sink import InteractionSink, SinkConfig


@dataclass(frozen=True)
class HandedOff:
    """``user`` asked ``question``; the local model proposed ``candidates``, the upstream
    answered ``answer`` (which was served)."""

    user: str
    question: str
    answer: str
    candidates: tuple[str, ...] = ()
    tenant: str = "acme"
    upstream_model: str = "upstream-large"


def handed_off(h: HandedOff) -> Interaction:
    """The interaction serving logs for ``h``."""
    differ = sum(c.strip().lower() != h.answer.strip().lower() for c in h.candidates)
    compute = ComputeRecord(
        strategy="handoff", samples=len(h.candidates), candidates=list(h.candidates),
        handed_off=True, upstream_model=h.upstream_model, upstream_tokens=12,
        disagreement=differ / len(h.candidates) if h.candidates else None)
    return Interaction(tenant=h.tenant, user=hash_user(h.user), model=h.tenant,
                       messages=[{"role": "user", "content": h.question}],
                       completion=h.answer, mode="handoff", compute=compute)


async def log_interactions(redis_url: str, keys: RedisKeys, interactions: Iterable[Interaction],
                           config: SinkConfig | None = None):
    """Write ``interactions`` through an :class:`InteractionSink`; returns its final stats."""
    async with InteractionSink(redis_url, keys, config) as sink:
        for interaction in interactions:
            sink.submit(interaction)
        assert await sink.flush(30), "the sink did not write the interactions in 30 s"
        return sink.stats()


async def log_handoffs(redis_url: str, keys: RedisKeys,
                       handoffs: Sequence[HandedOff]) -> list[Interaction]:
    """Log each handed-off answer through the sink; returns the interactions, in order."""
    interactions = [handed_off(h) for h in handoffs]
    stats = await log_interactions(redis_url, keys, interactions)
    assert stats.distilled == len(interactions), stats
    return interactions
