"""Issue 13, items 7 and 9 on a real Redis: the learner's consumer group lost (NOGROUP)
is recreated without losing accepted feedback, and the learner trims acknowledged
feedback on a schedule, never an unacknowledged entry."""

from __future__ import annotations

import asyncio
import threading

import pytest

from feedback.keys import RedisKeys
from learner.gate import GateConfig
from storage import register_candidate
from storage.db import open_registry
from tests.integration.learner_loop.test_hardening_learner import teach
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio(loop_scope="function")
GROUP = RedisKeys.LEARNER_GROUP

#: A learner that reads and holds feedback but never trains in these tests.
NO_ROUNDS = {"min_new_examples": 100_000, "min_round_examples": 100_000,
             "max_interval_s": 1_000_000, "gate": GateConfig(threads=1)}


async def _pending_ids(client, keys) -> set[str]:
    rows = await client.xpending_range(keys.feedback_stream, GROUP, min="-", max="+",
                                       count=10_000)
    return {r["message_id"].decode() for r in rows}


async def test_a_lost_consumer_group_is_recreated_and_no_accepted_feedback_is_lost(
    client, keys, new_learner
):
    await teach(client, keys, [f"before{i}" for i in range(4)])  # 8 events
    learner = new_learner(claim_idle_ms=300, **NO_ROUNDS)
    await learner.start()
    try:
        await learner.step()
        read = sorted(learner.waiting)
        assert len(read) == 8
        # A round committed two of them and acknowledged them (the ledger has them).
        trained = read[:2]
        with learner.sessions() as session:
            register_candidate(session, version_id="a" * 64, tenant="acme",
                               base_model="builtin:tiny", artifact_uri="/nowhere",
                               artifact_sha256="0" * 64, lora_config={}, metrics={},
                               dataset_stream_ids=trained, actor="test", reason="test")
        await learner.source.ack(trained)
        for stream_id in trained:
            learner.waiting.pop(stream_id)

        await client.xgroup_destroy(keys.feedback_stream, GROUP)  # the group is lost
        await teach(client, keys, [f"after{i}" for i in range(2)], offset=4)  # 4 more

        async def recovered():
            await asyncio.sleep(0.2)  # past the touch interval: the learner touches its own
            await learner.step()
            return len(learner.waiting) == 10 and await _pending_ids(client, keys)

        pending = await until(recovered, what="the learner holding all 10 unacked events")
        # Nothing written before the loss is skipped, nothing acked is trained again.
        assert pending == set(learner.waiting) and not pending & set(trained)
        assert learner.source.stats.groups_recreated >= 1
        await learner._ack(set(learner.waiting))  # a round's ack works on the new group
        assert await _pending_ids(client, keys) == set()
    finally:
        await learner.close()


async def test_acked_feedback_is_trimmed_on_a_schedule_and_pending_entries_stay(
    client, keys, learner_spec
):
    from learner.actor import run_forever

    spec = learner_spec(**NO_ROUNDS).model_copy(update={"trim_interval_s": 0.5})
    open_registry(spec.database_url)
    await teach(client, keys, [f"trim{i}" for i in range(5)])  # 10 events
    stop, holder = threading.Event(), {}
    thread = threading.Thread(target=lambda: asyncio.run(run_forever(spec, stop, holder)))
    thread.start()
    try:
        await until(lambda: len(holder.get("learner").waiting) == 10
                    if holder.get("learner") else False,
                    what="the learner holding the 10 events", timeout_s=120)
        ids = sorted((await _pending_ids(client, keys)), key=lambda i: tuple(
            int(p) for p in i.split("-")))
        acked, unacked = ids[:4] + ids[6:7], ids[4:6] + ids[7:]
        await client.xack(keys.feedback_stream, GROUP, *acked)

        async def trimmed():
            return await client.xlen(keys.feedback_stream) == 10 - 4

        await until(trimmed, what="the 4 acked entries below the oldest pending trimmed",
                    timeout_s=120)
        # The acked entry after a pending one stays (XTRIM MINID), every pending one stays.
        left = {e[0].decode() for e in await client.xrange(keys.feedback_stream)}
        assert left == set(unacked) | {ids[6]}
        assert await _pending_ids(client, keys) == set(unacked)
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive()


async def test_redis_restored_without_the_group_loses_no_accepted_feedback(
    keys, learner_spec, embedded, tmp_path
):
    """Redis killed and brought back from a backup taken before the learner's group
    existed: NOGROUP on a new connection. The learner, still running, recreates the group,
    is delivered every entry of the backup again, and acks (without retraining) those its
    ledger has."""
    import shutil

    from feedback.connections import async_client
    from learner.actor import build_learner

    client = async_client(embedded.url)
    await teach(client, keys, [f"kept{i}" for i in range(4)])  # 8 accepted events
    embedded.stop()  # a consistent copy of its data: the backup, before any group
    backup = tmp_path / "backup"
    shutil.copytree(embedded.dir, backup, ignore=shutil.ignore_patterns("*.pid"))
    embedded.start()
    learner = build_learner(learner_spec(claim_idle_ms=300, **NO_ROUNDS).model_copy(
        update={"redis_url": embedded.url}))
    await learner.start()
    try:
        await learner.step()
        read = sorted(learner.waiting)
        assert len(read) == 8
        trained = read[:3]  # a round committed these and acked them
        with learner.sessions() as session:
            register_candidate(session, version_id="b" * 64, tenant="acme",
                               base_model="builtin:tiny", artifact_uri="/nowhere",
                               artifact_sha256="0" * 64, lora_config={}, metrics={},
                               dataset_stream_ids=trained, actor="test", reason="test")
        await learner._ack(set(trained))

        embedded.kill()  # crash, and restore the backup: the group is gone
        shutil.rmtree(embedded.dir)
        shutil.copytree(backup, embedded.dir)
        embedded.start()
        await client.aclose()
        client = async_client(embedded.url)
        assert await client.xlen(keys.feedback_stream) == 8
        # The learner lived through it, still holding the 5 untrained events.

        async def recovered():
            try:
                await learner.step()
            except Exception:  # the first command on a dropped connection fails
                return False
            return len(learner.waiting) == 5 and await _pending_ids(client, keys)

        pending = await until(recovered, what="the learner holding the 5 untrained events")
        assert pending == set(learner.waiting) == set(read) - set(trained)
    finally:
        await learner.close()
        await client.aclose()


async def test_trim_keeps_what_a_lost_group_had_not_acknowledged(client, keys, new_learner):
    """Another group has read and acked everything; the learner's group is lost: a trim
    then must not go by the other group alone."""
    await teach(client, keys, [f"other{i}" for i in range(2)])  # 4 events
    learner = new_learner(**NO_ROUNDS)
    await learner.source.ensure_group()
    await client.xgroup_create(keys.feedback_stream, "audit", id="0")
    read = await client.xreadgroup("audit", "a1", {keys.feedback_stream: ">"})
    await client.xack(keys.feedback_stream, "audit", *[i for i, _ in read[0][1]])
    await client.xgroup_destroy(keys.feedback_stream, GROUP)  # ours, with nothing acked
    try:
        assert await learner.source.trim() == 0
        assert await client.xlen(keys.feedback_stream) == 4
        assert len(await learner.source.read()) == 4  # recreated: all delivered again
    finally:
        await learner.close()
