"""Issue 13, item 2: the learner replays from an object store, and a round that keeps
failing shows in `learner status` (and its status JSON), backing off instead of looping."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from learner.actor import build_learner, run_forever
from learner.gate import GateConfig
from learner.train import TrainConfig
from storage import ArtifactStore, promote, record_gate, register_candidate
from storage.db import open_registry
from tests.support.adapters import save_random_adapter
from tests.support.capitals import thumbs
from tests.support.ratings import record_ratings
from tests.support.s3_server import S3_ENV, new_bucket, s3_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="function")


@pytest.fixture(scope="module")
def s3_endpoint():
    with s3_server() as endpoint:
        yield endpoint


#: Rounds of 8 events, a quarter held out, replaying half as much again; no gate.
ROUNDS = {"min_new_examples": 8, "holdout_fraction": 0.25, "replay_fraction": 0.5,
          "gate": GateConfig(enforce=False, auto_promote="live", threads=1),
          "train": TrainConfig(epochs=1, learning_rate=5e-3, threads=1, rank=4)}


async def teach(client, keys, users: list[str], *, offset: int = 0) -> None:
    await record_ratings(client, keys, thumbs(users, offset=offset))


async def test_the_learner_replays_the_live_version_from_an_object_store(
    client, keys, learner_spec, s3_endpoint, monkeypatch
):
    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    bucket = new_bucket(s3_endpoint)
    spec = learner_spec(**ROUNDS).model_copy(
        update={"artifacts_location": f"s3://{bucket}/prod"})
    open_registry(spec.database_url)  # migrated once, as `up` does
    reports = []
    for round_ in range(2):
        await teach(client, keys, [f"s3-round{round_}-user{i}" for i in range(8)],
                    offset=8 * round_)
        learner = build_learner(spec)  # as the actor builds it; a new one each round
        await learner.start()
        try:
            [report] = await learner.step()
        finally:
            await learner.close()
        assert report["outcome"] == "live", report
        reports.append(report)
    first, second = reports
    assert second["version"] != first["version"]
    # The second round warm-started from the live version and replayed its examples,
    # both read from the bucket through the learner's local cache.
    assert second["counts"]["replay"] > 0 and second["metrics"]["warm_start"] is True
    assert (Path(spec.artifact_cache) / first["version"] / "training_examples.json").exists()


def _live_version_with_missing_artifact(database_url: str, root: Path, tiny_model_dir) -> str:
    """Register a live version of tenant acme, then delete its artifact from the store."""
    store = ArtifactStore(root)
    adapter = save_random_adapter(tiny_model_dir, root.parent / "src-adapter", r=4,
                                  targets=("q_proj", "v_proj"), seed=1,
                                  base_name="builtin:tiny")
    published = store.publish(adapter)
    sessions = open_registry(database_url)
    with sessions() as session:
        register_candidate(session, version_id=published.version_id, tenant="acme",
                           base_model="builtin:tiny", artifact_uri=published.uri,
                           artifact_sha256=published.sha256, lora_config=published.lora_config,
                           metrics={}, actor="test", reason="a live version")
    with sessions() as session:
        record_gate(session, version_id=published.version_id, passed=True, metrics={},
                    actor="test", reason="test")
    with sessions() as session:
        promote(session, version_id=published.version_id, actor="test", reason="test")
    sessions.kw["bind"].dispose()
    store.delete(published.version_id)  # lost from the store: every round now fails
    return published.version_id


async def test_a_round_that_keeps_failing_shows_in_status_and_backs_off(
    redis_url, client, keys, tmp_path, tiny_model_dir, learner_spec
):
    spec = learner_spec(**ROUNDS)
    live = _live_version_with_missing_artifact(spec.database_url, tmp_path / "artifacts",
                                               tiny_model_dir)
    await teach(client, keys, [f"fail-user{i}" for i in range(8)])
    stop, holder = threading.Event(), {}
    thread = threading.Thread(target=lambda: asyncio.run(run_forever(spec, stop, holder)))
    thread.start()
    try:
        def status():
            return json.loads(spec.status_path.read_text()) if spec.status_path.exists() else {}

        failing = wait_until(lambda: (status().get("failing") or {}).get("consecutive", 0) >= 3
                             and status()["failing"], what="three failed rounds in the status",
                             timeout_s=180)
        # Backoff: 1 s, 2 s, 4 s ... between tries, not a hot loop.
        assert failing["retry_in_s"] == 2 ** (failing["consecutive"] - 1)
        assert live in failing["last_error"] and "ArtifactNotFound" in failing["last_error"]
        assert status()["step_failures_total"] >= 3 and status()["backlog"] == 16

        env = {**os.environ, "LORALOOP_REDIS_URL": redis_url,
               "LORALOOP_REDIS_PREFIX": keys.prefix, "LORALOOP_DATA_DIR": spec.data_dir,
               "PYTHONPATH": os.getcwd()}
        shown = subprocess.run([sys.executable, "-m", "loraloop.cli", "learner", "status"],
                               env=env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 1, shown  # a probe sees it
        assert "failing" in shown.stdout and "ArtifactNotFound" in shown.stdout, shown.stdout
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive()
