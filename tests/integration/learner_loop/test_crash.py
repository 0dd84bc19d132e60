"""Kill the learner at each dangerous point; a restarted one trains every event at most once."""

from __future__ import annotations

import asyncio
import threading

import pytest

from feedback.keys import RedisKeys
from learner.actor import run_forever
from learner.gate import GateConfig
from learner.train import TrainConfig
from storage import dataset_stream_ids, list_versions
from tests.support.capitals import thumbs
from tests.support.ratings import record_ratings
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio(loop_scope="function")

CONFIG = dict(min_new_examples=8, claim_idle_ms=500,
              train=TrainConfig(epochs=2, learning_rate=5e-3, threads=1, rank=4),
              gate=GateConfig(enforce=False, auto_promote="live", threads=1))


@pytest.mark.parametrize("point", ["after_read", "after_train", "after_commit"])
async def test_a_learner_killed_at_any_point_loses_and_repeats_nothing(
    client, keys, registry, learner_spec, learner_process, point
):
    sent = len(await record_ratings(client, keys, thumbs([f"user{i}" for i in range(16)])))
    child = learner_process(learner_spec(crash_at=point, **CONFIG))
    assert child.returncode == 17, child.stderr[-2000:]  # it died where we asked

    # A new learner (as Ray would restart it) takes over the abandoned entries.
    stop, holder = threading.Event(), {}
    runner = asyncio.create_task(run_forever(learner_spec(**CONFIG), stop, holder))

    async def all_acked() -> bool:
        pending = await client.xpending(keys.feedback_stream, RedisKeys.LEARNER_GROUP)
        return (pending["pending"] == 0 and holder.get("learner") is not None
                and not holder["learner"].waiting)

    try:
        await until(all_acked, what="the restarted learner acknowledging everything",
                    timeout_s=240, every_s=0.2)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 60)
    pending = await client.xpending(keys.feedback_stream, RedisKeys.LEARNER_GROUP)
    assert pending["pending"] == 0, pending

    with registry() as session:
        versions = list_versions(session, tenant="acme")
        snapshots = [dataset_stream_ids(session, version_id=v.id) for v in versions]
    in_snapshots = [sid for snapshot in snapshots for sid in snapshot]
    assert len(in_snapshots) == len(set(in_snapshots))  # no event trained twice
    assert len(set(in_snapshots)) == sent  # and none lost
    expected_versions = 1
    assert len(versions) == expected_versions, [v.status for v in versions]
