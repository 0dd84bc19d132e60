"""The engine as strategies see it: samples of one request's prompt on its adapter.

A :class:`Sampler` is made per request by the replica, with the adapter version
the request leased, so every sample, critique and score of one answer comes
from the same version. It counts every token it generates or scores
(:attr:`Sampler.tokens`): the compute an answer cost.

The ``n`` samples of one call are submitted together with one prompt, so the
engine prefills it once (hf shares the prefill of identical prompts admitted in
one step; vLLM's prefix cache shares its blocks). A caller may stop the call
early from ``on_finish`` (a settled vote): the samples still running are
aborted and freed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from serving.engines.base import Engine, GenerationRequest, SamplingParams
from serving.errors import PromptTooLong

#: Temperature of samples meant to differ when the request asked for greedy decoding.
SAMPLE_TEMPERATURE = 0.7


@dataclass
class Sample:
    """One finished (or stopped) completion."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish: str | None = None
    logprobs: list[float] = field(default_factory=list)

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


class Sampler:
    """Generates and scores completions of one request's messages on one adapter."""

    def __init__(self, engine: Engine, adapter: str | None, request_id: str,
                 sampling: SamplingParams, progress: Callable[[], None] = lambda: None) -> None:
        """``progress`` is called for every step the engine produces (the replica's
        hung-engine clock)."""
        self.engine = engine
        self.progress = progress
        self.adapter = adapter
        self.request_id = request_id
        self.sampling = sampling
        self.tokens = 0
        self._calls = 0

    def sample_params(self, index: int, **overrides) -> SamplingParams:
        """The request's sampling for sample ``index``: distinct seeds, never all greedy.

        A greedy request keeps its greedy answer as sample 0 (the answer ``single`` would
        give; a vote's tie goes to the earliest index, so samples that all disagree
        never replace it with a random draw); the others sample at
        ``SAMPLE_TEMPERATURE``."""
        params = replace(self.sampling, logprobs=True, top_logprobs=0, **overrides)
        if params.greedy and "temperature" not in overrides and index > 0:
            params = replace(params, temperature=SAMPLE_TEMPERATURE)
        if params.seed is not None:
            params = replace(params, seed=params.seed + index)
        return params

    async def run(
        self,
        messages: Sequence[dict[str, str]],
        *,
        n: int = 1,
        first: int = 0,
        prefix: str = "",
        on_finish: Callable[[int, Sample], bool] | None = None,
        **overrides,
    ) -> list[Sample | None]:
        """``n`` completions of ``messages`` (the assistant turn starting with ``prefix``).

        ``overrides`` replace fields of the request's sampling (``max_tokens``,
        ``stop``, ``temperature``). ``on_finish(index, sample)`` is called as each
        finishes; when it returns True the others are aborted and come back as None.
        ``first`` numbers the samples on from an earlier call's (``first + index`` in
        :meth:`sample_params`), so more samples of one prompt are new draws, never the
        earlier call's seeds or its greedy answer again.
        """
        ids = self.engine.encode_chat(messages, assistant_prefix=prefix)
        room = self.engine.max_context - len(ids)
        if room < 1:
            raise PromptTooLong(f"the prompt is {len(ids)} tokens but the model's context is "
                                f"{self.engine.max_context}: shorten the messages")
        self._calls += 1
        requests = []
        for i in range(n):
            params = self.sample_params(first + i, **overrides) if n > 1 or first else \
                replace(self.sampling, logprobs=True, top_logprobs=0, **overrides)
            params = replace(params, max_tokens=min(params.max_tokens, room))
            requests.append(GenerationRequest(f"{self.request_id}-c{self._calls}-{i}", ids,
                                              params, adapter=self.adapter))
        results: list[Sample | None] = [None] * n
        done = asyncio.Event()

        async def one(index: int, request: GenerationRequest) -> None:
            sample = Sample()
            stream = self.engine.generate(request)
            try:
                async for chunk in stream:
                    self.progress()
                    sample.text += chunk.text
                    sample.token_ids.extend(chunk.token_ids)
                    sample.logprobs.extend(lp.logprob for lp in chunk.logprobs or ())
                    if chunk.finish_reason is not None:
                        sample.finish = chunk.finish_reason
            finally:
                await stream.aclose()
                self.tokens += len(sample.token_ids)
            results[index] = sample
            if on_finish is not None and on_finish(index, sample):
                done.set()

        tasks = [asyncio.create_task(one(i, r)) for i, r in enumerate(requests)]
        waiter = asyncio.create_task(done.wait())
        try:
            pending = set(tasks)
            while pending and not done.is_set():
                finished, pending = await asyncio.wait(
                    pending | {waiter}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(waiter)
                for task in finished:
                    if task is not waiter and task.exception() is not None:
                        raise task.exception()
        finally:
            waiter.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, waiter, return_exceptions=True)
        return results

    async def one(self, messages: Sequence[dict[str, str]], *, prefix: str = "",
                  **overrides) -> Sample:
        """A single completion (the request's own sampling, unless overridden)."""
        (sample,) = await self.run(messages, n=1, prefix=prefix, **overrides)
        assert sample is not None
        return sample

    async def reward(self, messages: Sequence[dict[str, str]], sample: Sample) -> float:
        """The implicit reward of ``sample``: log p(adapter) - log p(base), summed.

        What KTO/DPO training optimised from the users' thumbs; 0 on the base model.
        """
        if self.adapter is None or not sample.text:
            return 0.0
        # The text as the model reads it (re-tokenized), not the ids it happened to be
        # sampled as: the reward is the answer's, and can be recomputed from the log.
        prompt = self.engine.encode_chat(messages)
        ids = self.engine.encode_text(sample.text)
        tuned = await self.engine.score(prompt, ids, self.adapter)
        base = await self.engine.score(prompt, ids, None)
        self.tokens += 2 * len(ids)
        return float(sum(tuned) - sum(base))
