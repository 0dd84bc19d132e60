"""Distillation: handed-off answers become training examples, within a bound.

A handed-off request (:class:`~feedback.distill.DistillEntry`, read from the feedback
stream with the users' ratings) yields a *unit* of unpaired examples with
``source="distill"``: the upstream model's answer, desirable, and each local candidate
that disagreed with it (:func:`learner.agreement.agrees`; none when serving measured no
disagreement), undesirable, once per distinct answer, the first
``DistillConfig.max_rejected`` of them. :func:`select_distill` applies the
round's rules to them, in this order:

1. **Tenant.** Entries of another tenant are left for that tenant's round.
2. **The user's word wins.** An entry whose interaction its user voted down — their
   latest rating of it, in this round's feedback or earlier (the feedback store's
   current-rating keys, :func:`feedback.distill.current_ratings`) — is dropped.
3. **Bound.** Distillation is not user feedback: the per-user cap, the user share and
   the minimum of distinct users (``LearnerConfig``) neither count nor limit it. Its
   own bound is ``DistillConfig.max_share`` of the round's new examples. Units are
   taken oldest first while they fit; the rest wait for a later round (not consumed),
   at most ``max_waiting`` of them: beyond it the oldest are dropped.

Taken and dropped entries are consumed with the round like feedback (their stream ids
go into the version's dataset with the hashed user who asked, so ``users forget``
finds and leaves them out of replay like any of the user's data).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from feedback.connections import stream_id
from feedback.distill import DistillEntry
from feedback.events import FeedbackEntry
from learner.agreement import agrees, words
from learner.examples import Example

#: ``(interaction id, hashed user)`` -> that user's latest rating of it (+1 / -1).
Ratings = Mapping[tuple[str, str], int]


class DistillConfig(BaseModel):
    """How much of a round handed-off answers may teach (``LearnerConfig.distill``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_share: float = Field(1.0, ge=0, le=1, description="Largest share of a round's new "
                             "examples that distillation examples may take. 1 (default): no "
                             "bound, so handed-off answers train even when nobody rates (the "
                             "upstream, not a user, wrote them; its budget bounds them); 0.5: "
                             "at most as many as users taught; 0: none.")
    max_rejected: int = Field(1, ge=0, le=16, description="Most local candidates that "
                              "disagreed with a handed-off answer it teaches against "
                              "(undesirable), the first first: the answer the user would "
                              "have got. More push down the same wrong opening again and "
                              "again: in a Part B run 3 per answer took general answers that "
                              "shared it ('The capital of ...') with them.")
    max_waiting: int = Field(1024, ge=0, description="Most handed-off entries of a tenant "
                             "that wait for room in a later round; beyond it the oldest are "
                             "dropped (acknowledged untrained), so a tenant whose users "
                             "rarely rate holds no growing backlog.")


@dataclass
class DistillSelection:
    """What :func:`select_distill` took, dropped and left for later."""

    units: list[list[Example]] = field(default_factory=list)  #: per entry taken
    users: dict[str, str] = field(default_factory=dict)  #: taken or dropped id -> hashed user
    dropped: dict[str, str] = field(default_factory=dict)  #: stream id -> why
    deferred: list[str] = field(default_factory=list)  #: stream ids left for a later round
    counts: Counter[str] = field(default_factory=Counter)


def tenant_of(entry: FeedbackEntry | DistillEntry) -> str:
    """The tenant whose round an entry of the feedback stream belongs to."""
    return entry.distill.tenant if isinstance(entry, DistillEntry) else entry.feedback.tenant


def split_entries(entries: Iterable[FeedbackEntry | DistillEntry]
                  ) -> tuple[list[FeedbackEntry], list[DistillEntry]]:
    """``(ratings, handed-off answers)`` of a batch, each in the order given."""
    rated, distilled = [], []
    for entry in entries:
        (distilled if isinstance(entry, DistillEntry) else rated).append(entry)
    return rated, distilled


def rating_pairs(distilled: Iterable[DistillEntry], carried: Iterable[Example] = ()
                 ) -> list[tuple[str, str]]:
    """The ``(interaction id, user)`` pairs whose latest rating decides whether a
    distillation example may train: this round's entries' and carried ones'."""
    pairs = [(e.distill.interaction_id, e.distill.user) for e in distilled]
    pairs += [(e.interaction_id, e.user) for e in carried if e.source == "distill"]
    return list(dict.fromkeys(pairs))


def distill_examples(entry: DistillEntry, max_rejected: int | None = None) -> list[Example]:
    """The unit of one handed-off answer: the upstream's answer (desirable), then each
    distinct local candidate that disagreed with it (undesirable), the first
    ``max_rejected`` of them (``None``: all)."""
    d = entry.distill
    base: dict[str, Any] = {
        "tenant": d.tenant, "user": d.user, "interaction_id": d.interaction_id,
        "stream_id": entry.stream_id, "source": "distill",
        "prompt": [{"role": m.role, "content": m.content} for m in d.messages]}
    unit = [Example(**base, completion=d.answer, desirable=True)]
    if d.disagreement == 0:  # serving compared them: every candidate said the same
        return unit
    seen: set[tuple[str, ...]] = set()
    for candidate in d.candidates:
        if max_rejected is not None and len(unit) > max_rejected:
            break
        said = tuple(words(candidate))
        if not said or said in seen or agrees(candidate, d.answer):
            continue
        seen.add(said)
        unit.append(Example(**base, completion=candidate, desirable=False))
    return unit


def select_distill(entries: Sequence[DistillEntry], *, tenant: str, user_examples: int,
                   ratings: Ratings, known: set[tuple[str, str, bool]], share: float = 1.0,
                   max_waiting: int = 1024, max_rejected: int | None = None) -> DistillSelection:
    """Apply the module's rules to one round's handed-off entries.

    ``user_examples`` is the number of new examples the round's user feedback gave;
    ``known`` the keys of the examples already in the round (updated with those taken).
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1] (DistillConfig.max_share), got {share}")
    chosen = DistillSelection()
    counts = chosen.counts
    seen: set[str] = set()
    room = math.inf if share >= 1 else math.floor(share / (1 - share) * user_examples + 1e-9)
    waiting: list[DistillEntry] = []
    for entry in sorted(entries, key=lambda e: stream_id(e.stream_id)):
        d = entry.distill
        if d.tenant != tenant:
            counts["distill_foreign_tenant"] += 1
            continue
        if entry.stream_id in seen:
            counts["redelivered"] += 1
            continue
        seen.add(entry.stream_id)
        chosen.users[entry.stream_id] = d.user
        reason = _unusable(entry, ratings)
        unit = [] if reason else [e for e in distill_examples(entry, max_rejected)
                                  if e.key not in known]
        if not reason and not unit:
            reason = "duplicate of examples already in this round"
        if reason:
            chosen.dropped[entry.stream_id] = reason
            counts["distill_voted_down" if "voted" in reason else "distill_unusable"] += 1
        elif waiting or len(unit) > room:
            waiting.append(entry)  # in stream order: the oldest take the room first
        else:
            room -= len(unit)
            known.update(e.key for e in unit)
            chosen.units.append(unit)
    excess = max(0, len(waiting) - max_waiting)
    for entry in waiting[:excess]:
        chosen.dropped[entry.stream_id] = (
            f"over DistillConfig.max_waiting ({max_waiting}) handed-off entries waiting for "
            f"room under max_share ({share})")
    for entry in waiting[excess:]:
        chosen.users.pop(entry.stream_id)
        chosen.deferred.append(entry.stream_id)
    counts.update({"distill": len(chosen.units), "distill_deferred": len(chosen.deferred),
                   "distill_dropped": len(chosen.dropped)})
    return chosen


def without_voted_down(examples: Sequence[Example], ratings: Ratings) -> list[Example]:
    """``examples`` less the distillation examples of interactions their user voted down."""
    return [e for e in examples if e.source != "distill"
            or ratings.get((e.interaction_id, e.user)) != -1]


def _unusable(entry: DistillEntry, ratings: Ratings) -> str:
    d = entry.distill
    if ratings.get((d.interaction_id, d.user)) == -1:
        return "its user voted the handed-off answer down"
    if not words(d.answer):
        return "the upstream's answer is empty"
    return ""
