"""What both local engines share: the model's facts, adapter checks, prompts and admission.

``hf`` and ``vllm`` both serve a Hugging Face-format model from this host. They
learn the same facts about it (:class:`ModelFacts`), render chat prompts with
the same tokenizer, refuse adapters for the same reasons
(:func:`~serving.engines.lora_check.validate_adapter`), and bound resident
adapters and waiting requests the same way. :class:`ModelEngine` holds all of
that once; an engine adds how it starts, generates, and moves adapter weights
in and out (:meth:`ModelEngine._add_adapter`, :meth:`ModelEngine._remove_adapter`).

No torch, transformers or vllm import at module level: :func:`read_model_facts`
imports what it needs when it runs.
"""

from __future__ import annotations

import abc
import asyncio
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.engines.adapter_table import AdapterTable
from serving.engines.base import Engine, EngineConfig
from serving.engines.lora_check import AdapterSpec, validate_adapter
from serving.errors import AdapterLimitReached, EngineNotStarted, EngineOverloaded

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelFacts:
    """The base model as an engine's Python side needs it (tokenizer, limits, shapes)."""

    tokenizer: Any
    max_context: int
    eos_ids: frozenset[int]
    module_shapes: Mapping[str, tuple[int, int]]
    base_names: frozenset[str]
    kv_bytes_per_token: int
    _token_texts: dict[int, str] = field(default_factory=dict, compare=False, repr=False)

    def encode_chat(
        self, messages: Sequence[dict[str, str]], assistant_prefix: str = ""
    ) -> list[int]:
        """Render the chat template (with the generation prompt) to text, append
        ``assistant_prefix``, and tokenize the whole text once.

        The text is tokenized as one piece, never as the template's ids plus the
        prefix's ids: a continuation ("...Wait") must be tokenized as the model
        would see it had it written the prefix itself. With an empty prefix the
        ids are the template's own (``apply_chat_template(tokenize=True)``).
        """
        text = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
        return self.encode_text(text + assistant_prefix)

    def encode_text(self, text: str) -> list[int]:
        """Tokenize ``text`` as it is: no special tokens are added (the chat
        template writes its own)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_text(self, token_id: int) -> str:
        """One token decoded alone: how both engines name log-prob tokens."""
        text = self._token_texts.get(token_id)
        if text is None:
            text = self._token_texts[token_id] = self.tokenizer.decode([token_id])
        return text


def read_model_facts(config: EngineConfig, model: Any = None) -> ModelFacts:
    """Tokenizer, context, end tokens, Linear shapes and names of ``config.model``.

    ``model`` is the loaded model when the caller has one (``hf``); without it
    the shapes come from the model's config on the ``meta`` device, which
    allocates no weights (``vllm`` loads the weights itself).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(config.model)
    hf_config = model.config if model is not None else AutoConfig.from_pretrained(config.model)
    if model is None:
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
    names = {
        config.model,
        config.model_name,
        str(Path(config.model).resolve()),
        getattr(hf_config, "_name_or_path", ""),
    }
    text_config = hf_config.get_text_config()
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    per_token = 2 * text_config.num_hidden_layers * kv_heads * head_dim * _DTYPE_BYTES[config.dtype]
    return ModelFacts(
        tokenizer=tokenizer,
        max_context=int(text_config.max_position_embeddings),
        eos_ids=frozenset(e for e in [*eos, tokenizer.eos_token_id] if e is not None),
        module_shapes=module_shapes,
        base_names=frozenset(names - {""}),
        kv_bytes_per_token=per_token,
    )


class Ticket:
    """One admitted request: its place in the engine and its claim on its adapter."""

    def __init__(self, admission: Admission, adapter: str | None, handle: Any) -> None:
        self.adapter = adapter
        self.handle = handle  # the engine's handle of the adapter, None for the base model
        self._admission = admission
        self.left = False

    def leave(self) -> None:
        """Give back the place and the adapter claim; only the first call counts. Thread safe."""
        self._admission.leave(self)


