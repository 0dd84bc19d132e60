"""The ``hf`` engine: transformers + peft on CPU, continuously batched, multi-LoRA.

One worker thread owns the model. It admits waiting requests between decode
steps (prefilled together, then merged into the running batch), decodes every
running row in one forward pass, and hands tokens back to the asyncio side.
Rows of one batch may use different adapters: peft routes each row through
its own LoRA weights (``adapter_names``). Adapter loads and unloads run on the
same thread between steps, so the model never changes under a forward pass.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.engines.adapter_table import AdapterTable
from serving.engines.base import Chunk, Engine, GenerationRequest
from serving.engines.lora_check import validate_adapter
from serving.errors import (
    AdapterLimitReached,
    EngineNotStarted,
    EngineOverloaded,
    EngineUnhealthy,
)

logger = logging.getLogger(__name__)
_BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
_IDLE_WAIT_S = 0.5


@dataclass(eq=False)
class _Sequence:
    request: GenerationRequest
    deliver: Callable[[Chunk | BaseException], None]
    peft_name: str
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None
    generator: Any = None
    text: Any = None
    cancelled: bool = False
    done: bool = False
    retired: bool = False


class HFEngine(Engine):
    """transformers + peft engine (see the module docstring)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self._model = None  # the base model, or the PeftModel wrapping it
        self._tokenizer = None
        self._module_shapes: dict[str, tuple[int, int]] = {}
        self._base_names: set[str] = set()
        self._eos_ids: set[int] = set()
        self._adapters: AdapterTable[str] = AdapterTable()  # version id -> peft adapter name
        self._peft_names = (f"v{n}" for n in itertools.count(1))
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._commands: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future]] = (
            collections.deque()
        )
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._fatal: BaseException | None = None
        self._active = 0  # requests accepted and not yet finished or abandoned
        self.stats = collections.Counter()  # steps, prefills, max_batch_rows, ...

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._load_model)
        self._thread = threading.Thread(target=self._run, name="hf-engine", daemon=True)
        self._thread.start()

    def _load_model(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        dtype = getattr(torch, self.config.dtype)
        self._tokenizer = AutoTokenizer.from_pretrained(self.config.model)
        model = AutoModelForCausalLM.from_pretrained(self.config.model, dtype=dtype)
        model.eval()
        self._model = model
        self._module_shapes = {
            name: (module.in_features, module.out_features)
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
        }
        self._base_names = {
            self.config.model,
            self.config.model_name,
            str(Path(self.config.model).resolve()),
            getattr(model.config, "_name_or_path", ""),
        } - {""}
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self._eos_ids = {e for e in [*eos, self._tokenizer.eos_token_id] if e is not None}
        logger.info("hf engine loaded %s (%s)", self.config.model, self.config.dtype)

    async def shutdown(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        self._fail_all(EngineNotStarted("the engine was shut down"))

    async def check_health(self) -> None:
        if self._thread is None:
            raise EngineNotStarted("the hf engine has not been started")
        if self._fatal is not None or not self._thread.is_alive():
            raise EngineUnhealthy(f"the hf engine's worker stopped: {self._fatal!r}")

    # -- tokenization -------------------------------------------------------------
    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        self._require_started()
        return list(
            self._tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )

    @property
    def max_context(self) -> int:
        self._require_started()
        return int(self._model.config.max_position_embeddings)

    # -- generation -------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        await self.check_health()
        self.check_prompt(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        seq = _Sequence(
            request=request,
            deliver=lambda item: loop.call_soon_threadsafe(queue.put_nowait, item),
            peft_name=self._adapters.claim(request.adapter) or _BASE,
        )
        with self._lock:
            # Up to max_batch_size requests decode; max_queue more may wait for a row.
            if self._active >= self.config.max_queue + self.config.max_batch_size:
                self._adapters.release(request.adapter)
                raise EngineOverloaded(
                    f"the engine queue is full ({self.config.max_queue} requests waiting)"
                )
            self._waiting.append(seq)
            self._active += 1
        self._wake.set()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not seq.done:
                seq.cancelled = True
                self._retire(seq)
                self._wake.set()

    # -- adapters -----------------------------------------------------------------
    async def load_adapter(self, version_id: str, path: str | Path) -> None:
        await self.check_health()
        if version_id in self._adapters:
            return
        await asyncio.to_thread(
            validate_adapter,
            version_id,
            path,
            module_shapes=self._module_shapes,
            max_rank=self.config.max_lora_rank,
            base_model_names=self._base_names,
        )
        await self._on_worker(lambda: self._load_on_worker(version_id, Path(path)))

    async def unload_adapter(self, version_id: str) -> None:
        await self.check_health()
        await self._on_worker(lambda: self._unload_on_worker(version_id))

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch row (beyond those being decoded)."""
        return max(0, self._active - self.config.max_batch_size)

    def loaded_adapters(self) -> list[str]:
        return self._adapters.versions()

    def _load_on_worker(self, version_id: str, path: Path) -> None:
        from peft import PeftModel

        if version_id in self._adapters:
            return
        if len(self._adapters) >= self.config.max_loras:
            raise AdapterLimitReached(
                f"the engine holds max_loras={self.config.max_loras} adapters "
                f"({self._adapters.versions()}); unload one before loading {version_id!r}"
            )
        name = next(self._peft_names)
        wrapped = isinstance(self._model, PeftModel)
        try:
            if wrapped:
                self._model.load_adapter(str(path), adapter_name=name)
            else:
                self._model = PeftModel.from_pretrained(self._model, str(path), adapter_name=name)
            self._model.eval()
        except Exception:
            self._drop_peft_adapter(name)
            raise
        self._adapters.add(version_id, name)
        logger.info("loaded adapter %s as %s from %s", version_id, name, path)

    def _unload_on_worker(self, version_id: str) -> None:
        name = self._adapters.detach(version_id)
        self._drop_peft_adapter(name)
        logger.info("unloaded adapter %s (%s)", version_id, name)

    def _drop_peft_adapter(self, name: str) -> None:
        from peft import PeftModel

        model = self._model
        if not isinstance(model, PeftModel) or name not in model.peft_config:
            return
        if set(model.peft_config) == {name}:
            # peft cannot delete its last adapter; unwrapping restores the base model.
            self._model = model.unload()
        else:
            model.delete_adapter(name)

    async def _on_worker(self, fn: Callable[[], Any]) -> Any:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._commands.append((fn, future))
        self._wake.set()
        return await asyncio.wrap_future(future)

    # -- the worker thread ---------------------------------------------------------
    def _run(self) -> None:
        import torch

        from serving.engines.hf_step import Stepper

        stepper = Stepper(self)
        try:
            with torch.inference_mode():
                while not self._stopping.is_set():
                    self._run_commands()
                    if not stepper.step():
                        self._wake.wait(_IDLE_WAIT_S)
                        self._wake.clear()
        except BaseException as exc:  # the worker must never die silently
            logger.exception("the hf engine's worker failed")
            self._fatal = exc
            stepper.fail_all(EngineUnhealthy(f"the engine failed: {exc!r}"))
            self._fail_all(EngineUnhealthy(f"the engine failed: {exc!r}"))

    def _run_commands(self) -> None:
        while True:
            with self._lock:
                if not self._commands:
                    return
                fn, future = self._commands.popleft()
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def _take_waiting(self, limit: int) -> list[_Sequence]:
        with self._lock:
            taken = []
            while self._waiting and len(taken) < limit:
                taken.append(self._waiting.popleft())
            return taken

    def _fail_all(self, error: BaseException) -> None:
        for seq in self._take_waiting(len(self._waiting)):
            self._finish(seq, error)

    def _finish(self, seq: _Sequence, item: Chunk | BaseException) -> None:
        if not seq.done:
            seq.done = True
            self._retire(seq)
            seq.deliver(item)

    def _retire(self, seq: _Sequence) -> None:
        """Give back the sequence's capacity and adapter claim, exactly once."""
        with self._lock:
            if seq.retired:
                return
            seq.retired = True
            self._active -= 1
        self._adapters.release(seq.request.adapter)

    def _require_started(self) -> None:
        if self._model is None:
            raise EngineNotStarted("the hf engine has not been started")
