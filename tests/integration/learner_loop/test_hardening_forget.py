"""Issue 13, items 3 and 3b: `users forget` finds the versions that replayed the user's
data, anonymizes the SQL rows that held it, can retire those versions, and later rounds
never replay the user's examples again. Real Redis, SQLite registry, real training."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, inspect, text

from feedback.events import hash_user
from learner.examples import load_from_adapter
from learner.gate import GateConfig
from learner.train import TrainConfig
from storage import ArtifactStore, get_version
from tests.integration.learner_loop.test_hardening_learner import teach

pytestmark = pytest.mark.asyncio(loop_scope="function")
ALICE = hash_user("alice")


@pytest.fixture
def run_round(new_learner):
    """``await run_round(auto_promote)``: a new learner runs one round, replaying as much
    of the live version as it trains anew."""

    async def run(auto_promote: str) -> dict:
        learner = new_learner(
            min_new_examples=8, holdout_fraction=0.25, replay_fraction=1.0,
            gate=GateConfig(enforce=False, auto_promote=auto_promote, threads=1),
            train=TrainConfig(epochs=1, learning_rate=5e-3, threads=1, rank=4))
        await learner.start()
        reports = await learner.step()
        await learner.close()
        return reports[0]

    return run


def training_data(registry, tmp_path, version_id, part="examples"):
    with registry() as session:
        info = get_version(session, version_id=version_id)
    directory = ArtifactStore(tmp_path / "artifacts").load(info.artifact_uri,
                                                           sha256=info.artifact_sha256)
    return load_from_adapter(directory, part)


def forget(redis_url, keys, tmp_path, *options) -> subprocess.CompletedProcess:
    env = {**os.environ, "LORALOOP_REDIS_URL": redis_url, "LORALOOP_REDIS_PREFIX": keys.prefix,
           "LORALOOP_DATA_DIR": str(tmp_path / "data"),
           "LORALOOP_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
           "LORALOOP_ARTIFACTS_URL": str(tmp_path / "artifacts"), "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-m", "loraloop.cli", "users", "forget", "alice",
                           "--json", *options], env=env, capture_output=True, text=True,
                          timeout=300)


async def test_forget_lists_replaying_versions_retires_them_and_stops_replay(
    redis_url, client, keys, tmp_path, registry, run_round
):
    # Round 1: alice rates four answers among others; her examples train v1 (live).
    await teach(client, keys, ["alice"] * 4 + [f"bob{i}" for i in range(4)])
    v1 = await run_round("live")
    assert v1["outcome"] == "live", v1
    # Round 2, without alice: v2 (gated, not promoted) replays v1's examples, hers too.
    await teach(client, keys, [f"carol{i}" for i in range(8)], offset=8)
    v2 = await run_round("off")
    assert v2["outcome"] == "gated", v2
    replayed = [e for e in training_data(registry, tmp_path, v2["version"])
                if e.source == "replay"]
    assert any(e.user == ALICE for e in replayed)  # the leak the fix closes

    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    with engine.connect() as conn:
        ledger_rows = conn.execute(text("SELECT count(*) FROM dataset_members WHERE user_id = "
                                        ":alice"), {"alice": ALICE}).scalar()
    engine.dispose()
    done = forget(redis_url, keys, tmp_path, "--retire")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    listed = {v["id"]: v["how"] for v in report["trained_versions"]}
    # What v1 held out of hers, v2 trained as its own data (carried); the rest it replayed.
    held = [e for e in training_data(registry, tmp_path, v1["version"], "holdout")
            if e.user == ALICE]
    assert listed == {v1["version"]: "dataset", v2["version"]: "dataset" if held else "replay"}
    assert report["retired"] == [v2["version"]]
    assert "live" in report["left"][v1["version"]]  # live: the operator replaces it first
    with registry() as session:
        assert get_version(session, version_id=v2["version"]).status == "retired"

    # 3b: no SQL row holds alice's hash any more (the ledger rows were anonymized).
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            rows = conn.execute(text(f'SELECT * FROM "{table}"')).all()
            assert not any(ALICE in str(r) for r in rows), table
        anonymized = conn.execute(text(
            "SELECT count(*) FROM dataset_members WHERE user_id IS NULL")).scalar()
    engine.dispose()
    assert anonymized == report["sql_rows_anonymized"] == ledger_rows
    # v2's ledger names the entries of hers it trained as its own (v1's held-out ones).
    assert (ledger_rows > 8) == bool(held), (ledger_rows, held)

    # Round 3 trains over v1 (live, which holds her examples): none is replayed.
    await teach(client, keys, [f"dave{i}" for i in range(8)], offset=16)
    v3 = await run_round("live")
    assert v3["outcome"] == "live" and v3["counts"]["replay"] > 0, v3
    assert not [e for e in training_data(registry, tmp_path, v3["version"])
                if e.user == ALICE]


async def test_entries_a_learner_holds_when_their_user_is_forgotten_never_reach_sql(
    redis_url, client, keys, tmp_path, registry, new_learner
):
    from loraloop.forget import forget_everywhere
    from storage import RegistryOps, dataset_stream_ids

    await teach(client, keys, ["alice"] * 2 + [f"bob{i}" for i in range(6)])
    learner = new_learner(min_new_examples=1000, holdout_fraction=0.25,
                          gate=GateConfig(enforce=False, auto_promote="live", threads=1),
                          train=TrainConfig(epochs=1, learning_rate=5e-3, threads=1, rank=4))
    await learner.start()
    try:
        await learner.step()
        held = list(learner.waiting.values())  # read, waiting for a round
        assert len(held) == 16 and sum(e.feedback.user == ALICE for e in held) == 4
        report = await asyncio.to_thread(
            forget_everywhere, user="alice", redis_url=redis_url, redis_prefix=keys.prefix,
            artifacts_location=str(tmp_path / "artifacts"),
            ops=RegistryOps(registry, actor="test"), retire=False)
        assert len(report.forgotten_stream_ids) == 4 and report.versions == []
        round_ = await learner.run_round("acme", held)  # the round it was waiting for
    finally:
        await learner.close()
    assert round_["outcome"] == "live", round_
    with registry() as session:
        trained = dataset_stream_ids(session, version_id=round_["version"])
    assert len(trained) == 12 and not set(trained) & set(report.forgotten_stream_ids)
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    with engine.connect() as conn:
        users = conn.execute(text("SELECT user_id FROM dataset_members")).scalars().all()
    engine.dispose()
    assert ALICE not in users and not learner.waiting
