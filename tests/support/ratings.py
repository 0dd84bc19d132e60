"""Rated answers recorded below HTTP exactly as the product records them.

For the learner-loop tests and ``bench/learner_loop.py``: each answer is logged
as serving logs it (the interaction under its key, with an expiry) and rated
through the real :class:`~feedback.store.FeedbackStore`, so the learner reads
what it reads in production.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from feedback.events import BASE_VERSION, Interaction, hash_user
from feedback.store import FeedbackConfig, FeedbackStore

#: Limits no test or bench reaches: rate limiting has tests of its own.
UNLIMITED = FeedbackConfig(user_limit=10**6, tenant_limit=10**7)


@dataclass(frozen=True)
class Rated:
    """``user`` asked ``question``, got ``answer`` and rated it (``"up"`` / ``"down"``)."""

    user: str
    question: str
    answer: str
    rating: str
    correction: str | None = None
    tenant: str = "acme"
    adapter_version: str = BASE_VERSION


async def record_ratings(client, keys, rated: Iterable[Rated]) -> list[str]:
    """Log each answer and record its rating, in order; returns the interaction ids."""
    store = FeedbackStore(client, keys, UNLIMITED)
    await store.start()
    ids = []
    for r in rated:
        interaction = Interaction(
            tenant=r.tenant, user=hash_user(r.user), model=r.tenant,
            adapter_version=r.adapter_version,
            messages=[{"role": "user", "content": r.question}], completion=r.answer)
        await client.set(keys.interaction(interaction.id), interaction.to_json(), ex=600)
        await store.record(interaction_id=interaction.id, user=r.user, rating=r.rating,
                           correction=r.correction)
        ids.append(interaction.id)
    return ids
