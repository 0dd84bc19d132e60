"""The hf engine's scores against a direct transformers / peft computation.

``score`` is what the scorer aggregator of test-time compute builds its implicit
reward from (``sum(score(adapter)) - sum(score(None))``), so its values must be
the model's own log-probabilities, under the adapter or under the base model.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from serving.engines import EngineConfig
from serving.engines.hf import HFEngine
from serving.errors import ServingError
from tests.integration.engine_support import MAX_RANK, complete

pytestmark = pytest.mark.asyncio(loop_scope="module")

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = " The capital of France is Paris, a city on the Seine."


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hf(tiny_model_dir):
    engine = HFEngine(
        EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny", max_lora_rank=MAX_RANK)
    )
    await engine.start()
    yield engine
    await engine.shutdown()


def _direct_logprobs(model, prompt: list[int], completion: list[int]) -> list[float]:
    """log_softmax of the model's logits at the positions that predict the completion."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [float(logprobs[len(prompt) - 1 + i, token]) for i, token in enumerate(completion)]


async def test_base_scores_are_the_models_log_probabilities(hf, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    prompt, completion = hf.encode_chat(MESSAGES), hf.encode_text(ANSWER)
    scores = await hf.score(prompt, completion, None)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert scores == pytest.approx(_direct_logprobs(model, prompt, completion), abs=1e-4)
    assert all(s <= 0.0 for s in scores)


async def test_adapter_scores_are_the_peft_models_and_base_stays_base(
    hf, tiny_model_dir, make_adapter
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = make_adapter("score", r=8, targets=("q_proj", "v_proj", "down_proj"), seed=11)
    prompt, completion = hf.encode_chat(MESSAGES), hf.encode_text(ANSWER)
    base_before = await hf.score(prompt, completion, None)
    await hf.load_adapter("score-v1", path)
    try:
        adapted = await hf.score(prompt, completion, "score-v1")
        # With an adapter resident, None still scores the base model.
        assert await hf.score(prompt, completion, None) == pytest.approx(base_before, abs=1e-5)
    finally:
        await hf.unload_adapter("score-v1")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, str(path)).eval()
    assert adapted == pytest.approx(_direct_logprobs(model, prompt, completion), abs=1e-4)
    reward = sum(adapted) - sum(base_before)
    assert abs(reward) > 1e-2, "a random adapter should move the log-ratio"


async def test_scoring_between_decode_steps_changes_no_generation(hf, make_adapter):
    await hf.load_adapter("score-mix", make_adapter("a", seed=1))
    try:
        alone = {
            name: (await complete(hf, MESSAGES[0]["content"], adapter=name, max_tokens=32))[0]
            for name in ("score-mix", None)
        }
        prompt, completion = hf.encode_chat(MESSAGES), hf.encode_text(ANSWER)
        expected = {name: await hf.score(prompt, completion, name) for name in ("score-mix", None)}
        names = ["score-mix", None] * 2
        results = await asyncio.gather(
            *(complete(hf, MESSAGES[0]["content"], adapter=n, max_tokens=32) for n in names),
            *(hf.score(prompt, completion, n) for n in names * 2),
        )
        texts, scores = results[: len(names)], results[len(names) :]
        assert [text for text, _ in texts] == [alone[n] for n in names]
        for name, got in zip(names * 2, scores, strict=True):
            assert got == pytest.approx(expected[name], abs=1e-5), name
        assert hf.stats["scores"] >= 6
    finally:
        await hf.unload_adapter("score-mix")


async def test_a_score_after_shutdown_is_refused_not_left_waiting(tiny_model_dir):
    engine = HFEngine(EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny"))
    await engine.start()
    prompt = engine.encode_chat(MESSAGES)
    await engine.shutdown()
    with pytest.raises(ServingError, match=r"worker stopped|shut down"):
        await asyncio.wait_for(engine.score(prompt, [5], None), timeout=30)
