"""Learning rounds end to end below HTTP: stream -> curate -> train -> gate -> registry -> ack."""

from __future__ import annotations

import pytest

from feedback.keys import RedisKeys
from learner.gate import GateConfig
from learner.train import TrainConfig
from storage import ArtifactStore, dataset_stream_ids, get_alias, list_versions
from tests.support.capitals import thumbs
from tests.support.ratings import Rated, record_ratings
from tests.support.redis_support import age_pending

pytestmark = pytest.mark.asyncio(loop_scope="function")

FAST_TRAIN = TrainConfig(epochs=4, learning_rate=5e-3, threads=1, rank=4)


@pytest.fixture
def make_learner(new_learner):
    """A learner of these tests: rounds of 8 events, a quarter held out for the gate."""

    def make(**config):
        config.setdefault("train", FAST_TRAIN)
        return new_learner(min_new_examples=8, holdout_fraction=0.25, **config)

    return make


async def teach(client, keys, users: list[str], *, offset: int = 0) -> int:
    """Each user rates a right and a wrong answer about a capital (``capitals.thumbs``)."""
    return len(await record_ratings(client, keys, thumbs(users, offset=offset)))


async def test_a_round_trains_gates_promotes_and_acks_exactly_what_it_used(
    client, keys, registry, make_learner
):
    sent = await teach(client, keys, [f"user{i}" for i in range(32)])
    learner = make_learner()
    await learner.start()
    reports = await learner.step()
    await learner.close()
    [report] = reports
    assert report["outcome"] == "live", report
    with registry() as session:
        [version] = list_versions(session, tenant="acme")
        trained = dataset_stream_ids(session, version_id=version.id)
        live = get_alias(session, tenant="acme", alias="live")
    assert live.version_id == version.id and version.parent_id is None
    assert len(trained) == sent  # every event in the snapshot, none twice
    assert set(report["timings"]) >= {"read_s", "curate_s", "train_s", "evaluate_s", "publish_s"}
    pending = await client.xpending(keys.feedback_stream, RedisKeys.LEARNER_GROUP)
    assert pending["pending"] == 0


async def test_a_crash_between_commit_and_ack_never_trains_twice(
    client, keys, registry, make_learner, learner_spec, learner_process
):
    sent = await teach(client, keys, [f"user{i}" for i in range(10)])
    # The first learner dies right after its version commits, before any ack reaches Redis.
    crashing = learner_spec(min_new_examples=8, crash_at="after_commit",
                            train=TrainConfig(epochs=1, learning_rate=5e-3, threads=1, rank=4),
                            gate=GateConfig(enforce=False, auto_promote="live", threads=1))
    child = learner_process(crashing)
    assert child.returncode == 17, child.stderr[-2000:]  # it died where we asked
    with registry() as session:
        [version] = list_versions(session, tenant="acme")  # its round did commit
        assert len(dataset_stream_ids(session, version_id=version.id)) == sent
    pending = await client.xpending(keys.feedback_stream, RedisKeys.LEARNER_GROUP)
    assert pending["pending"] > 0

    restarted = make_learner(claim_idle_ms=60_000)
    await restarted.start()
    # The dead learner's entries look abandoned (idle past claim_idle_ms) at once.
    await age_pending(client, keys.feedback_stream, RedisKeys.LEARNER_GROUP, idle_ms=60_001)
    assert await restarted.step() == []  # recognised as trained: acked, no new round
    await restarted.close()
    with registry() as session:
        assert len(list_versions(session, tenant="acme")) == 1
    pending = await client.xpending(keys.feedback_stream, RedisKeys.LEARNER_GROUP)
    assert pending["pending"] == 0


async def test_one_flooding_user_is_capped(client, keys, registry, make_learner):
    await teach(client, keys, ["flooder"] * 20 + ["a", "b", "c", "d"])
    learner = make_learner(per_user_cap=6)
    await learner.start()
    [report] = await learner.step()
    await learner.close()
    assert report["capped_users"] == 1
    with registry() as session:
        [version] = list_versions(session, tenant="acme")
        trained = dataset_stream_ids(session, version_id=version.id)
    assert len(trained) == 48  # all consumed (capped ones too), so none is read again


