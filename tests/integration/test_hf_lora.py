"""The hf engine's batched multi-LoRA gives the answers peft gives, row for row.

The engine applies each adapter to its rows itself (``serving.engines.hf_lora``)
instead of routing through a ``PeftModel``; these tests hold it to peft's
greedy outputs for base rows and for adapters of different ranks, targets and
scalings decoded in one mixed batch.
"""

from __future__ import annotations

import asyncio
import functools
import json

import pytest
import pytest_asyncio
import torch

from serving.engines import EngineConfig
from serving.engines.hf import HFEngine
from serving.engines.hf_batch import decode, prefill
from serving.engines.hf_lora import LoraBank, scaling
from tests.integration.engine_support import complete
from tests.support.adapters import ALL_PROJ

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMPTS = ["What is the capital of France?", "Name a colour.", "Count to three."]
TOKENS = 16


@pytest.fixture(scope="module")
def adapters(make_adapter):
    """Three adapters that differ in every way the scaling and routing depend on."""
    wide = make_adapter("wide", r=8, targets=ALL_PROJ, seed=11)
    narrow = make_adapter("narrow", r=4, targets=("q_proj", "v_proj"), seed=12)
    rs = make_adapter("rs", r=8, targets=("k_proj", "o_proj", "down_proj"), seed=13)
    config = json.loads((rs / "adapter_config.json").read_text())
    config.update(use_rslora=True, alpha_pattern={"down_proj": 3})
    (rs / "adapter_config.json").write_text(json.dumps(config))
    return {"wide": wide, "narrow": narrow, "rs": rs}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hf(tiny_model_dir, adapters):
    engine = HFEngine(EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny",
                                   max_loras=3, max_batch_size=16, max_lora_rank=8))
    await engine.start()
    for name, path in adapters.items():
        await engine.load_adapter(name, path)
    yield engine
    await engine.shutdown()


@pytest.fixture(scope="module")
def peft_answers(tiny_model_dir, adapters, hf):
    """Each (prompt, adapter) decoded alone through a PeftModel holding all three adapters."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    names = list(adapters)
    model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    model.eval()
    answers = {}
    with torch.inference_mode():
        for prompt in PROMPTS:
            ids = hf.encode_chat([{"role": "user", "content": prompt}])
            for name in [None, *names]:
                routed = functools.partial(model, adapter_names=[name or "__base__"])
                logits, batch = prefill(routed, [ids], pad_id=0)
                tokens = [int(logits[0].argmax())]
                while len(tokens) < TOKENS and tokens[-1] not in hf.facts.eos_ids:
                    logits, batch = decode(routed, batch, tokens[-1:])
                    tokens.append(int(logits[0].argmax()))
                answers[prompt, name] = tokens
    return answers


async def test_a_mixed_batch_decodes_what_peft_decodes_row_for_row(hf, peft_answers):
    jobs = [(prompt, name) for prompt in PROMPTS for name in (None, "wide", "narrow", "rs")]
    steps = hf.stats["steps"]
    results = await asyncio.gather(*(
        complete(hf, prompt, adapter=name, max_tokens=TOKENS)
        for prompt, name in jobs
    ))
    for (prompt, name), (_, chunks) in zip(jobs, results, strict=True):
        tokens = [t for chunk in chunks for t in chunk.token_ids]
        assert tokens == peft_answers[prompt, name], (prompt, name)
    # The twelve requests really were decoded together, not one after another.
    assert hf.stats["steps"] - steps < 2 * TOKENS
    assert hf.stats["max_batch_rows"] >= len(jobs) // 2


@pytest.mark.parametrize("name", ["wide", "narrow", "rs"])
async def test_a_batch_of_one_adapter_decodes_what_peft_decodes(hf, peft_answers, name):
    """Every row on one adapter takes the fused whole-batch path; still peft's answers."""
    results = await asyncio.gather(*(
        complete(hf, prompt, adapter=name, max_tokens=TOKENS) for prompt in PROMPTS
    ))
    for prompt, (_, chunks) in zip(PROMPTS, results, strict=True):
        assert [t for c in chunks for t in c.token_ids] == peft_answers[prompt, name], prompt


async def test_the_adapters_change_the_answers(peft_answers):
    """Not a vacuous match: every adapter answers differently from the base model."""
    for name in ("wide", "narrow", "rs"):
        assert any(peft_answers[p, name] != peft_answers[p, None] for p in PROMPTS), name


async def test_an_unloaded_adapter_leaves_its_modules_serving_base(hf, make_adapter):
    path = make_adapter("extra", r=4, targets=("up_proj",), seed=14)
    before = await complete(hf, PROMPTS[0], max_tokens=TOKENS)
    await hf.unload_adapter("rs")
    try:
        await hf.load_adapter("extra", path)
        with_extra = await complete(hf, PROMPTS[0], adapter="extra", max_tokens=TOKENS)
        await hf.unload_adapter("extra")
        assert await complete(hf, PROMPTS[0], max_tokens=TOKENS) == before
        assert with_extra[0] != before[0]
    finally:
        await hf.load_adapter("rs", make_adapter("rs", r=8, targets=("k_proj", "o_proj",
                                                                     "down_proj"), seed=13))


async def test_scaling_follows_peft():
    config = {"r": 8, "lora_alpha": 16, "rank_pattern": {"q_proj": 4},
              "alpha_pattern": {"layers.1.v_proj": 2}}
    assert scaling(config, "model.layers.0.k_proj") == 2.0
    assert scaling(config, "model.layers.0.q_proj") == 4.0  # 16 / 4
    assert scaling(config, "model.layers.1.v_proj") == 0.25  # 2 / 8
    assert scaling(config, "model.layers.11.v_proj") == 2.0  # the pattern is anchored
    assert scaling({**config, "use_rslora": True}, "model.layers.0.k_proj") == 16 / 8 ** 0.5


async def test_routing_an_adapter_that_is_not_resident_names_it(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    bank = LoraBank(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    with pytest.raises(KeyError, match=r"\['ghost'\] are not resident"):
        bank.route([None, "ghost"])
