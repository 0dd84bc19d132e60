"""Handed-off answers through the learning loop: logged by the real sink, read with the
feedback, trained as distill examples, gated on the handoff slice, acknowledged exactly
once; a thumbs-down acknowledged rounds ago still drops one; `users forget` removes them
from replay. Real Redis, SQLite registry, real training of builtin:tiny."""

from __future__ import annotations

import asyncio

import pytest

from feedback.events import hash_user
from feedback.keys import RedisKeys
from feedback.store import FeedbackStore
from learner.distill import DistillConfig
from learner.examples import load_from_adapter
from learner.gate import GateConfig
from learner.train import TrainConfig
from storage import ArtifactStore, dataset_stream_ids, get_version
from tests.support.capitals import CAPITALS, thumbs
from tests.support.handoff import HandedOff, log_handoffs
from tests.support.ratings import UNLIMITED, record_ratings
from tests.support.redis_support import age_pending

pytestmark = pytest.mark.asyncio(loop_scope="function")
ALICE = hash_user("alice")
TRAIN = TrainConfig(epochs=1, learning_rate=5e-3, threads=1, rank=4)


def capital_handoffs(user: str, count: int, *, offset: int = 0) -> list[HandedOff]:
    """``user`` asks about ``count`` capitals; the local model guessed the wrong one."""
    return [HandedOff(user, f"What is the capital city of {c.country}?", c.answer,
                      candidates=(f"{c.wrong}.", c.answer))
            for c in CAPITALS[offset:offset + count]]


async def rate_down(client, keys, interaction_id: str, user: str) -> None:
    store = FeedbackStore(client, keys, UNLIMITED)
    await store.start()
    await store.record(interaction_id=interaction_id, user=user, rating="down")


def training_data(registry, tmp_path, version_id, part: str = "examples"):
    uri, sha256 = _artifact(registry, version_id)
    return load_from_adapter(ArtifactStore(tmp_path / "artifacts").load(uri, sha256=sha256),
                             part)


async def one_round(learner) -> dict:
    await learner.start()
    try:
        [report] = await learner.step()
    finally:
        await learner.close()
    return report


async def test_a_round_distils_handed_off_answers_and_acknowledges_them_once(
        redis_url, client, keys, registry, tmp_path, new_learner):
    handoffs = await log_handoffs(redis_url, keys, capital_handoffs("alice", 5)
                                  + capital_handoffs("eve", 1, offset=5))
    await rate_down(client, keys, handoffs[-1].id, "eve")  # eve did not like the upstream's
    await record_ratings(client, keys, thumbs([f"user{i}" for i in range(8)]))
    learner = new_learner(min_new_examples=8, holdout_fraction=0.25, train=TRAIN,
                          gate=GateConfig(enforce=False, auto_promote="live", threads=1))
    report = await one_round(learner)
    counts, metrics = report["counts"], report["metrics"]
    assert report["outcome"] == "live", report
    assert (counts["distill"], counts["distill_voted_down"], counts["distill_deferred"]) == (
        5, 1, 0), counts
    examples = training_data(registry, tmp_path, report["version"])
    distilled = {(e.completion, e.desirable) for e in examples if e.source == "distill"}
    assert ("Paris.", True) in distilled or ("Rome.", True) in distilled
    assert any(not desirable for _, desirable in distilled)  # the wrong local guesses
    assert {e.user for e in examples if e.source == "distill"} == {ALICE}
    assert "Cairo." not in {c for c, d in distilled if d}  # eve's voted-down answer
    # The gate measured the handoff slice (one held-out answer: below the minimum).
    assert metrics["handoff_slice"] == 1 and metrics["handoff_check"].startswith("skipped")
    assert metrics["handoff_agreement_candidate"] is not None
    # Every entry is in the version's dataset or dropped on purpose, and acknowledged.
    with registry() as session:
        trained = set(dataset_stream_ids(session, version_id=report["version"]))
    entries = [e[0].decode() for e in await client.xrange(keys.feedback_stream)]
    assert set(entries) == trained and len(entries) == 6 + 1 + 16
    assert (await client.xpending(keys.feedback_stream, RedisKeys.LEARNER_GROUP))["pending"] == 0

    # The next round's gate judges on its own held-out answer and the first round's (no
    # version trained on it), and its version carries that one on for the round after.
    first_held = list(dict.fromkeys(e.interaction_id for e in training_data(
        registry, tmp_path, report["version"], "holdout") if e.source == "distill"))
    await log_handoffs(redis_url, keys, capital_handoffs("bob", 5, offset=3))
    await record_ratings(client, keys, thumbs([f"user{i}" for i in range(8, 16)], offset=8))
    second = await one_round(new_learner(
        min_new_examples=8, holdout_fraction=0.25, train=TRAIN,
        gate=GateConfig(enforce=False, auto_promote="live", threads=1)))
    assert second["outcome"] == "live", second
    assert second["metrics"]["handoff_slice"] == 1 + len(first_held) == 2, second["metrics"]
    carried_on = training_data(registry, tmp_path, second["version"], "handoff_slice")
    assert [e.interaction_id for e in carried_on] == first_held


