"""A round's feedback must come from enough users, none of them owning too much of it
(issue 13, poisoning): the loop waits, keeping every entry, until it does."""

from __future__ import annotations

import pytest

from learner.train import TrainConfig
from storage import dataset_stream_ids, list_versions
from tests.support.capitals import thumbs
from tests.support.ratings import record_ratings

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_one_users_feedback_waits_for_a_second_user_and_then_trains(
    client, keys, registry, new_learner
):
    # 24 entries (12 thumbs pairs), all from one user: too few users for a round.
    alone = await record_ratings(client, keys, thumbs(["mallory"] * 12))
    learner = new_learner(min_new_examples=8, holdout_fraction=0.25, min_round_users=2,
                          max_user_share=0.5,
                          train=TrainConfig(epochs=4, learning_rate=5e-3, threads=1, rank=4))
    await learner.start()
    [report] = await learner.step()
    assert report["outcome"].startswith("waiting for more feedback"), report
    with registry() as session:
        assert list_versions(session, tenant="acme") == []
    assert len(learner.waiting) == len(alone)  # nothing acked, nothing lost

    # Others join: the round trains, and no user is more than half of what it took.
    await record_ratings(client, keys, thumbs([f"user{i}" for i in range(8)]))
    [report] = await learner.step()
    await learner.close()
    assert report["outcome"] not in (None, "nothing to train"), report
    assert not report["outcome"].startswith("waiting"), report
    with registry() as session:
        [version] = list_versions(session, tenant="acme")
        trained = dataset_stream_ids(session, version_id=version.id)
    # mallory's 24 entries against the others' 16 may fill at most half of the round.
    assert trained and report["capped_users"] == 1, report
