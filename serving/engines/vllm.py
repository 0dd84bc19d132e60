"""The ``vllm`` engine: vLLM's async engine behind the engine protocol, multi-LoRA.

vLLM schedules, batches and samples; this module adds what the protocol
promises on top of it, the same way the ``hf`` engine does:

- **Prompts are token ids** made by :meth:`encode_chat` with the model's HF
  tokenizer, exactly as the ``hf`` engine makes them, so both engines see the
  same prompt.
- **Text is made here, not by vLLM.** vLLM only returns token ids
  (``detokenize=False``); :class:`~serving.engines.textstream.TextStream`
  turns them into safe deltas and applies stop strings, so streaming, stop
  cuts and UTF-8 hold-back behave byte for byte as in the ``hf`` engine. When
  a stop string matches, the request is aborted in vLLM.
- **Log-probs are raw** (vLLM's ``logprobs_mode="raw_logprobs"``): the model's
  log-softmax before temperature or top-p, as the ``hf`` engine reports them.
- **Adapters**: each version gets its own LoRA name (the version id) and a
  fresh int id from a process-wide counter, never reused. The resident set is
  bounded by ``max_cpu_loras`` (vLLM's host-side adapter cache, which must
  never evict one of ours behind our back); ``max_loras`` bounds how many
  distinct adapters one decode step batches (the device's slots), and vLLM's
  scheduler holds back requests beyond it. Every adapter is checked by
  :class:`~serving.engines.model.ModelEngine` (shared with ``hf``) before vLLM
  sees it.
- **Scoring** (:meth:`score`) is a one-token generation over the prompt and
  all but the last completion token, asking for ``prompt_logprobs=0`` (the log-
  probability of each actual prompt token); the last completion token is the
  one token generated, forced with ``allowed_token_ids``, and its raw log-prob
  comes with it. So prompt plus completion may fill the whole context, as in
  the ``hf`` engine (vLLM refuses a prompt that leaves no room for one token).
- **Closing the iterator early aborts the request** in vLLM (its slot and KV
  blocks are freed) before the adapter claim is released, so an unload that
  follows never races a running request.

This is the only module that imports vllm; it does so inside methods, so
importing it (or :mod:`serving`) stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from serving.engines.base import Chunk, GenerationRequest, SamplingParams
from serving.engines.model import ModelEngine, read_model_facts
from serving.engines.vllm_setup import cpu_lora_slots, engine_kwargs
from serving.engines.vllm_stream import DeltaDecoder
from serving.errors import AdapterValidationError, EngineNotStarted, EngineUnhealthy

logger = logging.getLogger(__name__)

#: LoRA int ids are unique across every engine of the process and never reused
#: (vLLM keys its adapter caches by this id; see vllm/lora/request.py).
_LORA_IDS = itertools.count(1)
_REQUEST_IDS = itertools.count(1)
#: Workaround: even with enforce_eager, vLLM's sampler torch.compiles its log-prob
#: rank kernel (vllm/v1/sample/ops/logprobs.py) on the first request that asks
#: for log-probs, stalling it for 3-30 s on a small CPU machine (reported as
#: torch-spyre/sendnn-inference#550). Eager mode gives the same ranks. Drop this
#: when vLLM stops compiling sampler ops under enforce_eager. An operator's own
#: value wins.
_CPU_CHILD_ENV = {"TORCH_COMPILE_DISABLE": "1"}


class VLLMEngine(ModelEngine):
    """vLLM ``AsyncLLM`` engine (see the module docstring)."""

    kind = "vllm"
    capacity_setting = "max_cpu_loras"

    def __init__(self, config) -> None:
        super().__init__(config)
        self._llm: Any = None  # vllm.v1.engine.async_llm.AsyncLLM once started

    @property
    def adapter_capacity(self) -> int:
        return cpu_lora_slots(self.config)

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        from vllm import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        self._facts = await asyncio.to_thread(read_model_facts, self.config)
        on_cpu = current_platform.is_cpu()
        args = AsyncEngineArgs(**engine_kwargs(self.config, self._facts, on_cpu=on_cpu,
                                               known=_engine_arg_names(AsyncEngineArgs)))
        child_env = dict(_CPU_CHILD_ENV) if on_cpu else {}
        if on_cpu and self.config.threads:
            # vLLM's CPU worker would pin its OpenMP threads to the same first cores
            # in every replica on a host (vllm/utils/ompmultiprocessing.py), so two
            # replicas would share one core. Unpinned, with the thread count given,
            # the OS spreads them. loraloop never reads these variables itself.
            child_env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
            child_env["OMP_NUM_THREADS"] = str(self.config.threads)
        # Created on the event loop: AsyncLLM binds its output handler to the
        # running loop. The engine core starts in child processes (~20-40 s on
        # 2 cores), which inherit the environment as it is during this call.
        with _child_environment(child_env):
            self._llm = AsyncLLM.from_engine_args(args)
        logger.info(
            "vllm engine started for %s (%s, max_num_seqs=%d, max_loras=%d, max_cpu_loras=%d)",
            self.config.model,
            self.config.dtype,
            self.config.max_batch_size,
            self.config.max_loras,
            args.max_cpu_loras,
        )

    async def shutdown(self) -> None:
        llm, self._llm = self._llm, None
        self._facts = None
        if llm is not None:
            # Blocks while vLLM stops its processes (up to ~5 s before it kills them).
            llm.shutdown()
        self._adapters.clear()

    async def check_health(self) -> None:
        if self._llm is None:
            raise EngineNotStarted("the vllm engine has not been started (or was shut down)")
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise EngineUnhealthy(f"the vllm engine cannot serve: {exc!r}") from exc

    # -- generation -------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        from vllm.inputs import tokens_input

        await self.check_health()
        self.check_prompt(request)
        ticket = self._admission.enter(request.adapter)
        # The caller's id need not be unique (n choices, retries); vLLM's must be.
        vllm_id = f"{request.request_id}-{next(_REQUEST_IDS)}"
        stream, decoder = None, None
        try:
            facts = self.facts
            decoder = DeltaDecoder(request, facts.tokenizer, facts.eos_ids, facts.token_text)
            stream = self._llm.generate(
                # Already rendered: vLLM neither re-tokenizes nor applies a template.
                tokens_input(list(request.prompt_token_ids)),
                self._vllm_params(request.sampling, len(request.prompt_token_ids)),
                vllm_id,
                lora_request=ticket.handle,
            )
            async for output in stream:
                chunk = decoder.chunk(output.outputs[0])
                yield chunk
                if chunk.finish_reason is not None:
                    return
            yield decoder.finish("abort")  # vLLM ended the stream without a finish reason
        except Exception as exc:
            if _is_engine_error(exc):
                raise EngineUnhealthy(f"the vllm engine failed: {exc!r}") from exc
            raise
        finally:
            # Closing vLLM's stream aborts the request there (AsyncLLM.generate
            # catches GeneratorExit); abort explicitly too in case it never started.
            # Only then is the adapter released, so an unload cannot overtake the abort.
            if stream is not None:
                await stream.aclose()
            if decoder is None or not decoder.engine_finished:
                await self._abort(vllm_id)
            ticket.leave()

    def _vllm_params(self, sampling: SamplingParams, prompt_len: int):
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.sampling_params import RequestOutputKind

        facts = self.facts
        return VLLMSamplingParams(
            max_tokens=max(1, min(sampling.max_tokens, facts.max_context - prompt_len)),
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            # Stop strings are applied by TextStream (see the module docstring).
            stop_token_ids=sorted(facts.eos_ids),
            logprobs=sampling.top_logprobs if sampling.logprobs else None,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )

    async def _score(self, prompt: list[int], completion: list[int], lora: Any) -> list[float]:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import tokens_input
        from vllm.sampling_params import RequestOutputKind

        head, last = completion[:-1], completion[-1]
        params = VLLMSamplingParams(
            max_tokens=1,
            temperature=0.0,
            # Raw log-probs (logprobs_mode) are taken before the allowed-token mask.
            allowed_token_ids=[last],
            ignore_eos=True,
            logprobs=0,
            prompt_logprobs=0 if head else None,
            detokenize=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        vllm_id = f"score-{next(_REQUEST_IDS)}"
        final, stream = None, None
        try:
            stream = self._llm.generate(
                tokens_input(prompt + head), params, vllm_id, lora_request=lora
            )
            async for output in stream:
                final = output
        except Exception as exc:
            if _is_engine_error(exc):
                raise EngineUnhealthy(f"the vllm engine failed: {exc!r}") from exc
            raise
        finally:
            if stream is not None:
                await stream.aclose()
            if final is None or not final.finished:
                await self._abort(vllm_id)
        if final is None or not final.outputs or not final.outputs[0].logprobs:
            raise EngineUnhealthy(f"vLLM returned no log-probs for scoring request {vllm_id}")
        # prompt_logprobs[i] is the log-prob of input token i given those before it.
        entries = final.prompt_logprobs[len(prompt) :] if head else []
        scores = [float(entry[token].logprob) for entry, token in zip(entries, head, strict=True)]
        scores.append(float(final.outputs[0].logprobs[0][last].logprob))
        return scores

    async def _abort(self, vllm_id: str) -> None:
        llm = self._llm
        if llm is None:
            return
        try:
            await llm.abort(vllm_id)
        except Exception:  # the engine may be shutting down; nothing is left to free
            logger.warning("could not abort vllm request %s", vllm_id, exc_info=True)

    # -- adapters -----------------------------------------------------------------
    async def _add_adapter(self, version_id: str, path: Path) -> Any:
        from vllm.lora.request import LoRARequest

        if self._llm is None:
            raise EngineNotStarted("the vllm engine has not been started (or was shut down)")
        lora = LoRARequest(
            lora_name=version_id, lora_int_id=next(_LORA_IDS), lora_path=str(path.resolve())
        )
        try:
            added = await self._llm.add_lora(lora)
        except Exception as exc:
            await self._forget_lora(lora.lora_int_id)
            if _is_engine_error(exc):
                raise EngineUnhealthy(f"the vllm engine failed: {exc!r}") from exc
            raise AdapterValidationError(
                version_id, str(path), [f"vLLM could not load it: {exc}"]
            ) from exc
        if not added:
            await self._forget_lora(lora.lora_int_id)
            raise AdapterValidationError(version_id, str(path), ["vLLM refused to load it"])
        logger.info("loaded adapter %s as lora id %d from %s", version_id, lora.lora_int_id, path)
        return lora

    async def _remove_adapter(self, version_id: str, lora: Any) -> None:
        await self._forget_lora(lora.lora_int_id)
        logger.info("unloaded adapter %s (lora id %d)", version_id, lora.lora_int_id)

    def lora_ids(self) -> dict[str, int]:
        """The vLLM LoRA int id of each resident version (diagnostics and tests)."""
        return {version: lora.lora_int_id for version, lora in self._adapters.handles().items()}

    async def vllm_lora_ids(self) -> set[int]:
        """The LoRA int ids vLLM itself holds (should equal ``lora_ids().values()``)."""
        return set(await self._llm.list_loras())

    @property
    def unfinished_requests(self) -> int:
        """Requests vLLM still holds, running or waiting (0 once every stream has ended)."""
        return self._llm.get_num_unfinished_requests() if self._llm is not None else 0

    async def _forget_lora(self, lora_id: int) -> None:
        try:
            await self._llm.remove_lora(lora_id)
        except Exception:  # removing what vLLM never held is harmless
            logger.debug("vllm could not remove lora id %d", lora_id, exc_info=True)


@contextlib.contextmanager
def _child_environment(values: dict[str, str]):
    """Set variables for the child processes started inside the block, then restore them.

    A variable the operator already set is left as it is.
    """
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update({k: v for k, v in values.items() if saved[k] is None})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


def _is_engine_error(exc: BaseException) -> bool:
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    return isinstance(exc, EngineDeadError | EngineGenerateError)


def _engine_arg_names(args_cls) -> set[str]:
    """The keyword arguments ``vllm.AsyncEngineArgs`` takes (a dataclass)."""
    import dataclasses

    return {f.name for f in dataclasses.fields(args_cls)}
