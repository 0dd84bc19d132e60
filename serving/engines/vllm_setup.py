"""What the ``vllm`` engine learns about its model before starting vLLM, and how it starts it.

Kept apart from :mod:`serving.engines.vllm` so that it imports no vllm: the
module shapes (for adapter validation) come from the HF config on the
``meta`` device, and the engine arguments are plain keyword arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.engines.base import EngineConfig

logger = logging.getLogger(__name__)

#: The ranks vLLM's LoRAConfig accepts (``vllm/config/lora.py``, MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_MiB = 1 << 20
#: KV cache floor, and the share of free host memory it may take at most.
MIN_KV_CACHE_BYTES = 64 * _MiB
MAX_KV_CACHE_SHARE = 0.25


@dataclass(frozen=True)
class ModelFacts:
    """The base model as the engine's Python side needs it (no weights loaded)."""

    tokenizer: Any
    max_context: int
    eos_ids: frozenset[int]
    module_shapes: Mapping[str, tuple[int, int]]
    base_names: frozenset[str]
    kv_bytes_per_token: int


def read_model_facts(config: EngineConfig) -> ModelFacts:
    """Tokenizer, context, end tokens and Linear shapes of ``config.model``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(config.model)
    hf_config = AutoConfig.from_pretrained(config.model)
    # The meta device gives every module its shape without allocating weights.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    module_shapes = {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    try:
        eos = GenerationConfig.from_pretrained(config.model).eos_token_id
    except OSError:  # no generation_config.json: the model config's end token
        eos = getattr(hf_config, "eos_token_id", None)
    eos = eos if isinstance(eos, list) else [eos]
    eos_ids = frozenset(e for e in [*eos, tokenizer.eos_token_id] if e is not None)
    base_names = frozenset(
        {
            config.model,
            config.model_name,
            str(Path(config.model).resolve()),
            getattr(hf_config, "_name_or_path", ""),
        }
        - {""}
    )
    text_config = hf_config.get_text_config()
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    per_token = 2 * text_config.num_hidden_layers * kv_heads * head_dim * _DTYPE_BYTES[config.dtype]
    return ModelFacts(
        tokenizer=tokenizer,
        max_context=int(text_config.max_position_embeddings),
        eos_ids=eos_ids,
        module_shapes=module_shapes,
        base_names=base_names,
        kv_bytes_per_token=per_token,
    )


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds ``rank`` (adapters are validated at ``rank``)."""
    return next(r for r in VLLM_LORA_RANKS if r >= rank)


def cpu_kv_cache_bytes(config: EngineConfig, facts: ModelFacts, available: int) -> int:
    """KV cache for every batch row at full context, within a share of free memory.

    vLLM's CPU backend otherwise sizes the cache from ``gpu_memory_utilization``
    of the whole host (or ``VLLM_CPU_KVCACHE_SPACE``), far too much for a small
    shared machine; an explicit ``kv_cache_memory_bytes`` replaces both.
    """
    needed = config.max_batch_size * facts.max_context * facts.kv_bytes_per_token
    wanted = max(MIN_KV_CACHE_BYTES, needed + needed // 4)
    cap = int(available * MAX_KV_CACHE_SHARE)
    if wanted > cap:
        logger.warning(
            "a full KV cache needs %d MiB but only %d MiB (%.0f%% of free memory) is given; "
            "long requests may be preempted",
            wanted // _MiB,
            cap // _MiB,
            MAX_KV_CACHE_SHARE * 100,
        )
    return max(min(wanted, cap), facts.max_context * facts.kv_bytes_per_token)


def engine_kwargs(config: EngineConfig, facts: ModelFacts, *, on_cpu: bool) -> dict[str, Any]:
    """Keyword arguments for ``vllm.AsyncEngineArgs``."""
    kwargs: dict[str, Any] = {
        "model": config.model,
        "tokenizer": config.model,
        "dtype": config.dtype,
        "max_model_len": facts.max_context,
        "max_num_seqs": config.max_batch_size,
        "enable_lora": True,
        "max_loras": config.max_loras,
        "max_cpu_loras": max(config.max_cpu_loras, config.max_loras),
        "max_lora_rank": vllm_lora_rank(config.max_lora_rank),
        "logprobs_mode": "raw_logprobs",
        "max_logprobs": 20,
        "disable_log_stats": True,
        "seed": 0,
    }
    if on_cpu:
        import psutil

        # No CUDA graphs on CPU, and torch.compile costs minutes on a small machine.
        kwargs["enforce_eager"] = True
        kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(
            config, facts, psutil.virtual_memory().available
        )
    return kwargs
