"""Behaviour specific to the vllm engine: parity with hf, adapter ids and limits, aborts.

One vLLM engine is shared by the module (starting one takes ~20-40 s on 2
cores); its limits are small on purpose so that every limit is reachable.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from serving.adapters import AdapterManager
from serving.engines import EngineConfig, GenerationRequest, SamplingParams
from tests.integration.engine_support import (
    MAX_RANK,
    complete,
    filled_to_capacity,
    refuses_when_full,
)
from tests.support.registry import LocalRegistry
from tests.support.waiting import until

pytest.importorskip("vllm")

pytestmark = [pytest.mark.vllm, pytest.mark.asyncio(loop_scope="module")]

PROMPTS = ["What is the capital of France?", "Tell me a joke.", "Café 👍 numbers 3.14", "Hi"]
LONG = SamplingParams(max_tokens=300, temperature=0)  # the tiny model runs to max_tokens


def _config(model_dir, **limits) -> EngineConfig:
    return EngineConfig(
        model=str(model_dir), model_name="builtin:tiny", max_lora_rank=MAX_RANK, **limits
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vllm_engine(tiny_model_dir):
    from serving.engines.vllm import VLLMEngine

    engine = VLLMEngine(
        _config(tiny_model_dir, max_loras=1, max_cpu_loras=2, max_batch_size=2, max_queue=1,
                vllm_args={"max_logprobs": 21})  # an operator's own vLLM argument
    )
    await engine.start()
    yield engine
    await engine.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hf_engine(tiny_model_dir):
    from serving.engines.hf import HFEngine

    engine = HFEngine(_config(tiny_model_dir, max_loras=2))
    await engine.start()
    yield engine
    await engine.shutdown()


async def _settled(engine) -> None:
    """Wait until vLLM has processed the aborts sent to it."""
    await until(lambda: engine.unfinished_requests == 0, what="vLLM processing the aborts")


async def test_greedy_output_matches_hf_in_float32(vllm_engine, hf_engine, make_adapter):
    adapter = make_adapter("parity", r=8, targets=("q_proj", "v_proj", "down_proj"), seed=3)
    for engine in (vllm_engine, hf_engine):
        await engine.load_adapter("parity", adapter)
    try:
        for prompt in PROMPTS:
            ids = hf_engine.encode_chat([{"role": "user", "content": prompt}])
            assert vllm_engine.encode_chat([{"role": "user", "content": prompt}]) == ids
            for name in (None, "parity"):
                runs = [
                    await complete(e, ids, adapter=name, max_tokens=48, logprobs=True)
                    for e in (hf_engine, vllm_engine)
                ]
                (hf_text, hf_chunks), (vllm_text, vllm_chunks) = runs
                assert vllm_text == hf_text, (prompt, name)
                tokens = [[t for c in chunks for t in c.token_ids] for _, chunks in runs]
                assert tokens[0] == tokens[1]
                hf_lp = [lp.logprob for c in hf_chunks for lp in c.logprobs]
                vllm_lp = [lp.logprob for c in vllm_chunks for lp in c.logprobs]
                # Measured: at most ~2e-5 apart (float32, different kernels).
                assert vllm_lp == pytest.approx(hf_lp, abs=1e-4)
    finally:
        for engine in (vllm_engine, hf_engine):
            await engine.unload_adapter("parity")


async def test_vllm_args_reach_vllm_and_an_unknown_name_is_refused(vllm_engine, tiny_model_dir):
    from serving.engines.vllm import VLLMEngine

    assert vllm_engine._llm.vllm_config.model_config.max_logprobs == 21
    with pytest.raises(ValueError, match=r"\['max_lorass'\] are not arguments"):
        await VLLMEngine(_config(tiny_model_dir, vllm_args={"max_lorass": 2})).start()


async def test_adapter_validation_sees_the_same_modules_as_hf(vllm_engine, hf_engine):
    # vllm_engine reads the shapes from a meta-device model, hf from the loaded one.
    assert dict(vllm_engine.facts.module_shapes) == dict(hf_engine.facts.module_shapes)


async def test_resident_adapters_are_bounded_by_max_cpu_loras(vllm_engine, make_adapter):
    assert vllm_engine.adapter_capacity == vllm_engine.config.max_cpu_loras == 2
    async with filled_to_capacity(vllm_engine, make_adapter, "max_cpu_loras") as names:
        assert names == ["l1", "l2"]
        assert await vllm_engine.vllm_lora_ids() == set(vllm_engine.lora_ids().values())
        # max_loras=1: vLLM batches one adapter per step and takes turns; output is unchanged.
        alone = {n: (await complete(vllm_engine, PROMPTS[0], adapter=n))[0] for n in ("l1", "l2")}
        assert alone["l1"] != alone["l2"]
        batch = ["l1", "l2", "l1"]  # max_batch_size=2 + max_queue=1
        together = await asyncio.gather(
            *(complete(vllm_engine, PROMPTS[0], adapter=n) for n in batch)
        )
        assert [text for text, _ in together] == [alone[n] for n in batch]
    assert await vllm_engine.vllm_lora_ids() == set()


async def test_the_manager_keeps_max_cpu_loras_resident_not_max_loras(
    vllm_engine, make_adapter, tmp_path
):
    # max_loras=1 device slot, max_cpu_loras=2 in host memory: both tenants stay resident.
    registry = LocalRegistry.create(tmp_path)
    manager = AdapterManager(vllm_engine, registry.view)
    assert manager.max_resident == 2
    live = {}
    for tenant, seed in (("acme", 61), ("beta", 62)):
        live[tenant] = registry.register(make_adapter(f"cpu-{tenant}", seed=seed), tenant=tenant)
        registry.promote(live[tenant])
    await manager.reconcile()
    try:
        assert sorted(vllm_engine.loaded_adapters()) == sorted(live.values())
        assert not manager.failed and not [s for s in manager.swaps if s["event"] == "unloaded"]
        texts = {}
        for tenant, version in live.items():
            assert await manager.acquire(tenant, "live", "u", None) == version
            try:
                texts[tenant] = (await complete(vllm_engine, PROMPTS[0], adapter=version))[0]
            finally:
                manager.release(version)
        assert texts["acme"] != texts["beta"]
    finally:
        for version in live.values():
            await vllm_engine.unload_adapter(version)


async def test_every_load_gets_a_new_lora_id_and_unload_removes_it(vllm_engine, make_adapter):
    path = make_adapter("a", seed=1)
    await vllm_engine.load_adapter("again", path)
    first = vllm_engine.lora_ids()["again"]
    await vllm_engine.unload_adapter("again")
    assert first not in await vllm_engine.vllm_lora_ids()
    await vllm_engine.load_adapter("again", path)
    second = vllm_engine.lora_ids()["again"]
    await vllm_engine.unload_adapter("again")
    assert second > first


async def test_concurrent_loads_of_one_version_load_it_once(vllm_engine, make_adapter):
    path = make_adapter("a", seed=1)
    await asyncio.gather(*(vllm_engine.load_adapter("dup", path) for _ in range(3)))
    try:
        assert vllm_engine.loaded_adapters() == ["dup"]
        assert len(await vllm_engine.vllm_lora_ids()) == 1
    finally:
        await vllm_engine.unload_adapter("dup")


async def test_closing_the_stream_aborts_the_request_in_vllm(vllm_engine):
    ids = vllm_engine.encode_chat([{"role": "user", "content": PROMPTS[0]}])
    stream = vllm_engine.generate(GenerationRequest("abandoned", ids, LONG))
    await stream.__anext__()
    assert vllm_engine.unfinished_requests == 1
    await stream.aclose()
    await _settled(vllm_engine)
    assert vllm_engine.unfinished_requests == 0
    assert vllm_engine.queue_depth == 0


async def test_a_stop_string_ends_the_request_in_vllm(vllm_engine):
    full, _ = await complete(vllm_engine, PROMPTS[0], max_tokens=40)
    stop = full[5:8]
    text, chunks = await complete(vllm_engine, PROMPTS[0], max_tokens=300, stop=(stop,))
    assert text == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop"
    await _settled(vllm_engine)
    assert vllm_engine.unfinished_requests == 0


async def test_full_queue_is_refused_with_overloaded(vllm_engine):
    ids = vllm_engine.encode_chat([{"role": "user", "content": PROMPTS[0]}])
    # max_batch_size=2 decode and max_queue=1 waits: the fourth is refused.
    streams = [vllm_engine.generate(GenerationRequest(f"q{i}", ids, LONG)) for i in range(3)]
    try:
        firsts = [asyncio.ensure_future(s.__anext__()) for s in streams]
        await refuses_when_full(vllm_engine, ids, waiting=1)
    finally:
        for future in firsts:
            if not future.done():
                future.cancel()
        await asyncio.gather(*firsts, return_exceptions=True)
        for stream in streams:
            await stream.aclose()
    await _settled(vllm_engine)
    assert vllm_engine.unfinished_requests == 0
    assert (await complete(vllm_engine, ids, max_tokens=4))[0]


async def test_scores_match_hf_with_and_without_an_adapter(vllm_engine, hf_engine, make_adapter):
    # The n choices of a request share their prompt's KV blocks (see vllm_setup).
    assert vllm_engine._llm.vllm_config.cache_config.enable_prefix_caching
    adapter = make_adapter("score", r=8, targets=("q_proj", "v_proj", "down_proj"), seed=5)
    for engine in (vllm_engine, hf_engine):
        await engine.load_adapter("score", adapter)
    try:
        prompt = hf_engine.encode_chat([{"role": "user", "content": PROMPTS[0]}])
        completion = hf_engine.encode_text(" The capital of France is Paris.")
        scores = {
            (kind, name): await engine.score(prompt, completion, name)
            for kind, engine in (("hf", hf_engine), ("vllm", vllm_engine))
            for name in (None, "score")
        }
        for name in (None, "score"):
            # float32 on both sides, different kernels (generation log-probs: ~2e-5 apart).
            assert scores["vllm", name] == pytest.approx(scores["hf", name], abs=1e-4), name
        assert scores["vllm", "score"] != pytest.approx(scores["vllm", None], abs=1e-2)
    finally:
        for engine in (vllm_engine, hf_engine):
            await engine.unload_adapter("score")
    await _settled(vllm_engine)
