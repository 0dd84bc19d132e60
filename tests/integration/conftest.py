"""Engine fixtures: one started engine per module and engine kind (starting one is slow)."""

from __future__ import annotations

import pytest
import pytest_asyncio

from serving.engines import ENGINES, EngineConfig, GenerationRequest, SamplingParams, engine_class

MAX_RANK = 8


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


async def complete(engine, prompt: str | list[int], *, adapter=None, **sampling):
    """Run one request to the end; return (text, chunks)."""
    ids = (
        prompt
        if isinstance(prompt, list)
        else engine.encode_chat([{"role": "user", "content": prompt}])
    )
    sampling.setdefault("temperature", 0.0)
    sampling.setdefault("max_tokens", 24)
    request = GenerationRequest("test", ids, SamplingParams(**sampling), adapter=adapter)
    chunks = [chunk async for chunk in engine.generate(request)]
    return "".join(c.text for c in chunks), chunks
