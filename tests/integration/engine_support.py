"""What the engine tests share: one request run to its end, and checks of the adapter limit
and of a full queue."""

from __future__ import annotations

import contextlib

import pytest

from serving.engines import GenerationRequest, SamplingParams
from serving.errors import AdapterLimitReached, EngineOverloaded
from tests.support.waiting import until

#: The LoRA rank the tests' engines are started with.
MAX_RANK = 8


@contextlib.asynccontextmanager
async def filled_to_capacity(engine, make_adapter, setting: str):
    """Load ``engine.adapter_capacity`` adapters (``l1``, ``l2``, ...) and check that one
    more is refused, naming ``setting``; yield their names and unload them afterwards."""
    names = [f"l{i}" for i in range(1, engine.adapter_capacity + 1)]
    for i, name in enumerate(names, 1):
        await engine.load_adapter(name, make_adapter(chr(ord("a") + i - 1), seed=i))
    try:
        with pytest.raises(AdapterLimitReached, match=f"{setting}={len(names)}"):
            await engine.load_adapter("over", make_adapter("over", seed=len(names) + 1))
        assert engine.loaded_adapters() == names
        yield names
    finally:
        for name in names:
            await engine.unload_adapter(name)


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


async def refuses_when_full(engine, ids: list[int], *, waiting: int) -> None:
    """Once ``waiting`` requests wait for a batch row (the queue is full), one more is
    refused with ``EngineOverloaded``."""
    await until(lambda: engine.queue_depth == waiting,
                what=f"{waiting} request(s) waiting for a row")
    assert engine.queue_depth == waiting
    with pytest.raises(EngineOverloaded, match="queue is full"):
        await complete(engine, ids)
