"""Distillation entries: a handed-off answer, as training data for the learner.

When an answer was handed off to the upstream model (``Interaction.compute.handed_off``),
the sink writes, in the same Lua script as the interaction (both land or neither), one
more entry to the **feedback stream**, marked ``source=distill``::

    id <distillation id>  user <hashed user>  interaction_id <id>  source distill
    event <Distillation JSON>

The feedback stream, not a stream of its own, because everything the learner relies on
is already built around it: one consumer group, at-least-once reads, reclaim and dead
letters (:mod:`feedback.source`), the dataset ledger keyed by its stream ids (ids of
two streams could collide), trimming of acknowledged entries only, and
:func:`feedback.forget.forget_user`, which deletes a user's entries by their ``user``
field. The entry carries everything curation needs (the prompt, the upstream answer,
the local candidates), so it does not depend on the interaction's key still being
there when the learner reads it.

Readers of *ratings* (``feedback.ratings``) skip these entries: they rate nothing.
An entry copies the stored (bounded) interaction's texts, so with the default
``StoredBounds`` it stays well below ``SourceConfig.max_entry_bytes``; bounds raised far
past those defaults can make entries the reader dead-letters as poison.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import redis.asyncio as aioredis
from pydantic import Field

from feedback.connections import field, text
from feedback.errors import InvalidEvent
from feedback.events import (  # _Event: the schema-version contract every event shares
    _HEX128,
    ANONYMOUS_USER,
    BASE_VERSION,
    Feedback,
    Interaction,
    Message,
    Rating,
    Strategy,
    _Event,
)
from feedback.keys import RedisKeys

#: The ``source`` field of a distillation entry in the feedback stream.
DISTILL_SOURCE = "distill"
#: Schema version written into every new :class:`Distillation`.
DISTILLATION_SCHEMA_VERSION = 1


class Distillation(_Event):
    """A handed-off answer as a supervised target: the prompt, the upstream's answer and
    the local model's candidates (copied from the bounded, redacted stored interaction).
    """

    KIND: ClassVar[str] = "distillation"
    SCHEMA_VERSION: ClassVar[int] = DISTILLATION_SCHEMA_VERSION

    schema_version: int = DISTILLATION_SCHEMA_VERSION
    interaction_id: str = Field(pattern=_HEX128, description="The handed-off interaction.")
    tenant: str = Field(min_length=1, description="The interaction's tenant.")
    user: str = Field(default=ANONYMOUS_USER, min_length=1, max_length=128,
                      description="Hashed user who asked (forget-user deletes by it).")
    adapter_version: str = Field(default=BASE_VERSION, min_length=1, description="The local "
                                 "version whose candidates were compared with the upstream.")
    messages: list[Message] = Field(min_length=1, description="The prompt, as stored.")
    answer: str = Field(description="The upstream's answer (the one served).")
    candidates: list[str] = Field(default_factory=list, description="The local candidate "
                                  "answers, as stored (feedback.bounds caps them).")
    disagreement: float | None = Field(default=None, ge=0, le=1, description="Share of the "
                                       "candidates that differ from the answer (serving's).")
    upstream_model: str | None = Field(default=None, description="The upstream that answered.")
    strategy: Strategy = Field(default="handoff", description="The strategy the request ran.")
    created_at: float = Field(default_factory=time.time, ge=0,
                              description="Unix time the request arrived.")

    @classmethod
    def of(cls, interaction: Interaction) -> Distillation | None:
        """The distillation of a handed-off interaction, or of a pseudo-labelled one (a
        settled majority of a tenant that opted in: ``upstream_model`` is
        ``majority-vote``); ``None`` for any other."""
        compute = interaction.compute
        if compute is None or not (compute.handed_off or compute.pseudo_label):
            return None
        return cls(interaction_id=interaction.id, tenant=interaction.tenant,
                   user=interaction.user, adapter_version=interaction.adapter_version,
                   messages=interaction.messages, answer=interaction.completion,
                   candidates=compute.candidates, disagreement=compute.disagreement,
                   upstream_model=compute.upstream_model if compute.handed_off
                   else "majority-vote", strategy=compute.strategy,
                   created_at=interaction.created_at)

    def stream_fields(self) -> list[str]:
        """The entry's field/value pairs, flat (what the sink's script ``XADD``\\ s)."""
        return ["id", self.id, "user", self.user, "interaction_id", self.interaction_id,
                "source", DISTILL_SOURCE, "event", self.to_json()]


@dataclass(frozen=True)
class DistillEntry:
    """One parsed distillation entry, as the learner's reader delivers it."""

    stream_id: str
    distill: Distillation
    deliveries: int  #: times delivered so far, this one included


def is_distill(fields: Mapping[Any, Any]) -> bool:
    """Whether a feedback stream entry's fields are a distillation entry's."""
    return text(field(fields, "source")) == DISTILL_SOURCE


def parse_distill(event: str | bytes | None) -> Distillation:
    """The Distillation in an entry's ``event`` field; ``InvalidEvent`` if it is poison."""
    if event is None:
        raise InvalidEvent("distillation entry has no `event` field")
    return Distillation.from_json(event)


async def current_ratings(client: aioredis.Redis, keys: RedisKeys,
                          asked: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Rating]:
    """The current (latest) rating of each ``(interaction id, hashed user)`` pair: what that
    user last said of that interaction; pairs without a rating are left out.

    Read from the "current rating" keys the feedback store keeps for
    ``FeedbackConfig.current_ttl_s`` (30 days), so a rating acknowledged and trimmed
    from the stream rounds ago still counts.
    """
    named = {}
    for pair in asked:
        try:
            named[pair] = keys.feedback_current(*pair)
        except ValueError:  # not an id a rating could have been stored under
            continue
    if not named:
        return {}
    pairs = list(named)
    pipe = client.pipeline(transaction=False)
    for pair in pairs:
        pipe.get(named[pair])
    found: dict[tuple[str, str], Rating] = {}
    for pair, raw in zip(pairs, await pipe.execute(), strict=True):
        if raw is None:
            continue
        try:
            found[pair] = Feedback.from_json(raw).rating
        except InvalidEvent:
            continue  # an unreadable rating says nothing either way
    return found
