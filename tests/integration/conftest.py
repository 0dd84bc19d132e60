"""Engine fixtures: one started engine per module and engine kind (starting one is slow)."""

from __future__ import annotations

import pytest
import pytest_asyncio

from serving.engines import ENGINES, EngineConfig, engine_class
from tests.integration.engine_support import MAX_RANK, complete

__all__ = ["MAX_RANK", "complete"]  # defined here before: engine_support has them now


def engine_params():
    return [
        pytest.param(name, marks=[pytest.mark.vllm] if name == "vllm" else [], id=name)
        for name in sorted(ENGINES)
    ]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=engine_params())
async def engine(request, tiny_model_dir):
    config = EngineConfig(
        model=str(tiny_model_dir),
        model_name="builtin:tiny",
        max_lora_rank=MAX_RANK,
        max_loras=4,
        max_batch_size=8,
    )
    started = engine_class(request.param)(config)
    await started.start()
    yield started
    await started.shutdown()
