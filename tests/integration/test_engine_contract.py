"""The engine contract: every engine (hf, and vllm where installed) must pass these unchanged."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from serving.engines import GenerationRequest, SamplingParams
from serving.errors import (
    AdapterBusy,
    AdapterNotLoaded,
    AdapterValidationError,
    PromptTooLong,
)
from tests.integration.engine_support import MAX_RANK, complete
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMPT = "What is the capital of France?"
OTHER = "Tell me a joke."


async def test_greedy_generation_is_deterministic(engine):
    first, chunks = await complete(engine, PROMPT)
    second, _ = await complete(engine, PROMPT)
    assert first == second
    assert first, "the tiny model should produce some text"
    last = chunks[-1]
    assert last.finish_reason in {"stop", "length"}
    assert last.completion_tokens == sum(len(c.token_ids) for c in chunks)
    assert last.prompt_tokens == len(engine.encode_chat([{"role": "user", "content": PROMPT}]))


async def test_streamed_text_equals_decoding_all_tokens_at_once(engine, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for prompt in (PROMPT, OTHER, "Café 👍 numbers 3.14"):
        text, chunks = await complete(engine, prompt, max_tokens=40)
        ids = [t for c in chunks for t in c.token_ids]
        assert text == tokenizer.decode(ids, skip_special_tokens=True)
        # No chunk may end inside a UTF-8 character.
        assert all("\ufffd" not in c.text[-1:] or c.finish_reason for c in chunks)


async def test_stop_sequence_cuts_the_text_in_stream_and_whole(engine):
    full, _ = await complete(engine, PROMPT, max_tokens=40)
    stop = full[10:13]
    assert len(stop) == 3
    text, chunks = await complete(engine, PROMPT, max_tokens=40, stop=(stop,))
    assert text == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop"


async def test_max_tokens_ends_with_length(engine):
    _, chunks = await complete(engine, PROMPT, max_tokens=5)
    assert chunks[-1].finish_reason == "length"  # greedy, the tiny model never stops this soon
    if chunks[-1].finish_reason == "length":
        assert chunks[-1].completion_tokens == 5
    else:  # the model chose to stop earlier
        assert chunks[-1].completion_tokens <= 5


async def test_seeded_sampling_is_reproducible_and_seed_dependent(engine):
    runs = [
        await complete(engine, PROMPT, temperature=1.0, seed=s, max_tokens=24) for s in (7, 7, 8)
    ]
    assert runs[0][0] == runs[1][0]
    assert runs[0][0] != runs[2][0]


async def test_logprobs_are_reported_per_token(engine):
    _, chunks = await complete(engine, PROMPT, logprobs=True, top_logprobs=3, max_tokens=8)
    entries = [lp for c in chunks for lp in (c.logprobs or [])]
    assert len(entries) == sum(len(c.token_ids) for c in chunks)
    for entry in entries:
        assert entry.logprob <= 0.0
        assert len(entry.top) == 3
        values = [v for _, v in entry.top]
        assert values == sorted(values, reverse=True)
        # Greedy picks the most likely token.
        assert entry.logprob == pytest.approx(values[0], abs=1e-4)


async def test_prompt_longer_than_context_is_refused(engine):
    too_long = [5] * engine.max_context
    with pytest.raises(PromptTooLong, match=str(engine.max_context)):
        await complete(engine, too_long)


async def test_unknown_adapter_is_refused(engine):
    with pytest.raises(AdapterNotLoaded, match="nope"):
        await complete(engine, PROMPT, adapter="nope")


async def test_adapter_changes_output_and_unload_restores_base(engine, make_adapter):
    base_text, base_chunks = await complete(engine, PROMPT, logprobs=True)
    await engine.load_adapter("contract-a", make_adapter("a", seed=1))
    assert "contract-a" in engine.loaded_adapters()
    adapted, _ = await complete(engine, PROMPT, adapter="contract-a")
    assert adapted != base_text
    # The base model is untouched for requests without an adapter.
    assert (await complete(engine, PROMPT))[0] == base_text
    await engine.unload_adapter("contract-a")
    assert "contract-a" not in engine.loaded_adapters()
    after_text, after_chunks = await complete(engine, PROMPT, logprobs=True)
    assert after_text == base_text
    before = [lp.logprob for c in base_chunks for lp in c.logprobs]
    after = [lp.logprob for c in after_chunks for lp in c.logprobs]
    assert after == pytest.approx(before, abs=1e-5)


async def test_two_adapters_in_one_batch_match_running_alone(engine, make_adapter):
    await engine.load_adapter("batch-a", make_adapter("a", seed=1))
    await engine.load_adapter(
        "batch-b", make_adapter("b", seed=2, r=8, targets=("o_proj", "down_proj"))
    )
    try:
        alone = {
            name: (await complete(engine, PROMPT, adapter=name))[0]
            for name in ("batch-a", "batch-b", None)
        }
        assert len(set(alone.values())) == 3
        names = ["batch-a", "batch-b", None] * 3
        together = await asyncio.gather(*(complete(engine, PROMPT, adapter=n) for n in names))
        for name, (text, _) in zip(names, together, strict=True):
            assert text == alone[name], name
    finally:
        await engine.unload_adapter("batch-a")
        await engine.unload_adapter("batch-b")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("corrupt_safetensors", "corrupt or truncated"),
        ("pickle_bin", "pickle"),
        ("rank_too_high", "above the engine's max_lora_rank"),
        ("unknown_targets", "do not exist in the model"),
        ("wrong_base", "does not match the engine's base model"),
    ],
)
async def test_invalid_adapters_are_refused_and_serving_continues(
    engine, make_adapter, tmp_path, case, expected
):
    await engine.load_adapter("good", make_adapter("a", seed=1))
    try:
        good_before, _ = await complete(engine, PROMPT, adapter="good")
        bad = tmp_path / case
        shutil.copytree(make_adapter("a", seed=1), bad)
        if case == "corrupt_safetensors":
            weights = bad / "adapter_model.safetensors"
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        elif case == "pickle_bin":
            (bad / "adapter_model.safetensors").rename(bad / "adapter_model.bin")
        elif case == "rank_too_high":
            shutil.rmtree(bad)
            shutil.copytree(make_adapter("big", r=MAX_RANK * 2), bad)
        elif case == "unknown_targets":
            config = (bad / "adapter_config.json").read_text()
            (bad / "adapter_config.json").write_text(config.replace("q_proj", "qkv_fused"))
        elif case == "wrong_base":
            shutil.rmtree(bad)
            shutil.copytree(make_adapter("other-base", base_name="meta-llama/Llama-3-8B"), bad)
        with pytest.raises(AdapterValidationError, match=expected) as refused:
            await engine.load_adapter(f"bad-{case}", bad)
        assert str(bad) in str(refused.value)
        assert f"bad-{case}" not in engine.loaded_adapters()
        assert (await complete(engine, PROMPT, adapter="good"))[0] == good_before
    finally:
        await engine.unload_adapter("good")


async def test_adapter_in_use_cannot_be_unloaded_until_its_requests_end(engine, make_adapter):
    await engine.load_adapter("busy", make_adapter("a", seed=1))
    ids = engine.encode_chat([{"role": "user", "content": PROMPT}])
    stream = engine.generate(
        GenerationRequest("busy-1", ids, SamplingParams(max_tokens=200, temperature=0), "busy")
    )
    await stream.__anext__()
    with pytest.raises(AdapterBusy, match="busy"):
        await engine.unload_adapter("busy")
    await stream.aclose()  # the client went away: the request is aborted

    async def unloaded() -> bool:
        try:
            await engine.unload_adapter("busy")
        except AdapterBusy:
            return False
        return True

    await until(unloaded, what="unloading the adapter once its request ended", every_s=0.05)
    assert "busy" not in engine.loaded_adapters()


async def test_encode_chat_retokenizes_the_prompt_and_assistant_prefix_as_one_text(
    engine, tiny_model_dir
):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": PROMPT}]
    template_ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert engine.encode_chat(messages) == engine.encode_chat(messages, "") == list(template_ids)
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    head, tail = "The capital is Pa", "ris."
    ids = engine.encode_chat(messages, head + tail)
    assert tokenizer.decode(ids) == rendered + head + tail
    # "Pa" + "ris" is not how "Paris" tokenizes: the continuation is tokenized as one text.
    assert ids != engine.encode_chat(messages, head) + engine.encode_text(tail)
    assert engine.encode_text(tail) == tokenizer(tail, add_special_tokens=False)["input_ids"]


async def test_score_is_the_log_probability_of_the_tokens_the_engine_generated(engine):
    prompt = engine.encode_chat([{"role": "user", "content": PROMPT}])
    _, chunks = await complete(engine, prompt, max_tokens=12, logprobs=True)
    completion = [t for c in chunks for t in c.token_ids]
    generated = [lp.logprob for c in chunks for lp in c.logprobs]
    scores = await engine.score(prompt, completion, None)
    assert len(scores) == len(completion)
    assert scores == pytest.approx(generated, abs=1e-4)


async def test_score_refuses_what_it_cannot_score_and_scores_a_full_context(engine):
    prompt = engine.encode_chat([{"role": "user", "content": PROMPT}])
    with pytest.raises(AdapterNotLoaded, match="nope"):
        await engine.score(prompt, [5, 6], "nope")
    room = engine.max_context - len(prompt)
    with pytest.raises(PromptTooLong, match=str(engine.max_context)):
        await engine.score(prompt, [5] * (room + 1), None)
    with pytest.raises(PromptTooLong, match="empty"):
        await engine.score([], [5], None)
    assert await engine.score(prompt, [], None) == []
    # Prompt and completion may fill the whole context, as a generation may.
    assert len(await engine.score(prompt, [5] * room, None)) == room
