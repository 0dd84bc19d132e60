"""The running learner also decides canaries: users' thumbs promote a better canary."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from feedback.events import Interaction, hash_user
from feedback.store import FeedbackConfig, FeedbackStore
from learner.actor import LearnerSpec, run_forever
from learner.canary import CanaryPolicy
from learner.loop import LearnerConfig
from storage import (
    ArtifactStore,
    get_version,
    history,
    promote,
    record_gate,
    register_candidate,
    start_canary,
)
from storage.db import open_registry
from tests.integration.learner_loop.conftest import REDIS_URL

pytestmark = pytest.mark.asyncio(loop_scope="function")


def _register(sessions, store, adapter_dir) -> str:
    published = store.publish(adapter_dir)
    with sessions() as session:
        register_candidate(session, version_id=published.version_id, tenant="acme",
                           base_model="builtin:tiny", artifact_uri=published.uri,
                           artifact_sha256=published.sha256, lora_config=published.lora_config)
    with sessions() as session:
        record_gate(session, version_id=published.version_id, passed=True, metrics={},
                    actor="test")
    return published.version_id


async def _rate(client, keys, version: str, rating: str, users: int) -> None:
    store = FeedbackStore(client, keys, FeedbackConfig(user_limit=1000, tenant_limit=10_000))
    await store.start()
    for i in range(users):
        user = f"{version[:8]}-{i}"
        interaction = Interaction(tenant="acme", user=hash_user(user), model="acme",
                                  adapter_version=version, completion="an answer",
                                  messages=[{"role": "user", "content": "Hi"}])
        await client.set(keys.interaction(interaction.id), interaction.to_json(), ex=600)
        await store.record(interaction_id=interaction.id, user=user, rating=rating)


async def test_the_learner_promotes_a_canary_its_users_prefer(
    client, keys, tmp_path, tiny_model_dir, make_adapter
):
    database = f"sqlite:///{tmp_path / 'registry.db'}"
    sessions = open_registry(database)
    store = ArtifactStore(tmp_path / "artifacts")
    live = _register(sessions, store, make_adapter("canary-loop-live", seed=31))
    canary = _register(sessions, store, make_adapter("canary-loop-canary", seed=32))
    with sessions() as session:
        promote(session, version_id=live, actor="test")
    with sessions() as session:
        start_canary(session, version_id=canary, fraction=0.5, actor="test")
    await _rate(client, keys, canary, "up", 30)
    await _rate(client, keys, live, "down", 30)

    spec = LearnerSpec(
        redis_url=REDIS_URL, redis_prefix=keys.prefix, database_url=database,
        artifacts_location=str(tmp_path / "artifacts"), base_model=str(tiny_model_dir),
        base_model_name="builtin:tiny", data_dir=str(tmp_path),
        config=LearnerConfig(min_new_examples=10_000, canary_interval_s=0.2,
                             canary=CanaryPolicy(min_ratings=20)),
    )
    stop = threading.Event()
    learner = threading.Thread(target=lambda: asyncio.run(run_forever(spec, stop, {})))
    learner.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            with sessions() as session:
                if get_version(session, version_id=canary).status == "live":
                    break
            assert time.monotonic() < deadline, "the learner never decided the canary"
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        learner.join(timeout=60)
    with sessions() as session:
        audit = history(session, version_id=canary)
        assert get_version(session, version_id=live).status != "live"
    assert any(e.actor == "canary-controller" and "P(canary better)" in e.reason for e in audit)
    status = json.loads(spec.status_path.read_text())
    assert [(a["canary"], a["verdict"]) for a in status["canary_actions"]] == [
        (canary, "promote")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    elsewhere = tmp_path / "another-host"  # no status file: the status comes from Redis
    for where in ({"LORALOOP_DATA_DIR": str(tmp_path)},
                  {"LORALOOP_DATA_DIR": str(elsewhere), "LORALOOP_REDIS_URL": REDIS_URL,
                   "LORALOOP_REDIS_PREFIX": keys.prefix}):
        shown = subprocess.run([sys.executable, "-m", "loraloop.cli", "learner", "status"],
                               env={**env, **where}, capture_output=True, text=True, timeout=60)
        assert f"canary acted acme: promote {canary[:12]}" in shown.stdout, shown
