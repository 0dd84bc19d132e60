"""Kill the learner at each dangerous point; a restarted one trains every event at most once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from feedback.keys import RedisKeys
from learner.actor import LearnerSpec, run_forever
from learner.gate import GateConfig
from learner.loop import LearnerConfig
from learner.train import TrainConfig
from storage import dataset_stream_ids, list_versions
from tests.integration.learner_loop.conftest import REDIS_URL
from tests.integration.learner_loop.test_rounds import teach

pytestmark = pytest.mark.asyncio(loop_scope="function")

CHILD = """
import asyncio, sys, threading
from learner.actor import LearnerSpec, run_forever
spec = LearnerSpec.model_validate_json(sys.argv[1])
asyncio.run(run_forever(spec, threading.Event(), {}))
"""


def spec_for(keys, tmp_path, tiny_model_dir, crash_at=None) -> LearnerSpec:
    return LearnerSpec(
        redis_url=REDIS_URL,
        redis_prefix=keys.prefix,
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        artifacts_location=str(tmp_path / "artifacts"),
        base_model=str(tiny_model_dir),
        base_model_name="builtin:tiny",
        data_dir=str(tmp_path),
        config=LearnerConfig(
            min_new_examples=8,
            claim_idle_ms=500,
            crash_at=crash_at,
            train=TrainConfig(epochs=2, learning_rate=5e-3, threads=1, rank=4),
            gate=GateConfig(enforce=False, auto_promote="live", threads=1),
        ),
    )


@pytest.mark.parametrize("point", ["after_read", "after_train", "after_commit"])
async def test_a_learner_killed_at_any_point_loses_and_repeats_nothing(
    client, keys, tmp_path, tiny_model_dir, point
):
    sent = await teach(client, keys, [f"user{i}" for i in range(16)])
    crashing = spec_for(keys, tmp_path, tiny_model_dir, crash_at=point)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, crashing.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert child.returncode == 17, child.stderr[-2000:]  # it died where we asked

    # A new learner (as Ray would restart it) takes over the abandoned entries.
    stop, holder = threading.Event(), {}
    runner = asyncio.create_task(
        run_forever(spec_for(keys, tmp_path, tiny_model_dir), stop, holder)
    )
    try:
        for _ in range(600):
            await asyncio.sleep(0.2)
            pending = await client.xpending(keys.feedback_stream, RedisKeys.LEARNER_GROUP)
            if pending["pending"] == 0 and holder.get("learner") and not holder["learner"].waiting:
                break
        assert pending["pending"] == 0, pending
    finally:
        stop.set()
        await asyncio.wait_for(runner, 60)

    from storage.db import open_registry

    with open_registry(f"sqlite:///{tmp_path / 'registry.db'}")() as session:
        versions = list_versions(session, tenant="acme")
        snapshots = [dataset_stream_ids(session, version_id=v.id) for v in versions]
    in_snapshots = [sid for snapshot in snapshots for sid in snapshot]
    assert len(in_snapshots) == len(set(in_snapshots))  # no event trained twice
    assert len(set(in_snapshots)) == sent  # and none lost
    expected_versions = 1
    assert len(versions) == expected_versions, [v.status for v in versions]