async def test_later_rounds_warm_start_replay_from_storage_and_survive_a_shape_change(
    client, keys, registry, tmp_path, make_learner
):
    from learner.examples import load_from_adapter
    from storage import get_version

    def published_examples(version_id, part="examples"):
        with registry() as session:
            info = get_version(session, version_id=version_id)
        store = ArtifactStore(tmp_path / "artifacts")
        return load_from_adapter(store.load(info.artifact_uri, sha256=info.artifact_sha256),
                                 part)

    gate = GateConfig(enforce=False, auto_promote="live", threads=1)
    versions = []
    for round_, rank in enumerate((4, 4, 8)):  # the third round changes the LoRA rank
        # Each round asks in another phrasing: earlier examples are not new ones again.
        await teach(client, keys, [f"round{round_}-user{i}" for i in range(8)], offset=8 * round_)
        # A new learner each time: replay must come from storage, not this process.
        learner = make_learner(
            train=TrainConfig(epochs=1, learning_rate=5e-3, threads=1, rank=rank),
            gate=gate,
            replay_fraction=0.5,
        )
        await learner.start()
        [report] = await learner.step()
        await learner.close()
        assert report["outcome"] == "live", report
        versions.append(report)

    first, second, third = versions
    own = published_examples(first["version"])
    assert own and {e.source for e in own} == {"thumbs"}
    # Round 2: warm-started from round 1 and replaying round 1's published examples.
    assert second["counts"]["replay"] > 0 and second["metrics"]["warm_start"] is True
    replayed = [e for e in published_examples(second["version"]) if e.source == "replay"]
    assert {e.key for e in replayed} <= {e.key for e in own}
    # What round 1 held out for its gate teaches round 2, as feedback of its own.
    held_out = published_examples(first["version"], "holdout")
    assert held_out and second["counts"]["carried"] >= len(held_out)
    trained = {e.key: e.source for e in published_examples(second["version"])}
    assert all(trained.get(e.key) == "thumbs" for e in held_out), held_out
    # Round 3: rank 8 cannot warm-start a rank-4 parent: a fresh adapter, saying why.
    assert third["metrics"]["warm_start"] is False
    assert "rank 8" in third["metrics"]["warm_start_skipped"]
    with registry() as session:
        assert get_version(session, version_id=second["version"]).parent_id == first["version"]
        assert get_version(session, version_id=third["version"]).parent_id is None
        assert get_alias(session, tenant="acme", alias="live").version_id == third["version"]


async def test_a_candidate_worse_on_the_holdout_is_rejected_and_never_served(
    client, keys, registry, tmp_path, tiny_model_dir, make_learner
):
    from serving.adapters import AdapterManager
    from serving.engines import EngineConfig
    from serving.engines.hf import HFEngine
    from serving.registry_view import RegistryView
    from storage import IllegalTransition, get_version
    from storage import promote as promote_version

    await teach(client, keys, [f"good{i}" for i in range(32)])
    good = make_learner()
    await good.start()
    [first] = await good.step()
    await good.close()
    assert first["outcome"] == "live", first

    # A round whose training diverges (a learning rate 200x too high) makes the
    # held-out answers less likely than the live version does.
    await teach(client, keys, [f"more{i}" for i in range(16)], offset=32)
    wild = make_learner(train=TrainConfig(epochs=3, learning_rate=1.0, threads=1, rank=4))
    await wild.start()
    [second] = await wild.step()
    await wild.close()
    assert second["outcome"].startswith("rejected: "), second
    with registry() as session:
        assert get_version(session, version_id=second["version"]).status == "rejected"
        with pytest.raises(IllegalTransition):
            promote_version(session, version_id=second["version"], actor="test")

    engine = HFEngine(EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny", threads=1))
    await engine.start()
    try:
        view = RegistryView(
            database_url=f"sqlite:///{tmp_path / 'registry.db'}",
            artifacts_location=str(tmp_path / "artifacts"),
            cache_dir=tmp_path / "cache",
        )
        manager = AdapterManager(engine, view, max_resident=4)
        await manager.reconcile()  # what every replica does
        assert manager.routes["acme"].live == first["version"]
        assert second["version"] not in engine.loaded_adapters()
    finally:
        await engine.shutdown()


async def test_a_tenant_that_cannot_train_yet_does_not_hold_back_another(
    client, keys, registry, make_learner
):
    # "aardvark" (sorted first) has only thumbs-down: nothing to train.
    await record_ratings(client, keys, [Rated(f"a{i}", "Hi", "no", "down", tenant="aardvark")
                                        for i in range(5)])
    await teach(client, keys, [f"first{i}" for i in range(16)])
    # The gate always passes here: what is tested is whether rounds run, not their quality.
    gate = GateConfig(enforce=False, auto_promote="live", threads=1)
    learner = make_learner(gate=gate)
    await learner.start()
    first = {r["tenant"]: r["outcome"] for r in await learner.step()}
    assert first["aardvark"].startswith("waiting for more feedback") and first["acme"] == "live"
    # acme's next 8 events are due: only aardvark's 5 are known not to train.
    await teach(client, keys, [f"second{i}" for i in range(4)], offset=16)
    second = {r["tenant"]: r["outcome"] for r in await learner.step()}
    await learner.close()
    assert "acme" in second, second
