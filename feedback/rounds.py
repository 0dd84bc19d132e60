"""What one learning round may train on: the learner's selection from a batch of entries.

Two rules against noise and poisoning, applied to the entries one read returned
(:class:`~feedback.events.FeedbackEntry`): a user's newest rating of an
interaction supersedes their older ones, and no user contributes more than a
fixed number of examples to one round. The rest is reported, so the caller can
acknowledge the superseded entries and keep the over-cap ones for a later round.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from feedback.connections import stream_id
from feedback.events import FeedbackEntry


@dataclass(frozen=True)
class RoundSelection:
    """What one learning round may train on, from one batch of entries."""

    kept: list[FeedbackEntry]  #: newest rating per (user, interaction), within the user cap
    superseded: list[FeedbackEntry]  #: older ratings of an interaction re-rated in the batch
    over_cap: list[FeedbackEntry]  #: beyond a user's cap (later ones); defer or drop


def select_for_round(entries: Sequence[FeedbackEntry], per_user_cap: int) -> RoundSelection:
    """Newest rating wins per (user, interaction); each user keeps at most ``per_user_cap``.

    ``per_user_cap`` is ``LearnerConfig.per_user_cap`` (learner.config). Within
    the cap, a user's entries are kept in stream order (oldest first), so the
    over-cap ones are the latest and can wait for the next round.
    """
    ordered = sorted(entries, key=lambda e: stream_id(e.stream_id))
    latest: dict[tuple[str, str], FeedbackEntry] = {}
    for entry in ordered:
        latest[(entry.feedback.user, entry.feedback.interaction_id)] = entry
    winners = {id(e) for e in latest.values()}
    taken: Counter[str] = Counter()
    kept, superseded, over_cap = [], [], []
    for entry in ordered:
        if id(entry) not in winners:
            superseded.append(entry)
        elif taken[entry.feedback.user] >= per_user_cap:
            over_cap.append(entry)
        else:
            taken[entry.feedback.user] += 1
            kept.append(entry)
    return RoundSelection(kept, superseded, over_cap)
