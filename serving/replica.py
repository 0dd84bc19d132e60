"""The LLM replica: a plain class that owns one engine and streams generations.

Ray Serve wraps it (see :mod:`serving.app`); tests and the CLI can use it
directly. It streams events, and yields an error instead of raising it, so
that the error crosses the Ray boundary as a typed value (a pickled
:class:`~serving.errors.ServingError`, not Ray's wrapper of a task failure),
which the ingress raises again and ``serving.http_errors`` answers:

- ``{"type": "start", "prompt_tokens": int, "adapter_version": str}`` first,
- ``{"type": "chunks", "items": [(index, Chunk), ...]}``: the steps of the choices
  produced since the last event (coalesced, see :func:`_coalesce`),
- or, first or last, a :class:`~serving.errors.ServingError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from serving.adapters import AdapterManager
from serving.compute.runner import ComputeRunner
from serving.compute.spec import ComputeConfig
from serving.engines.base import Engine, EngineConfig, GenerationRequest, SamplingParams
from serving.errors import AdapterNotLoaded, EngineUnhealthy, PromptTooLong, ServingError

logger = logging.getLogger(__name__)
BASE_VERSION = "base"


class LLMReplica:
    """One engine behind the replica protocol used by the ingress."""

    def __init__(
        self,
        *,
        engine_cls: type[Engine],
        engine_config: EngineConfig,
        adapters: Callable[[Engine], AdapterManager] | None = None,
        stall_after_s: float = 120.0,
        compute: Callable[[Engine], ComputeRunner] | None = None,
    ) -> None:
        """``stall_after_s``: how long generations may wait without the engine producing
        a single token for any of them before :meth:`check_health` calls it hung.
        ``compute``: makes the runner of test-time compute strategies and handoff over
        the engine (requests with a ``compute`` plan); by default one with the default
        :class:`~serving.compute.spec.ComputeConfig` and no upstream."""
        self.engine = engine_cls(engine_config)
        self._adapters_factory = adapters
        self.compute = (compute or (lambda engine: ComputeRunner(engine, ComputeConfig())))(
            self.engine)
        self.adapters: AdapterManager | None = None
        self.stall_after_s = stall_after_s
        self._active = 0  # generations started on the engine and not finished
        self._progress_at = time.monotonic()  # the engine's last token, or work arriving

    async def start(self) -> None:
        await self.engine.start()
        if self._adapters_factory is not None:
            self.adapters = self._adapters_factory(self.engine)

    async def shutdown(self) -> None:
        await self.engine.shutdown()

    async def check_health(self) -> None:
        """Raise if the engine cannot serve (Ray Serve restarts an unhealthy replica).

        Also a hung engine: one whose worker is alive but whose step never returns
        (a stuck kernel, a deadlock) shows no token for ``stall_after_s`` while
        generations wait on it.
        """
        await self.engine.check_health()
        stalled = time.monotonic() - self._progress_at
        if self._active and stalled > self.stall_after_s:
            raise EngineUnhealthy(
                f"the engine produced no token for {stalled:.0f} s while {self._active} "
                f"generation(s) waited (limit stall_after_s={self.stall_after_s:g} s): hung"
            )

    def _progressed(self) -> None:
        self._progress_at = time.monotonic()

    async def info(self) -> dict:
        return {
            "engine": type(self.engine).__name__,
            "max_context": self.engine.max_context,
            "adapters": self.engine.loaded_adapters(),
            "queue_depth": getattr(self.engine, "queue_depth", 0),
            "adapter_manager": self.adapters.status() if self.adapters else None,
            "compute": self.compute.status(),
        }

    async def generate(self, payload: dict) -> AsyncIterator[dict | ServingError]:
        """Stream events for ``payload`` = {request_id, messages, sampling, n, route}.

        ``route`` = {tenant, alias, pinned, user}: the adapter manager picks the
        version (and leases it until the answer ends); without a manager every
        route is served by the base model.
        """
        route = payload.get("route") or {}
        adapter = None
        try:
            if self.adapters is not None:
                adapter = await self.adapters.acquire(
                    route.get("tenant", ""),
                    route.get("alias", "live"),
                    route.get("user", ""),
                    route.get("pinned"),
                )
            elif route.get("pinned"):
                raise AdapterNotLoaded("this deployment has no registry: only base is served")
        except ServingError as exc:
            yield exc
            return
        try:
            events = self._generate(payload, adapter) if not payload.get("compute") else \
                self._tracked(self.compute.run(payload, adapter, adapter or BASE_VERSION,
                                              self._progressed))
            async for event in events:
                yield event
        finally:
            if self.adapters is not None:
                self.adapters.release(adapter)

    async def _generate(
        self, payload: dict, adapter: str | None
    ) -> AsyncIterator[dict | ServingError]:
        try:
            ids = self.engine.encode_chat(payload["messages"])
            limit = self.engine.max_context
            if len(ids) >= limit:
                raise PromptTooLong(
                    f"the prompt is {len(ids)} tokens but the model's context is {limit} "
                    f"tokens: shorten the messages to leave room for the answer"
                )
            sampling: SamplingParams = payload["sampling"]
            room = limit - len(ids)
            if sampling.max_tokens > room:
                sampling = replace(sampling, max_tokens=room)
            streams = [
                self.engine.generate(
                    GenerationRequest(
                        f"{payload['request_id']}-{i}",
                        ids,
                        _choice_sampling(sampling, i),
                        adapter=adapter,
                    )
                )
                for i in range(payload.get("n", 1))
            ]
        except ServingError as exc:
            yield exc
            return
        yield {
            "type": "start",
            "prompt_tokens": len(ids),
            "adapter_version": adapter or BASE_VERSION,
        }
        if not self._active:
            self._progressed()  # an idle engine starts its clock when work arrives
        self._active += 1
        try:
            async for items in _coalesce(_merge(streams), on_item=self._progressed):
                yield {"type": "chunks", "items": items}
        except ServingError as exc:
            yield exc
        finally:
            self._active -= 1

    async def _tracked(self, events: AsyncIterator) -> AsyncIterator:
        """``events`` counted as active work for the hung-engine check."""
        if not self._active:
            self._progressed()
        self._active += 1
        try:
            async for event in events:
                self._progressed()
                yield event
        finally:
            self._active -= 1
            await events.aclose()

    async def generate_all(self, payload: dict) -> list[dict | ServingError]:
        """The events of :meth:`generate` in one list: one round trip for a non-streamed answer."""
        return [event async for event in self.generate(payload)]


def _choice_sampling(sampling: SamplingParams, index: int) -> SamplingParams:
    """Choices of one request differ by seed so n > 1 is not n copies of one answer."""
    if sampling.seed is None or index == 0:
        return sampling
    return replace(sampling, seed=sampling.seed + index)


async def _merge(streams) -> AsyncIterator[tuple[int, object]]:
    """Interleave several chunk streams as (index, chunk), closing them all on exit."""
    if len(streams) == 1:
        try:
            async for chunk in streams[0]:
                yield 0, chunk
        finally:
            await streams[0].aclose()
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(index, stream):
        try:
            async for chunk in stream:
                await queue.put((index, chunk))
        except BaseException as exc:  # handed to the consumer below
            await queue.put((index, exc))
        finally:
            await queue.put((index, done))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _coalesce(source, on_item: Callable[[], None] = lambda: None
                    ) -> AsyncIterator[list]:
    """Yield lists of whatever ``source`` produced since the last yield.

    Each item crossing a Ray streaming handle costs milliseconds, far more than
    a tiny model's token; sending what has piled up as one item keeps the
    stream as fast as the engine without delaying the first token.
    """
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump():
        try:
            async for item in source:
                on_item()  # as the engine produces it, however slowly the client reads
                await queue.put(item)
        except BaseException as exc:
            await queue.put(exc)
        finally:
            await queue.put(end)

    task = asyncio.create_task(pump())
    try:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            finished = batch[-1] is end
            items = [item for item in batch if item is not end]
            for item in items:
                if isinstance(item, BaseException):
                    raise item
            if items:
                yield items
            if finished:
                return
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await source.aclose()

