"""A caller already over a rate limit is refused before its text is redacted (issue 13,
item 5): a flood of rate-limited corrections costs no redaction work."""

from __future__ import annotations

import pytest

from feedback import FeedbackConfig, FeedbackStore, RateLimited
from feedback.redact import RegexRedactor


class CountingRedactor(RegexRedactor):
    """The default redactor, counting the texts it is given (injected, not patched)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def redact(self, text: str) -> str:
        self.calls += 1
        return super().redact(text)


@pytest.mark.parametrize("limit", ["user", "address"])
async def test_over_the_limit_a_correction_is_refused_before_it_is_redacted(
        redis_url, keys, make_interaction, put_interactions, limit):
    interactions = [make_interaction() for _ in range(3)]
    await put_interactions(*interactions)
    config = {"user": FeedbackConfig(user_limit=2),
              "address": FeedbackConfig(address_limit=2)}[limit]
    redactor = CountingRedactor()
    async with FeedbackStore(redis_url, keys, config, redactor=redactor) as store:
        for interaction in interactions[:2]:
            await store.record(interaction_id=interaction.id, user="alice", rating="down",
                               correction="write to me at a@b.example", address="10.0.0.7")
        assert redactor.calls == 2
        with pytest.raises(RateLimited) as refused:
            await store.record(interaction_id=interactions[2].id, user="alice", rating="down",
                               correction="x" * 5000, address="10.0.0.7")
    assert refused.value.retry_after_s >= 1 and limit in str(refused.value)
    assert redactor.calls == 2  # the refused correction was never redacted
