"""Poisoning with many users: one user's share of a round is bounded, a round needs several
users, and a canary is judged only by users it was not trained on. Pure Python on the real
curation and canary code (the per-address feedback limit is tested over HTTP in
tests/integration/test_hardening_feedback_limits.py)."""

from __future__ import annotations

from feedback.events import Feedback, hash_user
from learner.canary import tally_ratings
from learner.config import LearnerConfig
from learner.curate import curate
from tests.integration.learner.learner_helpers import TENANT, interaction, rate


def _flood(user: str, n: int, start: int = 0):
    return [rate(interaction(f"Q{user}{i}?", "A.", user=user), 1, user=user)
            for i in range(start, start + n)]


def test_one_user_gets_at_most_the_configured_share_of_a_round():
    config = LearnerConfig()
    entries = _flood("mallory", 40) + _flood("bob", 4) + _flood("carol", 4)
    result = curate(entries, tenant=TENANT, per_user_cap=config.per_user_cap,
                    max_user_share=config.max_user_share, min_users=config.min_round_users,
                    holdout_fraction=0.0)
    mine = sum(e.user == hash_user("mallory") for e in result.train)
    assert mine <= config.max_user_share * len(result.train), (mine, len(result.train))
    assert mine == 8 and result.capped_users == {hash_user("mallory"): 32}


def test_a_round_from_too_few_users_waits_and_consumes_nothing():
    result = curate(_flood("mallory", 20), tenant=TENANT, per_user_cap=50, min_users=2)
    assert result.waiting and "min_round_users" in result.waiting
    assert result.train == [] and result.consumed_stream_ids == []


def test_canary_thumbs_of_the_users_it_was_trained_on_do_not_count():
    trained_on = {hash_user(f"sybil-{i}") for i in range(200)}
    events = [Feedback(interaction_id=f"{i:032x}", rating=1, user=hash_user(f"sybil-{i}"),
                       tenant=TENANT, adapter_version="canary-v") for i in range(200)]
    events += [Feedback(interaction_id="f" * 32, rating=-1, user=hash_user("dave"), tenant=TENANT,
                        adapter_version="canary-v")]
    tally = tally_ratings(events, {"canary-v"}, exclude_users=trained_on)["canary-v"]
    assert (tally.up, tally.down) == (0, 1)
