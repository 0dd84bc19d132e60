"""Adapters coming and going must not leak: 300 load -> serve -> unload cycles."""

from __future__ import annotations

import gc

import psutil
import pytest

from serving.engines import EngineConfig
from serving.engines.hf import HFEngine
from tests.integration.engine_support import complete

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_300_swap_cycles_keep_resident_memory_flat(tiny_model_dir, make_adapter):
    engine = HFEngine(EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny",
                                   threads=1))
    await engine.start()
    paths = [make_adapter("a", seed=1), make_adapter("b", seed=2, r=8)]
    process = psutil.Process()

    async def cycle(i: int) -> None:
        version = f"churn-{i}"  # every load is a new version, as in production
        await engine.load_adapter(version, paths[i % 2])
        text, _ = await complete(engine, "Hi", adapter=version, max_tokens=4)
        assert text
        await engine.unload_adapter(version)

    try:
        for i in range(50):  # warm-up: allocator pools, lazy imports, caches
            await cycle(i)
        gc.collect()
        warm = process.memory_info().rss
        for i in range(50, 300):
            await cycle(i)
        gc.collect()
        after = process.memory_info().rss
    finally:
        await engine.shutdown()
    growth = (after - warm) / warm
    print(f"RSS after warm-up {warm / 2**20:.1f} MiB, after 300 cycles {after / 2**20:.1f} MiB "
          f"({growth:+.2%})")
    assert engine.loaded_adapters() == []
    assert growth < 0.05
