"""How the ``vllm`` engine starts vLLM: its arguments, from the config and the model's facts.

Kept apart from :mod:`serving.engines.vllm` so that it imports no vllm: the
engine arguments are plain keyword arguments. The model's facts (tokenizer,
context, module shapes) come from :func:`serving.engines.model.read_model_facts`,
as the ``hf`` engine's do.
"""

from __future__ import annotations

import logging
from typing import Any

from serving.engines.base import EngineConfig
from serving.engines.model import ModelFacts

logger = logging.getLogger(__name__)

#: The ranks vLLM's LoRAConfig accepts (``vllm/config/lora.py``, MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_MiB = 1 << 20
#: KV cache floor, and the share of free host memory it may take at most.
MIN_KV_CACHE_BYTES = 64 * _MiB
MAX_KV_CACHE_SHARE = 0.25


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds ``rank`` (adapters are validated at ``rank``)."""
    return next(r for r in VLLM_LORA_RANKS if r >= rank)


def cpu_lora_slots(config: EngineConfig) -> int:
    """Adapters vLLM keeps in host memory: ``max_cpu_loras``, never below ``max_loras``.

    This bounds the engine's resident adapters: vLLM must never evict one of
    ours from its host cache behind our back. ``max_loras`` of them fit on the
    device at once; vLLM moves them there as requests need them.
    """
    return max(config.max_cpu_loras, config.max_loras)


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


def engine_kwargs(config: EngineConfig, facts: ModelFacts, *, on_cpu: bool,
                  known: set[str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``vllm.AsyncEngineArgs``: loraloop's, then ``config.vllm_args``
    over them. ``known``: the names AsyncEngineArgs takes; any other in ``vllm_args`` is
    refused, naming it."""
    unknown = sorted(set(config.vllm_args) - known) if known is not None else []
    if unknown:
        raise ValueError(f"vllm_args {unknown} are not arguments of vllm.AsyncEngineArgs "
                         "(see `vllm serve --help` for the names it takes, with - as _)")
    kwargs: dict[str, Any] = {
        "model": config.model,
        "tokenizer": config.model,
        "dtype": config.dtype,
        "max_model_len": facts.max_context,
        "max_num_seqs": config.max_batch_size,
        "enable_lora": True,
        "max_loras": config.max_loras,
        "max_cpu_loras": cpu_lora_slots(config),
        "max_lora_rank": vllm_lora_rank(config.max_lora_rank),
        # The n choices of a request share their prompt's KV blocks. vLLM 0.32 turns
        # this on by default for a generating Llama-style model (EngineArgs, from
        # ModelConfig.is_prefix_caching_supported); it is said here so a changed
        # default cannot quietly turn it off. Only full blocks are shared: 128
        # tokens on CPU (vllm/platforms/cpu.py), 16 on GPU. Scoring requests
        # (prompt log-probs) never read the cache: vLLM recomputes their prompt.
        "enable_prefix_caching": True,
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
    return {**kwargs, **config.vllm_args}
