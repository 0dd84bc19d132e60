"""Behaviour specific to the hf engine: continuous batching, limits, cancellation."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from serving.engines import EngineConfig, GenerationRequest, SamplingParams
from serving.engines.hf import HFEngine
from tests.integration.engine_support import complete, filled_to_capacity, refuses_when_full
from tests.support.waiting import PATIENCE_S

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hf(tiny_model_dir):
    engine = HFEngine(
        EngineConfig(
            model=str(tiny_model_dir),
            model_name="builtin:tiny",
            max_loras=2,
            max_batch_size=4,
            max_queue=3,
        )
    )
    await engine.start()
    yield engine
    await engine.shutdown()


async def test_concurrent_requests_share_decode_steps(hf):
    steps_before = hf.stats["steps"]
    results = await asyncio.gather(*(complete(hf, "Hi", max_tokens=16) for _ in range(4)))
    assert len({text for text, _ in results}) == 1
    tokens = sum(chunks[-1].completion_tokens for _, chunks in results)
    steps = hf.stats["steps"] - steps_before
    assert hf.stats["max_batch_rows"] == 4
    # Served one at a time this would take one step per token.
    assert steps < tokens / 2, (steps, tokens)


async def test_requests_join_a_running_batch(hf):
    ids = hf.encode_chat([{"role": "user", "content": "Hi"}])
    params = SamplingParams(max_tokens=60, temperature=0)
    alone, _ = await complete(hf, ids, max_tokens=60)
    hf.stats["max_batch_rows"] = 0
    first = hf.generate(GenerationRequest("long", ids, params))
    await first.__anext__()
    late, _ = await complete(hf, "Tell me a joke.", max_tokens=8)  # admitted mid-flight
    rest = "".join([c.text async for c in first])
    assert late
    assert hf.stats["max_batch_rows"] == 2  # decoded together, not one after the other
    assert rest and (alone.startswith(rest) or rest in alone)


async def test_full_queue_is_refused_with_overloaded(hf):
    # This prompt runs to max_tokens on the tiny model (it never emits the end token).
    ids = hf.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    params = SamplingParams(max_tokens=300, temperature=0)

    started = [asyncio.Event() for _ in range(7)]

    async def consume(i):
        async for _ in hf.generate(GenerationRequest(f"r{i}", ids, params)):
            started[i].set()

    # 4 rows decode (max_batch_size) and 3 wait (max_queue); the next is refused.
    tasks = [asyncio.create_task(consume(i)) for i in range(4)]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started[:4])), PATIENCE_S)
        tasks += [asyncio.create_task(consume(i)) for i in range(4, 7)]
        await refuses_when_full(hf, ids, waiting=3)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_abandoned_requests_free_their_rows(hf):
    ids = hf.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    params = SamplingParams(max_tokens=500, temperature=0)
    streams = [hf.generate(GenerationRequest(f"a{i}", ids, params)) for i in range(4)]
    for s in streams:
        await s.__anext__()
    for s in streams:
        await s.aclose()
    # New work is served promptly because the abandoned rows left the batch: in a few
    # steps, not after the ~500 it would wait for a row if they were still decoding.
    steps = hf.stats["steps"]
    text, _ = await asyncio.wait_for(complete(hf, "Hi", max_tokens=4), timeout=PATIENCE_S)
    assert text
    assert hf.stats["steps"] - steps < 50


async def test_max_loras_bounds_resident_adapters(hf, make_adapter):
    # hf batches any mix of its adapters: max_loras bounds them all, max_cpu_loras is unused.
    assert hf.config.max_cpu_loras > hf.adapter_capacity == hf.config.max_loras == 2
    async with filled_to_capacity(hf, make_adapter, "max_loras") as names:
        assert names == ["l1", "l2"]


async def test_concurrent_loads_of_one_version_load_it_once(hf, make_adapter):
    path = make_adapter("a", seed=1)
    await asyncio.gather(*(hf.load_adapter("same", path) for _ in range(5)))
    assert hf.loaded_adapters() == ["same"]
    await hf.unload_adapter("same")
    assert hf.loaded_adapters() == []


def _tokens(chunks) -> list[int]:
    return [t for c in chunks for t in c.token_ids]


async def test_n_seeded_samples_of_one_prompt_share_one_prefill(hf):
    # As the replica runs n choices: one prompt, seeds seed, seed + 1, ...
    samples = {"temperature": 1.0, "max_tokens": 24}
    alone = []
    for seed in range(7, 11):
        before = hf.stats.copy()
        alone.append(_tokens((await complete(hf, "Hi", seed=seed, **samples))[1]))
        assert hf.stats["prefill_rows"] - before["prefill_rows"] == 1
    assert len({tuple(t) for t in alone}) > 1, "different seeds should sample differently"
    before = hf.stats.copy()
    together = await asyncio.gather(
        *(complete(hf, "Hi", seed=seed, **samples) for seed in range(7, 11))
    )
    assert [_tokens(chunks) for _, chunks in together] == alone
    assert hf.stats["prefills"] - before["prefills"] == 1
    assert hf.stats["prefill_rows"] - before["prefill_rows"] == 1
    assert hf.stats["shared_prefill_rows"] - before["shared_prefill_rows"] == 3


async def test_only_rows_with_the_same_prompt_and_adapter_share_a_prefill(hf, make_adapter):
    await hf.load_adapter("shared-a", make_adapter("a", seed=1))
    try:
        rows = [("Hi", None), ("Tell me a joke.", None), ("Hi", "shared-a"), ("Hi", None)]
        alone = [_tokens((await complete(hf, p, adapter=a))[1]) for p, a in rows]
        assert alone[0] != alone[2], "the adapter should change the answer"
        before = hf.stats.copy()
        together = await asyncio.gather(*(complete(hf, p, adapter=a) for p, a in rows))
        assert [_tokens(chunks) for _, chunks in together] == alone
        assert hf.stats["prefill_rows"] - before["prefill_rows"] == 3
        assert hf.stats["shared_prefill_rows"] - before["shared_prefill_rows"] == 1
    finally:
        await hf.unload_adapter("shared-a")


async def test_samples_submitted_together_are_admitted_in_one_step(hf):
    # The first request wakes the idle worker; it must not be admitted before its
    # siblings arrive (handed over one by one, about 1 round in 5 split here).
    for round_ in range(30):
        before = hf.stats.copy()
        await asyncio.gather(
            *(complete(hf, "Hi", temperature=1.0, seed=s, max_tokens=2) for s in range(4))
        )
        assert hf.stats["prefills"] - before["prefills"] == 1, f"round {round_}"
        assert hf.stats["shared_prefill_rows"] - before["shared_prefill_rows"] == 3
    # And while the worker is busy decoding another request.
    ids = hf.encode_chat([{"role": "user", "content": "Hi"}])
    busy = hf.generate(
        GenerationRequest("busy", ids, SamplingParams(max_tokens=300, temperature=0))
    )
    await busy.__anext__()
    try:
        before = hf.stats.copy()
        await asyncio.gather(
            *(complete(hf, ids, temperature=1.0, seed=s, max_tokens=4) for s in range(3))
        )
    finally:
        await busy.aclose()
    assert hf.stats["prefill_rows"] - before["prefill_rows"] == 1
    assert hf.stats["shared_prefill_rows"] - before["shared_prefill_rows"] == 2