class Admission:
    """Requests accepted and not yet finished: ``max_batch_size`` decode, ``max_queue`` wait."""

    def __init__(self, adapters: AdapterTable, config: EngineConfig) -> None:
        self._adapters = adapters
        self._max_queue = config.max_queue
        self._max_batch_size = config.max_batch_size
        self._active = 0
        self._lock = threading.Lock()

    def enter(self, adapter: str | None) -> Ticket:
        """Admit a request for ``adapter`` (None: the base model), or refuse it.

        Raises ``AdapterNotLoaded`` if the adapter is not resident and
        ``EngineOverloaded`` if the queue is full. The caller ends the ticket
        with :meth:`Ticket.leave` however the request ends.
        """
        handle = self._adapters.claim(adapter)
        with self._lock:
            full = self._active >= self._max_queue + self._max_batch_size
            if not full:
                self._active += 1
        if full:
            self._adapters.release(adapter)
            raise EngineOverloaded(f"the engine queue is full ({self._max_queue} requests waiting)")
        return Ticket(self, adapter, handle)

    def leave(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.left:
                return
            ticket.left = True
            self._active -= 1
        self._adapters.release(ticket.adapter)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch row (beyond those being decoded)."""
        return max(0, self._active - self._max_batch_size)


class ModelEngine(Engine):
    """An engine over a local HF-format model: everything but generation and weight moves.

    A subclass sets ``_facts`` in :meth:`start` (``None`` until then and after
    shutdown) and implements :meth:`_add_adapter` and :meth:`_remove_adapter`.
    """

    #: The engine's name in messages.
    kind = "local"
    #: The setting that bounds resident adapters (named when a load is refused).
    capacity_setting = "max_loras"

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._facts: ModelFacts | None = None
        self._adapters: AdapterTable[Any] = AdapterTable()  # version id -> engine handle
        self._admission = Admission(self._adapters, config)
        self._adapter_lock = asyncio.Lock()  # one load or unload at a time

    @property
    def facts(self) -> ModelFacts:
        """The model's facts; raises ``EngineNotStarted`` before start and after shutdown."""
        if self._facts is None:
            raise EngineNotStarted(
                f"the {self.kind} engine has not been started (or was shut down)"
            )
        return self._facts

    def encode_chat(
        self, messages: Sequence[dict[str, str]], assistant_prefix: str = ""
    ) -> list[int]:
        return self.facts.encode_chat(messages, assistant_prefix)

    def encode_text(self, text: str) -> list[int]:
        return self.facts.encode_text(text)

    async def score(
        self,
        prompt_token_ids: Sequence[int],
        completion_token_ids: Sequence[int],
        adapter: str | None,
    ) -> list[float]:
        await self.check_health()
        prompt, completion = list(prompt_token_ids), list(completion_token_ids)
        self.check_score(prompt, completion)
        # Admitted like a request: it counts against the queue bound, and its claim
        # keeps the adapter resident until the scores are back.
        ticket = self._admission.enter(adapter)
        try:
            if not completion:
                return []
            return await self._score(prompt, completion, ticket.handle)
        finally:
            ticket.leave()

    @property
    def max_context(self) -> int:
        return self.facts.max_context

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch row (beyond those being decoded)."""
        return self._admission.queue_depth

    @property
    def adapter_capacity(self) -> int:
        return getattr(self.config, self.capacity_setting)

    def loaded_adapters(self) -> list[str]:
        return self._adapters.versions()

    async def check_adapter(self, version_id: str, path: str | Path) -> AdapterSpec:
        facts = self.facts
        return await asyncio.to_thread(
            validate_adapter,
            version_id,
            path,
            module_shapes=facts.module_shapes,
            max_rank=self.config.max_lora_rank,
            base_model_names=facts.base_names,
        )

    async def load_adapter(self, version_id: str, path: str | Path) -> None:
        await self.check_health()
        if version_id in self._adapters:
            return
        await self.check_adapter(version_id, path)
        async with self._adapter_lock:
            if version_id in self._adapters:  # a concurrent load of the same version won
                return
            capacity = self.adapter_capacity
            if len(self._adapters) >= capacity:
                raise AdapterLimitReached(
                    f"the engine holds {self.capacity_setting}={capacity} adapters "
                    f"({self._adapters.versions()}); unload one before loading {version_id!r}"
                )
            handle = await self._add_adapter(version_id, Path(path))
            self._adapters.add(version_id, handle)

    async def unload_adapter(self, version_id: str) -> None:
        await self.check_health()
        async with self._adapter_lock:
            # Forget it first: no request can claim it while the engine frees it.
            handle = self._adapters.detach(version_id)
            await self._remove_adapter(version_id, handle)

    @abc.abstractmethod
    async def _add_adapter(self, version_id: str, path: Path) -> Any:
        """Load checked adapter weights; return the engine's handle for them.

        If it raises, the engine must be as it was before the call.
        """

    @abc.abstractmethod
    async def _remove_adapter(self, version_id: str, handle: Any) -> None:
        """Free an adapter no request uses any more (it is already out of the table)."""

    @abc.abstractmethod
    async def _score(self, prompt: list[int], completion: list[int], handle: Any) -> list[float]:
        """The log-probability of each completion token (``completion`` is not empty),
        under the adapter with engine handle ``handle`` (None: the base model)."""
