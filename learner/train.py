"""Training: curated examples in, a servable safetensors LoRA adapter out.

:func:`train_adapter` is a plain function (no Ray, no Redis) so it can be
tested and benchmarked alone; the actor calls it in a worker thread.

* **KTO** (default) fits thumbs up/down directly: TRL's ``KTOTrainer`` on
  unpaired ``prompt`` / ``completion`` / ``label`` rows built by
  :func:`learner.scoring.render` (chat template with the generation prompt;
  answer + EOS). The reference policy is the starting point: the base model for
  a fresh adapter, the parent adapter for a warm start.
* **One-sided rounds.** KTO needs desirable *and* undesirable examples (its KL
  estimate and its loss compare the two). A round with only desirable examples
  trains SFT on them instead (``metrics["method"] == "sft"``, with the reason
  in ``metrics["fallback"]``); a round with no desirable example raises
  :class:`~learner.errors.NothingToTrain`, since neither method can learn
  from thumbs-down alone without drifting from the reference. A KTO round also
  needs at least 2 examples (TRL requires a batch of 2 or more).
* **SFT** (``method="sft"``): TRL's ``SFTTrainer`` on the desirable examples,
  loss on the completion only.
* **Warm start.** With ``parent_adapter`` the parent's LoRA weights are loaded
  trainable (``PeftModel.from_pretrained(..., is_trainable=True)``) and training
  continues from them; rank and target modules must equal the parent's
  (:class:`~learner.errors.IncompatibleParent` otherwise). The child keeps the
  parent's ``lora_alpha``.
* **Output.** ``output_dir`` receives exactly ``adapter_config.json`` (with
  ``base_model_name_or_path = base_model_name``, the name replicas know the
  base model by) and ``adapter_model.safetensors``: no optimizer state,
  checkpoint or README, because the artifact store publishes the directory.
* **Determinism.** Given ``seed`` the data order and LoRA initialisation are
  fixed; on CPU two runs give the same weights up to torch's kernel choices.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from learner.errors import IncompatibleParent, NothingToTrain, OutputDirNotEmpty
from learner.examples import Example
from learner.progress import StepProgress, quiet_libraries, trainer_callback
from learner.scoring import (
    default_threads,
    freeze_imports,
    limited_threads,
    load_tokenizer,
    render,
    unwrapped_base,
)

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class TrainConfig(BaseModel):
    """How one round trains its LoRA adapter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["anchored", "kto", "sft"] = Field(
        "anchored", description="anchored: corrections and liked answers as targets, disliked "
        "answers pushed down (NPO), the base model's answers on anchor prompts kept "
        "(learner.objective); kto: thumbs as unpaired preferences (TRL KTOTrainer); sft: "
        "supervised fine-tuning on the desirable answers only (TRL SFTTrainer).")
    rank: int = Field(8, ge=1, le=256, description="LoRA rank r; must not exceed the "
                      "engines' max_lora_rank, and must equal the parent's on a warm start.")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (scale = alpha / rank).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: tuple[str, ...] = Field(
        ("gate_proj", "up_proj", "down_proj"), min_length=1,
        description="Linear modules that get LoRA weights (names as in the base model). The "
        "MLP's: facts live there, and they taught facts with less damage than attention.")
    layers: tuple[int, ...] | None = Field(
        None, description="Decoder layers that get LoRA weights (indices); None: all.")
    epochs: float = Field(6.0, gt=0, le=100, description="Passes over the round's examples.")
    min_steps: int = Field(16, ge=0, description="anchored: optimizer steps a round takes at "
                           "least (more passes over a small round).")
    learning_rate: float = Field(3e-3, gt=0, le=1, description="AdamW peak learning rate "
                                 "(decayed linearly to 0 over the round in `anchored`).")
    batch_size: int = Field(4, ge=2, le=1024, description="Users' examples per step (KTO "
                            "needs >= 2; lowered to the round's size for a small round).")
    max_length: int = Field(512, ge=16, description="Longest prompt+completion in tokens; "
                            "longer ones are truncated, prompts that fill it are dropped.")
    seed: int = Field(0, ge=0, description="Seed of the data order and the LoRA init.")
    threads: int | None = Field(None, ge=1, le=256, description="torch threads while "
                                "training, bounded by the CPUs; None: "
                                "learner.scoring.default_threads().")
    beta: float = Field(0.1, gt=0, description="KTO's beta, and anchored's NPO beta: higher "
                        "stays closer to the reference; the NPO push on an undesirable answer "
                        "fades once its log-ratio is below about -3/beta.")
    npo_weight: float = Field(0.5, ge=0, description="anchored: weight of the NPO term on "
                              "undesirable answers (0: ignore them).")
    anchor_weight: float = Field(10.0, ge=0, description="anchored: weight of KL(base || model) "
                                 "on the anchors' answer tokens (0: no anchors).")
    neighbours: int = Field(3, ge=0, le=16, description="anchored: anchor prompts made from "
                            "each taught prompt by swapping its subject (learner.anchors).")
    retain_anchors: int = Field(8, ge=0, le=256, description="anchored: shipped everyday "
                                "prompts added as anchors each round.")
    max_anchors: int = Field(64, ge=0, description="anchored: most anchors a round uses.")
    anchors_per_step: int = Field(8, ge=0, description="anchored: anchors in each step's batch.")
    anchor_tokens: int = Field(24, ge=1, le=256, description="anchored: length of the base "
                               "model's greedy answer kept per anchor.")
    anchor_top_k: int = Field(64, ge=1, description="anchored: base-model tokens per position "
                              "the KL compares exactly (the rest form one bucket).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Arithmetic of the forward and backward passes (weights stay "
        "float32): bf16 autocast is about 1.7x faster on CPUs with native bf16 (AVX512-BF16, "
        "AMX) and on GPUs that support it; auto picks it there and fp32 elsewhere.")
    balance_weights: bool = Field(True, description="KTO: weight desirable examples by "
                                  "n_undesirable / n_desirable (x1.1, in the KTO paper's range) "
                                  "so an unbalanced round does not tilt the loss.")