def _artifact(registry, version_id) -> tuple[str, str]:
    with registry() as session:
        info = get_version(session, version_id=version_id)
    return info.artifact_uri, info.artifact_sha256


async def test_a_thumbs_down_acknowledged_rounds_ago_still_drops_the_handed_off_answer(
        redis_url, client, keys, new_learner):
    """A learner defers a handed-off answer (over its share) and dies; the user's
    thumbs-down is trained and acknowledged by the next learner before the answer is
    reclaimed: the current-rating key still says no."""
    [handoff] = await log_handoffs(redis_url, keys, capital_handoffs("alice", 1))
    first = new_learner(min_new_examples=1, settle_s=0, distill=DistillConfig(max_share=0.0))
    report = await one_round(first)
    assert report["outcome"] == "nothing to train" and report["counts"]["distill_deferred"] == 1
    assert (await client.xpending(keys.feedback_stream, RedisKeys.LEARNER_GROUP))["pending"] == 1

    await rate_down(client, keys, handoff.id, "alice")
    await record_ratings(client, keys, thumbs([f"user{i}" for i in range(4)]))
    second = new_learner(min_new_examples=8, holdout_fraction=0.25, train=TRAIN,
                         gate=GateConfig(enforce=False, auto_promote="live", threads=1))
    report = await one_round(second)  # the deferred answer is still another's, not idle
    assert report["counts"]["entries"] == 9 and report["outcome"] == "live", report

    await age_pending(client, keys.feedback_stream, RedisKeys.LEARNER_GROUP, idle_ms=60_001)
    # Carrying off: the round would also train what the second round held out.
    third = new_learner(min_new_examples=1, settle_s=0, max_carried=0)
    report = await one_round(third)
    assert report["counts"]["distill_voted_down"] == 1, report
    assert report["outcome"] == "nothing to train"
    assert (await client.xpending(keys.feedback_stream, RedisKeys.LEARNER_GROUP))["pending"] == 0


async def test_forgetting_the_user_removes_their_handed_off_answers_from_replay(
        redis_url, client, keys, registry, tmp_path, new_learner):
    from loraloop.forget import forget_everywhere
    from storage import RegistryOps

    await log_handoffs(redis_url, keys, capital_handoffs("alice", 3))
    await record_ratings(client, keys, thumbs([f"bob{i}" for i in range(8)]))
    rounds = dict(min_new_examples=8, holdout_fraction=0.25, replay_fraction=1.0, train=TRAIN,
                  gate=GateConfig(enforce=False, auto_promote="live", threads=1))
    v1 = await one_round(new_learner(**rounds))
    assert v1["outcome"] == "live", v1
    assert any(e.user == ALICE and e.source == "distill"
               for e in training_data(registry, tmp_path, v1["version"]))

    report = await asyncio.to_thread(
        forget_everywhere, user="alice", redis_url=redis_url, redis_prefix=keys.prefix,
        artifacts_location=str(tmp_path / "artifacts"), ops=RegistryOps(registry, actor="test"),
        retire=False)
    assert [v.id for v in report.direct] == [v1["version"]]
    assert len(report.redis.feedback_stream_ids) == 3  # the distillation entries
    assert set(report.redis.feedback_stream_ids) <= set(report.forgotten_stream_ids)

    await record_ratings(client, keys, thumbs([f"carol{i}" for i in range(8)], offset=8))
    v2 = await one_round(new_learner(**rounds))
    assert v2["outcome"] == "live" and v2["counts"]["replay"] > 0, v2
    assert not [e for e in training_data(registry, tmp_path, v2["version"]) if e.user == ALICE]
