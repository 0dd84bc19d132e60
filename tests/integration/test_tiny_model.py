"""The built-in tiny model: reproducible, loadable, with a working chat template."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import pytest

from loraloop.models import resolve_model
from loraloop.tiny_model import build_tiny_model, ensure_tiny_model, tiny_model_dir


def _digests(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def test_two_builds_are_byte_identical(tmp_path, tiny_model_dir):
    rebuilt = build_tiny_model(tmp_path / "again")
    first, second = _digests(tiny_model_dir), _digests(rebuilt)
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(first)
    assert first == second


def test_transformers_loads_it_with_the_shape_vllm_needs(tiny_model_dir):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert config.model_type == "llama"
    assert config.hidden_size // config.num_attention_heads == 64  # vLLM CPU attention minimum
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == len(tokenizer)
    text = "Hello café 👍 3.14"
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_chat_template_frames_roles_and_ends_with_the_assistant_turn(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert rendered == "<|bos|><|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
    assert tokenizer.eos_token == "<|end|>"


def _ensure(data_dir: str) -> str:
    return str(ensure_tiny_model(Path(data_dir)))


def test_concurrent_first_use_builds_once_and_atomically(tmp_path):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.map(_ensure, [str(tmp_path)] * 2)
    assert paths == [str(tiny_model_dir(tmp_path))] * 2
    leftovers = [p.name for p in (tmp_path / "models").iterdir() if p.is_dir()]
    assert leftovers == [tiny_model_dir(tmp_path).name]


def test_resolve_model_accepts_builtin_paths_and_hub_ids(data_dir, tiny_model_dir, tmp_path):
    assert resolve_model("builtin:tiny", data_dir) == str(tiny_model_dir)
    assert resolve_model(str(tiny_model_dir), data_dir) == str(tiny_model_dir.resolve())
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct", data_dir) == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(ValueError, match=r"unknown built-in model 'builtin:huge'.*builtin:tiny"):
        resolve_model("builtin:huge", data_dir)
    with pytest.raises(ValueError, match=r"no config\.json"):
        resolve_model(str(tmp_path), data_dir)
