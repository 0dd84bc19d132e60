"""Multi-LoRA for the ``hf`` engine: each adapter applied to its rows in one product.

The S-LoRA/Punica idea, in torch. Every linear module an adapter targets is
wrapped once in a :class:`LoraLinear` that holds the LoRA weights of every
resident adapter for that module. Before a forward pass the engine sets the
batch's routing (:meth:`LoraBank.route`): the rows of each adapter, worked out
once per step rather than in every module. A module then computes its base
output for the whole batch and adds, for each adapter present, ``B(A(x))``
times the scaling on that adapter's rows (all rows at once when the batch has
one adapter). Base rows never enter the LoRA path; a batch with no adapter
rows is the base model plus one Python check per wrapped module.

The arithmetic is peft's (``lora_B(lora_A(x)) * scaling`` added to the base
output, adapter weights kept in float32 as peft's ``autocast_adapter_dtype``
does), in the same order, so greedy outputs are identical to a ``PeftModel``
routing the same rows with ``adapter_names``; peft is only skipped for its
per-module, per-call Python routing and forward hooks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from serving.engines.lora_check import CONFIG_FILE, WEIGHTS_FILE

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>A|B)\.weight$")
#: An empty route: every row is a base row.
NO_ADAPTERS: tuple = ()


@dataclass(frozen=True)
class LoraWeights:
    """One adapter's LoRA on one module: ``B @ A`` scaled, in the weights' dtype."""

    a: torch.Tensor  # [rank, in_features]
    b: torch.Tensor  # [out_features, rank]
    scaling: float


class LoraLinear(torch.nn.Module):
    """A linear module plus the LoRA of every resident adapter that targets it."""

    def __init__(self, base: torch.nn.Module, bank: LoraBank) -> None:
        super().__init__()
        self.base_layer = base
        self.adapters: dict[str, LoraWeights] = {}
        self._bank = bank  # not a submodule: plain attribute, no parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        for name, rows in self._bank.routes:
            lora = self.adapters.get(name)
            if lora is None:  # the adapter does not target this module
                continue
            if rows is None and result.dtype == lora.a.dtype:  # every row: one fused product
                down = F.linear(x, lora.a)
                flat = torch.addmm(result.reshape(-1, result.shape[-1]),
                                   down.reshape(-1, down.shape[-1]), lora.b.t(),
                                   alpha=lora.scaling)
                result = flat.view(result.shape)
            elif rows is None:
                delta = F.linear(F.linear(x.to(lora.a.dtype), lora.a), lora.b) * lora.scaling
                result = result + delta.to(result.dtype)
            elif result.dtype == lora.a.dtype:  # this adapter's rows, added in place
                delta = F.linear(F.linear(x.index_select(0, rows), lora.a), lora.b)
                result.index_add_(0, rows, delta, alpha=lora.scaling)
            else:
                sub = x.index_select(0, rows).to(lora.a.dtype)
                delta = F.linear(F.linear(sub, lora.a), lora.b) * lora.scaling
                result.index_add_(0, rows, delta.to(result.dtype))
        return result


class LoraBank:
    """The resident adapters of one model, and the routing of the current forward pass."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.wrapped: dict[str, LoraLinear] = {}
        self.resident: dict[str, tuple[str, ...]] = {}  # adapter -> the modules it targets
        #: ``(adapter, rows)`` for each adapter in the batch; rows None means all of them.
        self.routes: Sequence[tuple[str, torch.Tensor | None]] = NO_ADAPTERS

    def add(self, name: str, path: str | Path) -> None:
        """Load a validated adapter directory (see ``lora_check``) under ``name``."""
        if name in self.resident:
            raise ValueError(f"adapter name {name!r} is already resident")
        weights = read_adapter(Path(path))
        modules = dict(self.model.named_modules())
        # Every target is wrapped (or refused) before any weight is placed, so a refused
        # adapter leaves nothing behind.
        wrappers = {module: self._wrapper(module, modules) for module in weights}
        for module, lora in weights.items():
            wrappers[module].adapters[name] = lora
        self.resident[name] = tuple(weights)

    def remove(self, name: str) -> None:
        """Drop an adapter; unknown names are ignored (a failed load may leave none)."""
        for module in self.resident.pop(name, ()):
            self.wrapped[module].adapters.pop(name, None)

    def route(self, names: Sequence[str | None]) -> None:
        """Set the routing for the next forward pass: ``names[i]`` is row i's adapter
        (None: the base model)."""
        rows: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            if name is not None:
                rows.setdefault(name, []).append(i)
        unknown = sorted(set(rows) - set(self.resident))
        if unknown:
            raise KeyError(f"adapters {unknown} are not resident; resident: "
                           f"{sorted(self.resident)}")
        self.routes = tuple(
            (name, None if len(index) == len(names) else torch.tensor(index))
            for name, index in rows.items()
        )

    def _wrapper(self, module: str, modules: dict[str, torch.nn.Module]) -> LoraLinear:
        if module in self.wrapped:
            return self.wrapped[module]
        base = modules.get(module)
        if not isinstance(base, torch.nn.Linear):
            raise ValueError(f"LoRA target {module!r} is not a linear module of the model")
        parent_name, _, child = module.rpartition(".")
        wrapper = LoraLinear(base, self)
        setattr(modules[parent_name] if parent_name else self.model, child, wrapper)
        self.wrapped[module] = wrapper
        return wrapper


def read_adapter(path: Path) -> dict[str, LoraWeights]:
    """An adapter directory's LoRA weights by module, with peft's scaling per module."""
    from safetensors.torch import load_file

    config = json.loads((path / CONFIG_FILE).read_text("utf-8"))
    tensors = load_file(str(path / WEIGHTS_FILE))
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"{key!r} in {path} is not a LoRA A/B weight")
        parts.setdefault(match["module"], {})[match["part"]] = _adapter_dtype(tensor)
    weights = {}
    for module, pair in parts.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"{path}: module {module!r} has lora_{''.join(pair)} only")
        weights[module] = LoraWeights(pair["A"], pair["B"], scaling(config, module))
    return weights


def scaling(config: dict, module: str) -> float:
    """peft's LoRA scaling of ``module``: alpha / r, or alpha / sqrt(r) with rsLoRA;
    ``rank_pattern`` and ``alpha_pattern`` override r and alpha per module."""
    rank = _pattern_value(config.get("rank_pattern"), module, config["r"])
    alpha = _pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", rank))
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _pattern_value(pattern: dict | None, module: str, default):
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _adapter_dtype(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision adapter weights are kept in float32, as peft does by default."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor
