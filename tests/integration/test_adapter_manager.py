"""A replica's adapter manager over a real registry and engine: failures and pinned versions."""

from __future__ import annotations

import pytest

from serving.adapters import AdapterManager
from serving.engines import EngineConfig
from serving.engines.hf import HFEngine
from serving.registry_view import RegistryView
from storage import ArtifactStore, get_version, promote, record_gate, register_candidate
from storage.db import open_registry

pytestmark = pytest.mark.asyncio(loop_scope="function")


@pytest.fixture
async def setup(tmp_path, tiny_model_dir):
    database = f"sqlite:///{tmp_path / 'registry.db'}"
    sessions = open_registry(database)
    store = ArtifactStore(tmp_path / "artifacts")
    engine = HFEngine(EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny",
                                   threads=1))
    await engine.start()
    view = RegistryView(database_url=database, artifacts_location=str(tmp_path / "artifacts"),
                        cache_dir=tmp_path / "cache")
    yield sessions, store, AdapterManager(engine, view, max_resident=4)
    await engine.shutdown()


def register(sessions, store, adapter_dir) -> str:
    published = store.publish(adapter_dir)
    with sessions() as session:
        register_candidate(session, version_id=published.version_id, tenant="acme",
                           base_model="builtin:tiny", artifact_uri=published.uri,
                           artifact_sha256=published.sha256, lora_config=published.lora_config)
    with sessions() as session:
        record_gate(session, version_id=published.version_id, passed=True, metrics={},
                    actor="test")
    return published.version_id


async def test_a_live_version_that_fails_to_load_leaves_the_previous_one_serving(
        setup, make_adapter, tmp_path):
    sessions, store, manager = setup
    good = register(sessions, store, make_adapter("manager-good", seed=41))
    with sessions() as session:
        promote(session, version_id=good, actor="test")
    await manager.reconcile()
    assert manager.routes["acme"].live == good

    bad = register(sessions, store, make_adapter("manager-bad", seed=42))
    weights = tmp_path / "artifacts" / bad / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)  # sha256 no longer matches
    with sessions() as session:
        promote(session, version_id=bad, actor="test")
    await manager.reconcile()
    # Not the base model: this replica keeps answering from the version it had.
    assert manager.routes["acme"].live == good
    assert bad in manager.failed and await manager.acquire("acme", "live", "u", None) == good
    manager.release(good)
    with sessions() as session:
        assert get_version(session, version_id=bad).status == "failed"


async def test_a_pinned_version_is_loaded_once_not_per_request(setup, make_adapter):
    sessions, store, manager = setup
    pinned = register(sessions, store, make_adapter("manager-pinned", seed=43))
    for _ in range(3):
        assert await manager.acquire("acme", "live", "u", pinned) == pinned
        manager.release(pinned)
        await manager.reconcile()  # a reconcile does not drop it either
    loads = [s for s in manager.swaps if s["version"] == pinned and s["event"] == "loaded"]
    assert len(loads) == 1 and pinned in manager.engine.loaded_adapters()
