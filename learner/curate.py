"""Curation: one batch of joined feedback becomes a learning round's train and held-out sets.

:func:`curate` applies these rules, in this order, to the ``(FeedbackEntry,
Interaction | None)`` pairs that :func:`feedback.interactions.join_interactions`
returns:

1. **Tenant isolation.** Entries whose feedback names another tenant are left
   out and *not* consumed (that tenant's round takes them). An entry whose
   interaction disagrees with its feedback on tenant or user, or whose
   interaction expired (``None``), is dropped and consumed: it can never train.
   The result is checked again at the end (:class:`~learner.errors.TenantMismatch`).
2. **Redelivered duplicates.** The same stream id twice in a batch counts once.
3. **Latest rating wins, per-user cap** — :func:`feedback.rounds.select_for_round`:
   the newest rating per (user, interaction); each user keeps at most
   ``per_user_cap`` entries (their oldest), and at most ``max_user_share`` of the
   round. Superseded and over-cap entries are dropped and consumed; the capped
   users are recorded. A round from fewer than ``min_users`` distinct users waits.
4. **Labels.** Thumbs up: the answer is desirable. Thumbs down: undesirable. A
   correction (non-empty, different from the answer, whatever the thumb): the
   corrected answer is desirable *and* the original answer undesirable
   (``source="correction"`` for both).
5. **Duplicate examples** (same prompt, completion and label, e.g. two users
   liking the same answer) are kept once.
5b. **Handed-off answers** (``distill``: :class:`~feedback.distill.DistillEntry`) become
   units of ``source="distill"`` examples under their own rules and bound
   (:func:`learner.distill.select_distill`): none of the user rules above applies to
   them; a thumbs-down of the interaction by its user drops them; the ones over
   ``distill_share`` wait (``deferred``: neither trained nor consumed).
6. **Held-out slice.** A seeded choice of feedback entries (a correction's two
   examples stay together) is kept out of training for the gate:
   ``round(holdout_fraction * n)`` of the ``n`` entries that produced examples,
   but at least 1 when ``holdout_fraction > 0`` and ``n >= 2``, and never all of
   them (training keeps at least one). Desirable and undesirable entries are
   taken alternately, so a small slice still has both kinds when it can. The
   handed-off units are split apart the same way: their held-out ones are the
   gate's handoff slice (learner.agreement).
7. **Carried.** Examples an earlier round of this tenant used but that are not live
   yet (its candidate was not promoted, or they were held out) join the train set
   as they are: data accumulates until it reaches users. A new example equal to a
   carried one is kept once; a carried distillation example whose interaction its
   user has voted down since is left out.
8. **Replay.** ``round(replay_fraction * len(train))`` examples the live version
   was trained on, and at least ``min_replay`` (a round of two new examples would
   otherwise take all its steps on those and forget earlier rounds' lessons), at
   most all of ``replay``, drawn with the seed (desirable ones first: the answers
   earlier rounds taught), of this tenant
   only and not duplicating another, join the train set with ``source="replay"``.

Every stream id the round used or deliberately dropped is in
``consumed_stream_ids``: the caller registers them with the version and
acknowledges them all after the commit.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from feedback.distill import DistillEntry
from feedback.events import FeedbackEntry, Interaction
from feedback.rounds import select_for_round
from learner.agreement import agrees, words
from learner.distill import Ratings, select_distill, without_voted_down
from learner.errors import TenantMismatch
from learner.examples import Example

log = logging.getLogger(__name__)

JoinedEntry = tuple[FeedbackEntry, Interaction | None]


@dataclass
class CuratedRound:
    """What one learning round trains on and holds out, and what it consumed."""

    tenant: str
    train: list[Example]  #: new examples not held out, then the replayed ones
    holdout: list[Example]  #: new examples kept out of training, for the gate
    consumed_stream_ids: list[str]  #: every id used or dropped on purpose, in stream order
    members: dict[str, str]  #: consumed stream id -> hashed user (for the dataset snapshot)
    capped_users: dict[str, int]  #: hashed user -> entries dropped by the per-user cap
    counts: dict[str, int] = field(default_factory=dict)  #: for the status report
    dropped: dict[str, str] = field(default_factory=dict)  #: stream id -> why it was dropped
    waiting: str | None = None  #: why the round must wait for more feedback (too few users)
    deferred: list[str] = field(default_factory=list)  #: handed-off entries left for later

    @property
    def new_examples(self) -> int:
        return self.counts.get("examples_new", 0)


def curate(
    entries: Iterable[JoinedEntry],
    *,
    tenant: str,
    per_user_cap: int,
    max_user_share: float = 1.0,
    min_users: int = 1,
    holdout_fraction: float = 0.2,
    replay: Sequence[Example] = (),
    replay_fraction: float = 0.0,
    min_replay: int = 0,
    carried: Sequence[Example] = (),
    seed: int = 0,
    distill: Sequence[DistillEntry] = (),
    distill_share: float = 1.0,
    distill_max_waiting: int = 1024,
    distill_rejected: int | None = None,
    ratings: Ratings | None = None,
) -> CuratedRound:
    """Apply the module's rules to joined feedback of one tenant; see the module docstring.

    ``per_user_cap`` is ``LearnerConfig.per_user_cap``; ``max_user_share`` and
    ``min_users`` are ``LearnerConfig.max_user_share`` and ``min_round_users``
    (when fewer users gave feedback, :attr:`CuratedRound.waiting` says so and the
    round trains on nothing and consumes nothing); ``replay`` holds earlier accepted
    examples (the caller draws them from earlier dataset snapshots). ``distill`` are
    the batch's handed-off answers, bounded by ``distill_share`` and
    ``distill_max_waiting``, each teaching against ``distill_rejected`` of its local
    candidates at most (``LearnerConfig.distill``); ``ratings`` the users' latest
    ratings of their interactions known from before this batch
    (:func:`feedback.distill.current_ratings`). The result depends only on the inputs
    and ``seed``.
    """
    if per_user_cap < 1:
        raise ValueError(f"per_user_cap must be >= 1, got {per_user_cap}")
    if not 0.0 <= holdout_fraction <= 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1], got {holdout_fraction}")
    if replay_fraction < 0.0:
        raise ValueError(f"replay_fraction must be >= 0, got {replay_fraction}")
    if min_replay < 0:
        raise ValueError(f"min_replay must be >= 0, got {min_replay}")
    counts: Counter[str] = Counter()
    dropped: dict[str, str] = {}
    interactions: dict[str, Interaction] = {}
    seen: set[str] = set()
    users: dict[str, str] = {}
    usable: list[FeedbackEntry] = []
    for entry, interaction in entries:
        counts["entries"] += 1
        fb = entry.feedback
        if fb.tenant != tenant:
            counts["foreign_tenant"] += 1
            continue
        if entry.stream_id in seen:
            counts["redelivered"] += 1
            continue
        seen.add(entry.stream_id)
        users[entry.stream_id] = fb.user
        reason = _unusable(entry, interaction)
        if reason:
            counts["unusable"] += 1
            dropped[entry.stream_id] = reason
            continue
        interactions[entry.stream_id] = interaction  # type: ignore[assignment]
        usable.append(entry)

    selection = select_for_round(usable, min(per_user_cap, _share_cap(usable, max_user_share)))
    users_in_round = {e.feedback.user for e in selection.kept}
    if users_in_round and len(users_in_round) < min_users:
        return CuratedRound(tenant, [], [], [], {}, {}, dict(counts), {}, waiting=(
            f"{len(users_in_round)} distinct users gave this round's feedback; a round "
            f"needs {min_users} (LearnerConfig.min_round_users)"))
    for entry in selection.superseded:
        dropped[entry.stream_id] = "superseded by a later rating of the same interaction"
    capped = Counter(e.feedback.user for e in selection.over_cap)
    for entry in selection.over_cap:
        dropped[entry.stream_id] = f"over the per-user cap of {per_user_cap} for this round"
    counts["superseded"] = len(selection.superseded)
    counts["over_cap"] = len(selection.over_cap)
    counts["kept"] = len(selection.kept)

    units: list[list[Example]] = []  # per feedback entry: its 1 or 2 examples, de-duplicated
    known: set[tuple[str, str, bool]] = set()
    for entry in selection.kept:
        unit = []
        for example in _examples_of(entry, interactions[entry.stream_id]):
            if example.key in known:
                counts["duplicate_examples"] += 1
                continue
            known.add(example.key)
            unit.append(example)
        if unit:
            units.append(unit)
        else:
            dropped[entry.stream_id] = "duplicate of an example already in this round"

    latest = {(e.feedback.interaction_id, e.feedback.user): e.feedback.rating
              for e in sorted(usable, key=lambda e: _id_tuple(e.stream_id))}
    latest.update(ratings or {})  # the current ratings are at least as new as the batch
    chosen = select_distill(distill, tenant=tenant, ratings=latest, known=known,
                            user_examples=sum(len(unit) for unit in units),
                            share=distill_share, max_waiting=distill_max_waiting,
                            max_rejected=distill_rejected)
    dropped.update(chosen.dropped)
    users.update(chosen.users)
    counts.update(chosen.counts)
    holdout_units, train_units = _split_holdout(units, holdout_fraction, seed)
    held_distill, train_distill = _split_holdout(chosen.units, holdout_fraction, seed)
    holdout = [e for unit in holdout_units + held_distill for e in unit]
    train = [e for unit in train_units + train_distill for e in unit]
    carried_kept = []
    kept_carried = without_voted_down(carried, latest)
    counts["carried_voted_down"] = len(carried) - len(kept_carried)
    for example in kept_carried:
        if example.tenant == tenant and example.key not in known:
            known.add(example.key)
            carried_kept.append(example)
    train.extend(carried_kept)
    replay_size = max(round(replay_fraction * len(train)), min_replay) if train else 0
    replayed = _sample_replay(replay, tenant, known, replay_size, seed, counts)
    train.extend(replayed)

    consumed = sorted({*(e.stream_id for e in selection.kept), *dropped,
                       *(unit[0].stream_id for unit in chosen.units)}, key=_id_tuple)
    members = {sid: users[sid] for sid in consumed}
    members.update({e.stream_id: e.user for e in carried_kept})
    _check_tenant(tenant, train, holdout)

    new = [e for unit in units + chosen.units for e in unit]
    counts.update({
        "examples_new": len(new),
        "desirable": sum(e.desirable for e in new),
        "undesirable": sum(not e.desirable for e in new),
        "corrections": sum(1 for unit in units if unit[0].source == "correction"),
        "holdout": len(holdout),
        "carried": len(carried_kept),
        "train_new": len(train) - len(replayed),
        "replay": len(replayed),
        "train": len(train),
        "consumed": len(consumed),
        "capped_users": len(capped),
    })
    if capped:
        log.info("round for %s: per-user cap %d dropped %d entries of %d users", tenant,
                 per_user_cap, len(selection.over_cap), len(capped))
    return CuratedRound(tenant, train, holdout, consumed, members, dict(capped), dict(counts),
                        dropped, deferred=chosen.deferred)


def _share_cap(entries: Sequence[FeedbackEntry], share: float) -> int:
    """The largest per-user count ``c`` that keeps every user within ``share`` of the round.

    A user keeping ``min(n_u, c)`` entries is then at most ``share`` of the
    ``sum(min(n_v, c))`` kept (at least 1 each: a lone user is still a round's
    whole, and ``min_users`` decides whether that may train).
    """
    per_user = Counter(e.feedback.user for e in entries)  # an upper bound of what is kept
    cap = max(per_user.values(), default=1)
    while cap > 1 and cap > share * sum(min(n, cap) for n in per_user.values()):
        cap -= 1
    return cap


def _unusable(entry: FeedbackEntry, interaction: Interaction | None) -> str:
    fb = entry.feedback
    if interaction is None:
        return "interaction expired or unreadable"
    if interaction.id != fb.interaction_id:
        return f"joined interaction {interaction.id} is not the rated {fb.interaction_id}"
    if interaction.tenant != fb.tenant:
        return f"interaction tenant {interaction.tenant!r} != feedback tenant {fb.tenant!r}"
    if interaction.user != fb.user:
        return "the rating user is not the user who got the answer"
    if not interaction.messages:
        return "interaction has no prompt messages"
    return ""


def _examples_of(entry: FeedbackEntry, interaction: Interaction) -> list[Example]:
    fb = entry.feedback
    prompt = [{"role": m.role, "content": m.content} for m in interaction.messages]
    base: dict[str, Any] = {"tenant": fb.tenant, "user": fb.user,
                            "interaction_id": fb.interaction_id, "stream_id": entry.stream_id,
                            "prompt": prompt}
    answer = interaction.completion
    correction = (fb.correction or "").strip()
    if correction and correction != answer.strip():
        unit = [Example(**base, completion=correction, desirable=True, source="correction"),
                Example(**base, completion=answer, desirable=False, source="correction")]
        return unit + _rejected(base, interaction, correction, "correction")
    unit = [Example(**base, completion=answer, desirable=fb.rating == 1, source="thumbs")]
    return unit + (_rejected(base, interaction, answer, "thumbs") if fb.rating == 1 else [])


#: Most rejected samples of one answer kept as undesirable examples.
MAX_REJECTED = 3


def _rejected(base: dict[str, Any], interaction: Interaction, endorsed: str,
              source: str) -> list[Example]:
    """The local samples test-time compute drew and did not serve, which disagree with the
    answer the user endorsed: undesirable examples (at most :data:`MAX_REJECTED`)."""
    compute = interaction.compute
    if compute is None or compute.handed_off:  # a handed-off one is distilled instead
        return []
    seen = {tuple(words(endorsed)), tuple(words(interaction.completion))}  # labelled already
    found = []
    for candidate in compute.candidates:
        said = tuple(words(candidate))
        if said and said not in seen and not agrees(candidate, endorsed):
            seen.add(said)
            found.append(Example(**base, completion=candidate, desirable=False, source=source))
    return found[:MAX_REJECTED]


def _split_holdout(units: list[list[Example]], fraction: float,
                   seed: int) -> tuple[list[list[Example]], list[list[Example]]]:
    n = len(units)
    if fraction <= 0 or n < 2:
        return [], units
    size = min(max(1, round(fraction * n)), n - 1)
    rng = random.Random(f"holdout:{seed}")
    positive = [i for i, unit in enumerate(units) if unit[0].desirable]
    negative = [i for i, unit in enumerate(units) if not unit[0].desirable]
    rng.shuffle(positive)
    rng.shuffle(negative)
    order = [i for pair in _interleave(positive, negative) for i in pair]
    chosen = set(order[:size])
    return ([u for i, u in enumerate(units) if i in chosen],
            [u for i, u in enumerate(units) if i not in chosen])


def _interleave(a: list[int], b: list[int]) -> Iterable[tuple[int, ...]]:
    for i in range(max(len(a), len(b))):
        yield tuple(x[i] for x in (a, b) if i < len(x))


def _sample_replay(replay: Sequence[Example], tenant: str, known: set[tuple[str, str, bool]],
                   size: int, seed: int, counts: Counter[str]) -> list[Example]:
    own = []
    for example in replay:
        if example.tenant != tenant:
            counts["replay_foreign_tenant"] += 1
        elif example.key not in known:
            own.append(example)
    if counts["replay_foreign_tenant"]:
        log.warning("left out %d replay examples of other tenants from %s's round",
                    counts["replay_foreign_tenant"], tenant)
    size = min(size, len(own))
    if size <= 0:
        return []
    # What earlier rounds taught first: the answers to keep. Replayed rejections only push
    # down again what is already down, and a round of mostly those (a handed-off answer
    # comes with three rejected local samples) forgot taught answers that shared their
    # opening words.
    rng = random.Random(f"replay:{seed}")
    desirable = [e for e in own if e.desirable]
    undesirable = [e for e in own if not e.desirable]
    picked = rng.sample(desirable, min(size, len(desirable)))
    picked += rng.sample(undesirable, size - len(picked))
    return [replace(e, source="replay") for e in picked]


def _check_tenant(tenant: str, *groups: list[Example]) -> None:
    foreign = sorted({e.tenant for group in groups for e in group if e.tenant != tenant})
    if foreign:
        raise TenantMismatch(f"round for tenant {tenant!r} holds examples of {foreign}; "
                             "examples of different tenants must never mix")


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:  # not a Redis id (hand-made in tests): order after real ones
        return (1 << 62), 0
