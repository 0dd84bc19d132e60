"""What starts the learner's next round: its trigger rules, and a reading of them for ops.

A round starts on a **burst** (``min_new_examples`` feedback events waiting), on a
**settle** (at least ``min_round_examples`` waiting and no new one for ``settle_s``: users
paused), or at the **interval** (``max_interval_s`` since the last round, if any event
waits). Events the last round could not use yet (``deferred``: too few users, only
thumbs-down, handed-off answers over the distillation bound) start nothing by themselves
before the interval: only new feedback or the interval does.

:func:`is_due` is the rule the learner acts on; :func:`next_trigger` says, for
`loraloop learner status` and the ops view, which of them fires first if nothing new
arrives, and when. The two agree: a round is due exactly when ``in_s`` is 0.
"""

from __future__ import annotations

from typing import Any

#: Reasons, in the order that breaks a tie between triggers firing at the same moment.
REASONS = ("burst", "settle", "interval", "waiting_for_feedback")


def is_due(config: Any, *, waiting: int, deferred: int, since_round_s: float,
           since_arrival_s: float) -> bool:
    """Whether a round starts now; ``config`` is a :class:`learner.config.LearnerConfig`."""
    overdue = since_round_s >= config.max_interval_s
    if waiting <= deferred and not overdue:
        return False  # the last round could not train on these; wait for new ones
    settled = waiting >= config.min_round_examples and since_arrival_s >= config.settle_s
    return waiting >= config.min_new_examples or settled or (waiting > 0 and overdue)


def next_trigger(config: Any, *, waiting: int, deferred: int, since_round_s: float,
                 since_arrival_s: float, now: float) -> dict[str, Any]:
    """The trigger that starts the next round if no new feedback arrives.

    ``reason`` is ``burst``, ``settle``, ``interval`` or ``waiting_for_feedback`` (nothing
    waits: the next round needs new feedback); ``at`` is when (epoch seconds, ``now`` +
    ``in_s``; ``None`` while waiting for feedback), ``in_s`` how long from ``now`` (0: due).
    ``backlog`` events wait; ``needed`` start a round at once, ``settle_needed`` after a
    pause of ``settle_s``; ``deferred`` of them wait for new feedback or the interval.
    """
    candidates: list[tuple[float, int, str]] = []
    if waiting > 0:
        candidates.append((max(0.0, config.max_interval_s - since_round_s), 2, "interval"))
        if waiting > deferred:
            if waiting >= config.min_new_examples:
                candidates.append((0.0, 0, "burst"))
            if waiting >= config.min_round_examples:
                candidates.append((max(0.0, config.settle_s - since_arrival_s), 1, "settle"))
    reading: dict[str, Any] = {
        "backlog": waiting, "needed": config.min_new_examples,
        "settle_needed": config.min_round_examples, "settle_s": config.settle_s,
        "max_interval_s": config.max_interval_s, "deferred": min(deferred, waiting),
    }
    if not candidates:
        return {"reason": "waiting_for_feedback", "at": None, "in_s": None, **reading}
    in_s, _, reason = min(candidates)
    return {"reason": reason, "at": round(now + in_s, 3), "in_s": round(in_s, 3), **reading}
