"""A replica's adapter manager over a real registry and engine: failures, bounds, pins."""

from __future__ import annotations

import pytest

from serving.adapters import AdapterManager
from serving.engines import EngineConfig
from serving.engines.hf import HFEngine
from storage import get_version
from tests.support.registry import LocalRegistry

pytestmark = pytest.mark.asyncio(loop_scope="function")


@pytest.fixture
def registry(tmp_path) -> LocalRegistry:
    return LocalRegistry.create(tmp_path)


@pytest.fixture
async def setup(registry, tiny_model_dir):
    engine = HFEngine(EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny",
                                   threads=1))
    await engine.start()
    yield registry, AdapterManager(engine, registry.view, max_resident=4)
    await engine.shutdown()


async def test_a_live_version_that_fails_to_load_leaves_the_previous_one_serving(
        setup, make_adapter, tmp_path):
    registry, manager = setup
    good = registry.register(make_adapter("manager-good", seed=41))
    registry.promote(good)
    await manager.reconcile()
    assert manager.routes["acme"].live == good

    bad = registry.register(make_adapter("manager-bad", seed=42))
    weights = tmp_path / "artifacts" / bad / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)  # sha256 no longer matches
    registry.promote(bad)
    await manager.reconcile()
    # Not the base model: this replica keeps answering from the version it had.
    assert manager.routes["acme"].live == good
    assert bad in manager.failed and await manager.acquire("acme", "live", "u", None) == good
    manager.release(good)
    with registry.sessions() as session:
        assert get_version(session, version_id=bad).status == "failed"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong_rank", "above the engine's max_lora_rank"),
        ("wrong_base", "does not match the engine's base model"),
    ],
)
async def test_an_adapter_that_fails_its_check_evicts_nothing(
        registry, tiny_model_dir, make_adapter, case, expected):
    engine = HFEngine(EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny",
                                   threads=1, max_loras=2))
    await engine.start()
    try:
        manager = AdapterManager(engine, registry.view)
        assert manager.max_resident == 2  # the engine's bound: hf's max_loras
        good = {
            tenant: registry.register(make_adapter(f"check-{tenant}", seed=seed), tenant=tenant)
            for tenant, seed in (("acme", 51), ("beta", 52))
        }
        for version in good.values():
            registry.promote(version)
        await manager.reconcile()
        assert sorted(engine.loaded_adapters()) == sorted(good.values())  # the bound is full

        if case == "wrong_rank":
            bad_dir = make_adapter("check-big", r=engine.config.max_lora_rank * 2, seed=53)
        else:
            bad_dir = make_adapter("check-other", base_name="meta-llama/Llama-3-8B", seed=54)
        bad = registry.register(bad_dir, tenant="acme")
        registry.promote(bad)
        await manager.reconcile()

        assert expected in manager.failed[bad]
        # Refused before room was made for it: every resident adapter is still resident.
        assert sorted(engine.loaded_adapters()) == sorted(good.values())
        assert not [s for s in manager.swaps if s["event"] == "unloaded"]
        assert manager.routes["acme"].live == good["acme"]
        assert manager.routes["beta"].live == good["beta"]
        with registry.sessions() as session:
            assert get_version(session, version_id=bad).status == "failed"
    finally:
        await engine.shutdown()


async def test_a_pinned_version_is_loaded_once_not_per_request(setup, make_adapter):
    registry, manager = setup
    pinned = registry.register(make_adapter("manager-pinned", seed=43))
    for _ in range(3):
        assert await manager.acquire("acme", "live", "u", pinned) == pinned
        manager.release(pinned)
        await manager.reconcile()  # a reconcile does not drop it either
    loads = [s for s in manager.swaps if s["version"] == pinned and s["event"] == "loaded"]
    assert len(loads) == 1 and pinned in manager.engine.loaded_adapters()
