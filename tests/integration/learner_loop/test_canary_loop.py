"""The running learner also decides canaries: users' thumbs promote a better canary."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from learner.actor import run_forever
from learner.canary import CanaryPolicy
from storage import get_version, history
from tests.support.cli import run_cli
from tests.support.ratings import Rated, record_ratings
from tests.support.registry import LocalRegistry
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def _rate(client, keys, version: str, rating: str, users: int) -> None:
    await record_ratings(client, keys, [
        Rated(f"{version[:8]}-{i}", "Hi", "an answer", rating, adapter_version=version)
        for i in range(users)])


async def test_the_learner_promotes_a_canary_its_users_prefer(
    redis_url, client, keys, tmp_path, make_adapter, learner_spec
):
    registry = LocalRegistry.create(tmp_path)
    sessions = registry.sessions
    live = registry.register(make_adapter("canary-loop-live", seed=31))
    canary = registry.register(make_adapter("canary-loop-canary", seed=32))
    registry.promote(live)
    registry.ops.start_canary(canary, fraction=0.5)
    await _rate(client, keys, canary, "up", 30)
    await _rate(client, keys, live, "down", 30)

    spec = learner_spec(min_new_examples=10_000, canary_interval_s=0.2,
                        canary=CanaryPolicy(min_ratings=20))
    stop = threading.Event()
    learner = threading.Thread(target=lambda: asyncio.run(run_forever(spec, stop, {})))
    learner.start()
    try:
        def decided() -> bool:
            with sessions() as session:
                return get_version(session, version_id=canary).status == "live"

        await until(decided, what="the learner deciding the canary", every_s=0.2)
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
    elsewhere = tmp_path / "another-host"  # no status file: the status comes from Redis
    for data_dir, where in ((tmp_path, {}),
                            (elsewhere, {"LORALOOP_REDIS_URL": redis_url,
                                         "LORALOOP_REDIS_PREFIX": keys.prefix})):
        shown = run_cli("learner", "status", data_dir=data_dir, extra_env=where, timeout=60)
        assert f"canary acted acme: promote {canary[:12]}" in shown.stdout, shown
