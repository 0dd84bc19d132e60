"""Validate a LoRA adapter directory against a base model before any engine loads it.

Both engines call :func:`validate_adapter` first, so an adapter is refused
for the same reasons, with the same words, whichever engine serves it. Every
problem is collected and reported at once (like vLLM's ``PEFTHelper
.validate_legal`` and peft's hot-swap compatibility check): an operator
fixing a bad adapter should not discover its problems one at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from serving.errors import AdapterValidationError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$")


@dataclass(frozen=True)
class AdapterSpec:
    """What validation learned about an adapter that is fit to load."""

    path: Path
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    base_model: str


def validate_adapter(
    version_id: str,
    path: str | Path,
    *,
    module_shapes: Mapping[str, tuple[int, int]],
    max_rank: int,
    base_model_names: Collection[str],
) -> AdapterSpec:
    """Check an adapter directory; return its spec or raise ``AdapterValidationError``.

    ``module_shapes`` maps each linear module of the base model (its dotted
    name) to ``(in_features, out_features)``; ``base_model_names`` are the
    names under which the engine's base model is known.
    """
    path = Path(path)
    problems: list[str] = []
    if not path.is_dir():
        raise AdapterValidationError(version_id, str(path), ["the path is not a directory"])

    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        problems.append(
            f"pickle weight files {pickles} are refused: only safetensors are loaded "
            "(pickle can run code); re-save with safe_serialization=True"
        )
    config = _read_config(path, problems)
    tensors = _read_tensor_shapes(path, problems)

    rank = int(config.get("r") or 0)
    alpha = float(config.get("lora_alpha") or rank or 1)
    ranks = [rank, *[int(r) for r in (config.get("rank_pattern") or {}).values()]]
    if config and max(ranks) > max_rank:
        problems.append(
            f"rank {max(ranks)} is above the engine's max_lora_rank {max_rank}; "
            f"train with r <= {max_rank} or raise LORALOOP_MAX_LORA_RANK"
        )
    if config and rank < 1:
        problems.append(f"rank r={config.get('r')!r} is not a positive integer")
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type {config.get('peft_type')!r} is not supported; only LORA")
    for unsupported in ("use_dora", "modules_to_save"):
        if config.get(unsupported):
            problems.append(
                f"{unsupported}={config[unsupported]!r} is not supported: adapters may only "
                "carry LoRA A/B weights"
            )

    targets = _check_targets(config.get("target_modules"), module_shapes, problems)
    base = str(config.get("base_model_name_or_path") or "")
    names = sorted(n for n in base_model_names if n)
    if base and base not in names:
        problems.append(
            f"base model {base!r} does not match the engine's base model (known as {names})"
        )
    _check_tensors(tensors, module_shapes, config, problems)

    if problems:
        raise AdapterValidationError(version_id, str(path), problems)
    return AdapterSpec(path, rank, alpha, targets, base)


def _read_config(path: Path, problems: list[str]) -> dict:
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        problems.append(f"{CONFIG_FILE} is missing")
        return {}
    try:
        config = json.loads(config_path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{CONFIG_FILE} is not valid JSON: {exc}")
        return {}
    if not isinstance(config, dict):
        problems.append(f"{CONFIG_FILE} must hold a JSON object, not {type(config).__name__}")
        return {}
    return config


def _read_tensor_shapes(path: Path, problems: list[str]) -> dict[str, tuple[int, ...]]:
    from safetensors import SafetensorError, safe_open

    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        problems.append(f"{WEIGHTS_FILE} is missing (safetensors weights are required)")
        return {}
    try:
        shapes: dict[str, tuple[int, ...]] = {}
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                # The header is enough: safe_open already refuses a file its header
                # does not fully cover (truncated), and no tensor is read here.
                shapes[key] = tuple(handle.get_slice(key).get_shape())
        return shapes
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        problems.append(f"{WEIGHTS_FILE} is corrupt or truncated: {exc}")
        return {}


def _check_targets(
    targets, module_shapes: Mapping[str, tuple[int, int]], problems: list[str]
) -> tuple[str, ...]:
    if targets is None:
        problems.append("target_modules is missing from the adapter config")
        return ()
    names = list(module_shapes)
    if isinstance(targets, str):
        if targets == "all-linear":
            return ("all-linear",)
        if not any(re.fullmatch(targets, n) for n in names):
            problems.append(f"target_modules pattern {targets!r} matches no module of the model")
        return (targets,)
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unknown:
        known = sorted({n.rsplit(".", 1)[-1] for n in names})
        problems.append(
            f"target modules {sorted(unknown)} do not exist in the model; it has {known}"
        )
    return tuple(targets)


def _check_tensors(
    tensors: Mapping[str, tuple[int, ...]],
    module_shapes: Mapping[str, tuple[int, int]],
    config: dict,
    problems: list[str],
) -> None:
    if not tensors:
        if not any("safetensors" in p for p in problems):
            problems.append(f"{WEIGHTS_FILE} holds no tensors")
        return
    rank = int(config.get("r") or 0)
    pattern = {k: int(v) for k, v in (config.get("rank_pattern") or {}).items()}
    foreign, missing, mismatched = [], set(), []
    for key, shape in sorted(tensors.items()):
        match = _KEY.match(key)
        if not match:
            foreign.append(key)
            continue
        module = match["module"]
        if module not in module_shapes:
            missing.add(module)
            continue
        in_features, out_features = module_shapes[module]
        r = next((v for k, v in pattern.items() if module.endswith(k)), rank)
        expected = (r, in_features) if match["part"] == "lora_A" else (out_features, r)
        if rank and shape != expected:
            mismatched.append(f"{key}: {shape} != expected {expected}")
    if foreign:
        problems.append(f"tensors that are not LoRA A/B weights: {foreign[:5]}")
    if missing:
        problems.append(
            "tensors for modules the model does not have (wrong base model?): "
            f"{sorted(missing)[:5]}"
        )
    if mismatched:
        problems.append(
            f"tensor shapes do not fit the model (wrong base model or rank?): {mismatched[:5]}"
        )
