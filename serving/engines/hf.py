"""The ``hf`` engine: transformers on CPU, continuously batched, multi-LoRA.

One worker thread owns the model. It admits waiting requests between decode
steps (prefilled together, then merged into the running batch), decodes every
running row in one forward pass, and hands tokens back to the asyncio side.
Rows of one batch may use different adapters: the adapter bank
(:mod:`serving.engines.hf_lora`) applies each adapter to its rows in one
product and keeps base rows off the LoRA path. Adapter loads and unloads, and
scoring passes, run on the same thread between steps, so the model never
changes under a forward pass.

Requests submitted in one event-loop iteration (the n choices of one chat
request) reach the worker together, so that one step admits them all and the
rows with the same prompt and adapter share one prefill (see
:meth:`~serving.engines.hf_step.Stepper._admit`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from serving.engines.base import Chunk, GenerationRequest
from serving.engines.hf_batch import score_tokens
from serving.engines.hf_lora import LoraBank
from serving.engines.hf_step import Row, Stepper
from serving.engines.model import ModelEngine, read_model_facts
from serving.errors import EngineNotStarted, EngineUnhealthy

logger = logging.getLogger(__name__)
_IDLE_WAIT_S = 0.5


class HFEngine(ModelEngine):
    """transformers engine with batched multi-LoRA (see the module docstring).

    ``max_loras`` bounds the resident adapters: any mix of them batches in one
    step, so there is no second tier and ``max_cpu_loras`` is not used.
    """

    kind = "hf"

    def __init__(self, config) -> None:
        super().__init__(config)
        self._model = None
        self._lora: LoraBank | None = None  # the model's resident adapters
        self._adapter_names = (f"v{n}" for n in itertools.count(1))
        self._waiting: collections.deque[Row] = collections.deque()
        self._pending: list[Row] = []  # submitted this event-loop iteration (see _submit)
        self._commands: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future]] = (
            collections.deque()
        )
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._fatal: BaseException | None = None
        self._worker_gone: BaseException | None = None  # set when the worker has left
        # steps, prefills, prefill_rows, shared_prefill_rows, max_batch_rows, scores
        self.stats = collections.Counter()

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._load_model)
        self._thread = threading.Thread(target=self._run, name="hf-engine", daemon=True)
        self._thread.start()

    def _load_model(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        dtype = getattr(torch, self.config.dtype)
        model = AutoModelForCausalLM.from_pretrained(self.config.model, dtype=dtype)
        model.eval()
        self._model = model
        self._facts = read_model_facts(self.config, model)  # before any module is wrapped
        self._lora = LoraBank(model)
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

    # -- generation -------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        await self.check_health()
        self.check_prompt(request)
        ticket = self._admission.enter(request.adapter)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        row = Row(
            request=request,
            deliver=lambda item: loop.call_soon_threadsafe(queue.put_nowait, item),
            ticket=ticket,
            adapter=ticket.handle,
        )
        self._submit(row)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not row.done:
                row.cancelled = True
                ticket.leave()
                self._wake.set()

    def _submit(self, row: Row) -> None:
        """Queue ``row`` for the worker at the end of this event-loop iteration.

        The replica starts the n choices of a request in one iteration; handing
        them over together (one lock, one wake-up) keeps the worker from taking
        the first before the others arrive, so they share one prefill.
        """
        with self._lock:
            self._pending.append(row)
            first = len(self._pending) == 1
        if first:
            asyncio.get_running_loop().call_soon(self._flush_pending)

    def _flush_pending(self) -> None:
        with self._lock:
            self._waiting.extend(self._pending)
            self._pending.clear()
        if self._stopping.is_set():  # no worker will take them
            self._fail_all(EngineNotStarted("the engine was shut down"))
        self._wake.set()

    # -- scoring (one forward pass on the worker, between steps) -------------------
    async def _score(self, prompt: list[int], completion: list[int], name: str | None):
        self.stats["scores"] += 1

        def score():
            self._lora.route([name])
            return score_tokens(self._model, prompt, completion)

        return await self._on_worker(score)

    # -- adapters (loaded and dropped on the worker, between steps) ----------------
    async def _add_adapter(self, version_id: str, path: Path) -> str:
        name = next(self._adapter_names)
        await self._on_worker(lambda: self._lora.add(name, path))
        logger.info("loaded adapter %s as %s from %s", version_id, name, path)
        return name

    async def _remove_adapter(self, version_id: str, name: str) -> None:
        await self._on_worker(lambda: self._lora.remove(name))
        logger.info("unloaded adapter %s (%s)", version_id, name)

    async def _on_worker(self, fn: Callable[[], Any]) -> Any:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            gone = self._worker_gone
            if gone is not None:
                raise type(gone)(*gone.args)
            self._commands.append((fn, future))
        self._wake.set()
        return await asyncio.wrap_future(future)

    # -- the worker thread ---------------------------------------------------------
    def _run(self) -> None:
        import torch

        stepper = Stepper(
            model=self._model,
            lora=self._lora,
            facts=self.facts,
            max_batch_size=self.config.max_batch_size,
            take_waiting=self._take_waiting,
            stats=self.stats,
        )
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
        finally:
            # A command queued now would wait forever: refuse new ones, fail queued ones.
            with self._lock:
                self._worker_gone = (
                    EngineUnhealthy(f"the engine failed: {self._fatal!r}")
                    if self._fatal is not None
                    else EngineNotStarted("the engine was shut down")
                )
                left, self._commands = list(self._commands), collections.deque()
            for _, future in left:
                future.set_exception(type(self._worker_gone)(*self._worker_gone.args))

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

    def _take_waiting(self, limit: int) -> list[Row]:
        with self._lock:
            taken = []
            while self._waiting and len(taken) < limit:
                taken.append(self._waiting.popleft())
            return taken

    def _fail_all(self, error: BaseException) -> None:
        for row in self._take_waiting(len(self._waiting)):
            row.finish(error)