@dataclass(frozen=True)
class TrainResult:
    """A trained adapter directory and what training measured."""

    adapter_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    #: ``keep_base=True``: the base model training loaded (frozen, so the checkpoint's
    #: weights), LoRA layers out, for the gate to reuse (``learner.gate.evaluate(base=)``).
    base: Any = field(default=None, repr=False, compare=False)


def train_adapter(*, base_model: str, base_model_name: str, examples: Sequence[Example],
                  output_dir: str | Path, config: TrainConfig | None = None,
                  parent_adapter: str | Path | None = None,
                  progress: StepProgress | None = None, keep_base: bool = False) -> TrainResult:
    """Train a LoRA adapter on ``examples`` and save it to ``output_dir``; see the module docstring.

    ``base_model`` is the base model's local path, ``base_model_name`` the name
    written into ``adapter_config.json`` (e.g. ``builtin:tiny``).
    ``output_dir`` must not exist or be empty. Raises ``NothingToTrain``,
    ``IncompatibleParent`` or ``OutputDirNotEmpty`` before any training. ``progress(step,
    total)`` is called after every optimizer step (:mod:`learner.progress`). ``keep_base``:
    return the base model in ``TrainResult.base`` rather than dropping it.
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        present = sorted(p.name for p in out.iterdir())[:5]
        raise OutputDirNotEmpty(f"output_dir {out} is not empty ({present}); give a new or "
                                "empty directory")
    method, fallback = _choose_method(config.method, examples)
    rows = [e for e in examples if e.desirable] if method == "sft" else list(examples)
    random.Random(config.seed).shuffle(rows)  # KTO samples sequentially: mix labels per batch
    parent_config = _parent_config(parent_adapter, config) if parent_adapter else None

    with limited_threads(config.threads or default_threads()) as threads, quiet_libraries(), \
            tempfile.TemporaryDirectory(prefix="loraloop-train-") as scratch:
        import torch
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import AutoModelForCausalLM, set_seed

        set_seed(config.seed)
        tokenizer = load_tokenizer(base_model)
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        use_cache = model.config.use_cache  # the Trainer turns it off
        peft_config = None
        if parent_adapter is not None:
            model = PeftModel.from_pretrained(model, str(parent_adapter), is_trainable=True)
            # The parent names the base model as replicas know it (e.g. builtin:tiny);
            # peft's save looks that name up, so point it at the local path meanwhile.
            model.peft_config["default"].base_model_name_or_path = base_model
        else:
            peft_config = LoraConfig(r=config.rank, lora_alpha=config.alpha,
                                     lora_dropout=config.dropout,
                                     target_modules=list(config.target_modules),
                                     layers_to_transform=list(config.layers)
                                     if config.layers else None,
                                     task_type="CAUSAL_LM", bias="none")
        if method == "anchored":
            if peft_config is not None:
                model = get_peft_model(model, peft_config)
            fitted = _fit_anchored(model, tokenizer, rows, config, progress)
        else:
            trainer = _make_trainer(method, model, tokenizer, rows, config, peft_config,
                                    scratch, progress)
            fitted = _fit_trl(trainer, started)
            model = trainer.model
        trained = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out), selected_adapters=["default"], safe_serialization=True)
        base = unwrapped_base(model, use_cache) if keep_base else None
    _tidy_output(out, base_model_name)
    saved = time.perf_counter()
    seconds = saved - started
    metrics: dict[str, Any] = {
        "method": method,
        "examples": len(rows),
        "desirable": sum(e.desirable for e in rows),
        "undesirable": sum(not e.desirable for e in rows),
        "epochs": config.epochs,
        "threads": threads,
        "warm_start": parent_adapter is not None,
        **fitted,
        "seconds": round(seconds, 3),
        "save_seconds": round(saved - trained, 3),
    }
    if fallback:
        metrics["fallback"] = fallback
    if parent_config is not None:
        metrics["parent_alpha"] = parent_config.get("lora_alpha")
    log.info("trained a %s adapter on %d examples in %.1fs (%d steps, loss %.4f) -> %s",
             method, len(rows), seconds, metrics["steps"], metrics["train_loss"], out)
    return TrainResult(out, metrics, seconds, base)


def _fit_trl(trainer: Any, started: float) -> dict[str, Any]:
    prepared = time.perf_counter()
    output = trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]
    fitted: dict[str, Any] = {
        "steps": int(trainer.state.global_step),
        "train_loss": float(output.training_loss),
        "prepare_seconds": round(prepared - started, 3),
        "fit_seconds": round(time.perf_counter() - prepared, 3),
    }
    if history:
        fitted.update({k: float(v) for k, v in history[-1].items()
                       if k.startswith(("rewards/", "kl", "logps/")) and _is_number(v)})
    return fitted


def _fit_anchored(model: Any, tokenizer: Any, rows: Sequence[Example],
                  config: TrainConfig, progress: StepProgress | None) -> dict[str, Any]:
    import learner.anchors as anchors  # not via the package, which imports this module
    import learner.objective as objective

    started = time.perf_counter()
    bf16 = use_bf16(config.precision)
    taught = [e.prompt for e in rows if e.desirable]
    chats = anchors.anchor_prompts(taught, per_prompt=config.neighbours,
                                   retain=config.retain_anchors, tokenizer=tokenizer,
                                   seed=config.seed)[:config.max_anchors]
    with model.disable_adapter(), _autocast(model, bf16):
        kept = anchors.answer(model, tokenizer, chats, max_new_tokens=config.anchor_tokens)
    anchored = time.perf_counter()
    fitted = objective.fit(model, tokenizer, rows, kept, config, bf16=bf16,
                           progress=progress)
    fitted["anchor_seconds"] = round(anchored - started, 3)
    fitted["prepare_seconds"] = round(fitted["prepare_seconds"] + anchored - started, 3)
    return fitted


def _autocast(model: Any, enabled: bool) -> Any:
    import torch

    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=enabled)


def preload() -> float:
    """Import the training stack now (trl, peft, datasets) and keep the garbage collector
    off it (:func:`learner.scoring.freeze_imports`); returns the seconds it took.

    The imports take seconds on a small machine; a learner calls this at start so
    that its first round is not that much slower than the next ones.
    """
    started = time.perf_counter()
    with quiet_libraries():
        import datasets  # noqa: F401
        import peft  # noqa: F401
        from trl import KTOTrainer, SFTTrainer  # noqa: F401
    freeze_imports()
    return time.perf_counter() - started


def _choose_method(requested: str, examples: Sequence[Example]) -> tuple[str, str]:
    desirable = sum(e.desirable for e in examples)
    undesirable = len(examples) - desirable
    if desirable == 0:
        raise NothingToTrain(
            f"the round has no desirable example ({undesirable} undesirable): KTO needs both "
            "kinds and SFT needs desirable answers; keep the examples for a later round")
    if requested in ("sft", "anchored"):
        return requested, ""
    if undesirable == 0:
        return "sft", (f"only desirable examples ({desirable}): KTO needs both kinds, "
                       "so SFT trained on them")
    if len(examples) < 2:
        return "sft", "one example: KTO needs a batch of at least 2, so SFT trained on it"
    return "kto", ""


def _parent_config(parent: str | Path, config: TrainConfig) -> dict[str, Any]:
    path = Path(parent) / "adapter_config.json"
    try:
        parent_config = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise IncompatibleParent(f"parent adapter config {path} is unreadable: {exc}") from exc
    problems = []
    if int(parent_config.get("r") or 0) != config.rank:
        problems.append(f"rank {config.rank} != the parent's r={parent_config.get('r')!r}")
    targets = parent_config.get("target_modules")
    if sorted(targets if isinstance(targets, list) else [targets]) != sorted(
            config.target_modules):
        problems.append(f"target_modules {sorted(config.target_modules)} != the parent's "
                        f"{targets!r}")
    if problems:
        raise IncompatibleParent(
            f"cannot warm-start from {parent}: " + "; ".join(problems) +
            ". Train with the parent's LoRA shape, or without a parent (a fresh adapter)")
    if float(parent_config.get("lora_alpha") or 0) != config.alpha:
        log.info("warm start keeps the parent's lora_alpha %s (config says %s)",
                 parent_config.get("lora_alpha"), config.alpha)
    return parent_config


def _common_args(config: TrainConfig, scratch: str, batch: int) -> dict[str, Any]:
    return {
        "output_dir": scratch, "num_train_epochs": config.epochs,
        "learning_rate": config.learning_rate, "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": 1, "seed": config.seed, "data_seed": config.seed,
        "max_length": config.max_length, "lr_scheduler_type": "constant",
        "warmup_steps": 0, "weight_decay": 0.0, "report_to": "none", "disable_tqdm": True,
        "save_strategy": "no", "logging_strategy": "epoch", "bf16": use_bf16(config.precision),
        "fp16": False,
        "gradient_checkpointing": False, "dataloader_num_workers": 0,
        "use_cpu": not _cuda_available(),
    }


def _make_trainer(method: str, model: Any, tokenizer: Any, rows: Sequence[Example],
                  config: TrainConfig, peft_config: Any, scratch: str,
                  progress: StepProgress | None = None) -> Any:
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    batch = max(2, min(config.batch_size, len(rows)))
    pairs = [render(tokenizer, e) for e in rows]
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        desirable = sum(e.desirable for e in rows)
        weight = (len(rows) - desirable) / desirable * 1.1 if config.balance_weights else 1.0
        data = Dataset.from_list([{"prompt": p, "completion": c, "label": e.desirable}
                                  for (p, c), e in zip(pairs, rows, strict=True)])
        args = KTOConfig(**_common_args(config, scratch, batch), beta=config.beta,
                         desirable_weight=weight, undesirable_weight=1.0)
        trainer = KTOTrainer(model=model, args=args, train_dataset=data,
                             processing_class=tokenizer, peft_config=peft_config)
    else:
        from trl import SFTConfig, SFTTrainer

        data = Dataset.from_list([{"prompt": p, "completion": c} for p, c in pairs])
        args = SFTConfig(**_common_args(config, scratch, batch), completion_only_loss=True,
                         packing=False)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data,
                             processing_class=tokenizer, peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout
    if progress is not None:
        trainer.add_callback(trainer_callback(progress))
    return trainer


def _tidy_output(out: Path, base_model_name: str) -> None:
    """Keep only the adapter files; name the base model as replicas know it."""
    for path in out.iterdir():
        if path.name not in ADAPTER_FILES:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    config_path = out / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text("utf-8"))
    adapter_config["base_model_name_or_path"] = base_model_name
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")


def use_bf16(precision: str) -> bool:
    """Whether ``precision`` ("auto", "fp32" or "bf16") means bf16 autocast on this machine."""
    if precision != "auto":
        return precision == "bf16"
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
