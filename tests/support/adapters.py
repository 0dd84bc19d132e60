"""LoRA adapters with random weights, for tests and benches that need one that really
changes the model's output (a default LoRA starts as a no-op)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

#: Every projection of a Llama-style block: what a LoRA that adapts the whole model targets.
ALL_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def save_random_adapter(
    base_dir: Path | str,
    out: Path,
    *,
    r: int,
    targets: Sequence[str],
    seed: int,
    base_name: str,
    alpha: float | None = None,
) -> Path:
    """Save a LoRA adapter for ``base_dir`` whose weights are random, not a no-op.

    ``alpha`` defaults to ``2 * r``; the saved config names ``base_name`` as its base model.
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
