"""The engine protocol every inference engine implements (``hf``, ``vllm``).

A replica receives an engine *class* and an :class:`EngineConfig`; it never
knows which implementation it drives. Engines see adapter *version ids* only:
a new adapter version is a new engine-side name, never new weights under an
old name.

This module must stay light: no torch, transformers or vllm imports, so that
``import serving`` is cheap and never pulls in an engine.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

if TYPE_CHECKING:
    from serving.engines.lora_check import AdapterSpec

FinishReason = Literal["stop", "length", "abort"]


class EngineConfig(BaseModel):
    """What an engine needs to start: the base model and its limits."""

    model: str = Field(description="Local directory (or hub id) of the base model's weights.")
    model_name: str = Field(
        default="",
        description="The name the operator gave the base model (e.g. `builtin:tiny`); "
        "adapters trained for this name or for `model` are accepted.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_lora_rank: int = Field(default=16, ge=1, le=512)
    max_loras: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Distinct adapters one decode step may use. hf: every resident adapter "
        "batches with every other, so this is also how many are resident at once. vLLM: the "
        "adapter slots on the device; resident adapters beyond it take turns.",
    )
    max_cpu_loras: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="vLLM: adapters resident in host memory at once (>= max_loras; vLLM moves "
        "them into its max_loras device slots as requests need them). hf: unused, it has one "
        "tier (max_loras).",
    )
    max_batch_size: int = Field(
        default=16, ge=1, le=1024, description="Sequences per decode step."
    )
    max_queue: int = Field(default=256, ge=1, description="Waiting requests before refusing.")
    threads: int = Field(default=0, ge=0, description="CPU threads; 0 keeps the default.")
    vllm_args: dict[str, Any] = Field(
        default_factory=dict, description="vLLM: more `vllm.AsyncEngineArgs` (e.g. "
        '{"fully_sharded_loras": true}), over loraloop\'s own; an unknown name is refused '
        "at start. hf: unused.")

    @field_validator("max_cpu_loras")
    @classmethod
    def _cpu_loras_hold_device_loras(cls, value: int, info: ValidationInfo) -> int:
        max_loras = info.data.get("max_loras")
        if max_loras is not None and value < max_loras:
            raise ValueError(
                f"max_cpu_loras ({value}) must be >= max_loras ({max_loras}): "
                "every adapter on the device also lives in host memory"
            )
        return value


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings (validated at the HTTP edge)."""

    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one generated token, plus the most likely alternatives."""

    token_id: int
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class Chunk:
    """One step of a generation: the new tokens and text since the last chunk.

    ``text`` is safe to show: it never ends inside a UTF-8 character or inside
    a possible stop sequence. The last chunk has ``finish_reason`` set.
    """

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class GenerationRequest:
    """A tokenized prompt to complete, on the base model or one adapter version."""

    request_id: str
    prompt_token_ids: Sequence[int]
    sampling: SamplingParams = SamplingParams()
    adapter: str | None = None  # an adapter version id, or None for the base model


class Engine(abc.ABC):
    """An inference engine with LoRA adapters addressed by version id."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the base model; returns when the engine can generate."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop generating and release the model."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Stream the completion of ``request``.

        Raises ``AdapterNotLoaded`` if its adapter is not resident and
        ``EngineOverloaded`` if the queue is full. Closing the iterator early
        aborts the request and frees its batch slot.
        """

    @abc.abstractmethod
    async def check_adapter(self, version_id: str, path: str | Path) -> AdapterSpec:
        """Check that the adapter at ``path`` fits this engine, changing nothing.

        Safetensors only, rank, target modules, base model and tensor shapes are
        checked and every problem is reported in one ``AdapterValidationError``.
        A caller that must make room for an adapter checks it first, so that a
        bad adapter never costs a good one its place.
        """

    @abc.abstractmethod
    async def load_adapter(self, version_id: str, path: str | Path) -> None:
        """Check (as :meth:`check_adapter`), then load the adapter at ``path`` as ``version_id``.

        A failed load leaves the engine as it was; ``AdapterLimitReached`` when
        :attr:`adapter_capacity` adapters are resident. Loading a version that
        is already resident is a no-op.
        """

    @abc.abstractmethod
    async def unload_adapter(self, version_id: str) -> None:
        """Remove an adapter; raises ``AdapterBusy`` while requests still use it."""

    @abc.abstractmethod
    def loaded_adapters(self) -> list[str]:
        """Version ids of the resident adapters."""

    @property
    @abc.abstractmethod
    def adapter_capacity(self) -> int:
        """How many adapters may be resident at once (hf: max_loras; vLLM: max_cpu_loras)."""

    @abc.abstractmethod
    async def check_health(self) -> None:
        """Raise ``EngineUnhealthy`` if the engine cannot serve."""

    def check_prompt(self, request: GenerationRequest) -> None:
        """Raise ``PromptTooLong`` unless the prompt leaves room for at least one token."""
        from serving.errors import PromptTooLong

        prompt_len = len(request.prompt_token_ids)
        if prompt_len == 0:
            raise PromptTooLong("the prompt is empty: it needs at least one token")
        if prompt_len >= self.max_context:
            raise PromptTooLong(
                f"the prompt has {prompt_len} tokens but the model's context is "
                f"{self.max_context}: shorten it to at most {self.max_context - 1} tokens"
            )

    def check_score(
        self, prompt_token_ids: Sequence[int], completion_token_ids: Sequence[int]
    ) -> None:
        """Raise ``PromptTooLong`` unless the prompt has a token and prompt plus completion
        fit in the model's context (what :meth:`score` needs)."""
        from serving.errors import PromptTooLong

        prompt_len, completion_len = len(prompt_token_ids), len(completion_token_ids)
        if prompt_len == 0:
            raise PromptTooLong("the prompt is empty: scoring needs at least one prompt token")
        if prompt_len + completion_len > self.max_context:
            raise PromptTooLong(
                f"the prompt ({prompt_len} tokens) and completion ({completion_len} tokens) "
                f"to score are {prompt_len + completion_len} tokens but the model's context "
                f"is {self.max_context}: score at most {self.max_context} tokens"
            )

    # -- scoring (both engines: serving.engines.model.ModelEngine) --------------
    @abc.abstractmethod
    async def score(
        self,
        prompt_token_ids: Sequence[int],
        completion_token_ids: Sequence[int],
        adapter: str | None,
    ) -> list[float]:
        """The log-probability of each completion token given the prompt and the
        completion tokens before it, under ``adapter`` (a resident version id) or the
        base model (None). One value per completion token; ``[]`` for no completion.

        Log-probabilities are raw: the model's log-softmax, no temperature or top-p.
        ``sum(score(adapter)) - sum(score(None))`` is the adapter's implicit reward
        (the DPO/KTO log-ratio). Raises ``AdapterNotLoaded`` if the adapter is not
        resident, ``PromptTooLong`` if the prompt is empty or prompt plus completion
        exceed :attr:`max_context`, and ``EngineOverloaded`` if the queue is full.
        """

    # -- tokenization (both engines: serving.engines.model.ModelEngine) ---------
    @abc.abstractmethod
    def encode_chat(
        self, messages: Sequence[dict[str, str]], assistant_prefix: str = ""
    ) -> list[int]:
        """Render the chat template (with the generation prompt) to text, append
        ``assistant_prefix`` (what the assistant turn already says, e.g. a thinking
        block that ends in "Wait"), and tokenize the whole text once.

        Never concatenate token ids to continue a turn: the ids of a text are not
        the ids of its parts. With an empty prefix the ids are the template's own.
        """

    @abc.abstractmethod
    def encode_text(self, text: str) -> list[int]:
        """Tokenize plain text, adding no special tokens (e.g. a completion to score)."""

    @property
    @abc.abstractmethod
    def max_context(self) -> int:
        """Tokens the model can attend to: prompt plus completion."""
