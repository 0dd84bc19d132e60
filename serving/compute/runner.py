"""Running a request's :class:`~serving.compute.spec.Plan` on the replica.

:class:`ComputeRunner` is the replica's entry to test-time compute: it runs the
plan's strategy with a :class:`~serving.compute.sampler.Sampler` on the leased
adapter and yields the replica's usual events (``start``, ``chunks``), then a
``compute`` event carrying the :class:`~feedback.events.ComputeRecord` (and
the thinking text of a reasoning budget).

A handoff streams the upstream's answer as it arrives. Whatever goes wrong
upstream (not configured, circuit open, budget spent, error, timeout) falls
back to a local answer and is recorded, never a failed request; if the upstream
fails mid-answer, the local model continues the text already sent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from feedback.events import ComputeRecord
from serving.compute.adaptive import Calibrator, complete, escalate, probe
from serving.compute.answers import normalise
from serving.compute.bandit import Bandit
from serving.compute.sampler import Sampler
from serving.compute.spec import ComputeConfig, Plan
from serving.compute.strategies import Outcome, best_of_n, budget, refine
from serving.engines.base import Chunk, Engine
from serving.errors import ServingError

logger = logging.getLogger(__name__)


class ComputeRunner:
    """Strategies, handoff and the adaptive policy of one replica."""

    def __init__(self, engine: Engine, config: ComputeConfig, *, upstream: Any = None,
                 bandit: Bandit | None = None) -> None:
        self.engine = engine
        self.config = config
        self.upstream = upstream  # a serving.compute.upstream.Upstream, or None
        self.bandit = bandit or Bandit(cost_weight=config.adaptive.cost_weight)
        self.calibrator = Calibrator(config.adaptive)

    async def run(self, payload: dict, adapter: str | None, version: str,
                  progress: Callable[[], None] = lambda: None
                  ) -> AsyncIterator[dict | ServingError]:
        plan = Plan(**payload["compute"])
        route = payload.get("route") or {}
        tenant = route.get("tenant", "")
        messages = payload["messages"]
        sampler = Sampler(self.engine, adapter, payload["request_id"], payload["sampling"],
                          progress)
        max_tokens = payload["sampling"].max_tokens
        extra: dict[str, Any] = {"strategy": plan.strategy}
        try:
            if plan.strategy == "handoff":
                async for event in self._handoff(payload, sampler, None, extra, version):
                    yield event
                return
            if plan.strategy == "adaptive":
                outcome, arm = await self._adaptive(plan, sampler, messages, tenant, version,
                                                    max_tokens, extra)
                if arm == "handoff":
                    upstream_tokens = 0
                    async for event in self._handoff(payload, sampler, outcome, extra, version):
                        if isinstance(event, dict) and event.get("type") == "compute":
                            upstream_tokens = event["record"]["upstream_tokens"]
                        yield event
                    await self.bandit.pulled(tenant, arm, payload["request_id"],
                                             self._cost(sampler.tokens + upstream_tokens, tenant))
                    return
                if arm is not None:
                    await self.bandit.pulled(tenant, arm, payload["request_id"],
                                             self._cost(sampler.tokens, tenant))
            elif plan.strategy == "best_of_n":
                outcome = await best_of_n(sampler, messages, plan)
            elif plan.strategy == "refine":
                outcome = await refine(sampler, messages, plan)
            else:
                outcome = await budget(sampler, messages, plan, self.config)
        except ServingError as exc:
            yield exc
            return
        for event in self._served(outcome, sampler, messages, extra, version, tenant):
            yield event

    def status(self) -> dict:
        """For ``/status``: the upstream's breaker and per-tenant counts, and each tenant's
        current adaptive threshold and live version it was calibrated on."""
        return {
            "upstream": self.upstream.stats() if self.upstream is not None else None,
            "thresholds": self.calibrator.status(),
            "bandit_errors": self.bandit.errors,
        }

    def _cost(self, tokens: float, tenant: str = "") -> float:
        return tokens / self.config.adaptive.budget_for(tenant)

    async def _adaptive(self, plan: Plan, sampler: Sampler, messages, tenant: str, version: str,
                        max_tokens: int, extra: dict) -> tuple[Outcome, str | None]:
        adaptive = self.config.adaptive
        if plan.n != adaptive.probe_n:
            adaptive = adaptive.model_copy(update={"probe_n": plan.n})
        first = await probe(sampler, messages, adaptive, max_tokens)
        threshold = self.calibrator.threshold(tenant, version)
        self.calibrator.observe(tenant, version, first.confidence)
        extra["confidence"] = round(first.confidence, 4)
        record = {"samples": len(first.candidates), "votes": dict(first.vote.counts),
                  "candidates": [c.text for c in first.candidates], "chosen": first.chosen}
        if first.confidence >= threshold:
            extra["decision"] = "stop"
            answer = await complete(sampler, messages, first.candidates[first.chosen],
                                    max_tokens)
            return Outcome(answer, record), None
        arms = [a for a in adaptive.arms if a != "handoff" or (
            self.upstream is not None and self.upstream.available(tenant))] or ["stop"]
        arm = await self.bandit.choose(tenant, tuple(arms))
        extra["decision"] = arm
        if arm in ("stop", "handoff"):
            answer = first.candidates[first.chosen]
            if arm == "stop":
                answer = await complete(sampler, messages, answer, max_tokens)
            return Outcome(answer, record), arm
        return await escalate(arm, sampler, messages, first, self.config, max_tokens,
                              tenant), arm

    def _pseudo_label(self, record: dict, tenant: str) -> bool:
        """Whether the tenant opted in and the samples settled on the answer by a margin."""
        votes = record.get("votes") or {}
        counted = sum(votes.values())
        return (tenant in self.config.pseudo_label_tenants and counted >= 3
                and max(votes.values()) / counted >= self.config.pseudo_label_margin)

    def _served(self, outcome: Outcome, sampler: Sampler, messages, extra: dict,
                version: str, tenant: str = "") -> list[dict]:
        answer = outcome.answer
        prompt_tokens = len(self.engine.encode_chat(messages))
        record = ComputeRecord(**{**outcome.record, **extra, "compute_tokens": sampler.tokens,
                                  "pseudo_label": self._pseudo_label(outcome.record, tenant)})
        chunk = Chunk(token_ids=list(answer.token_ids), text=answer.text,
                      finish_reason=answer.finish or "stop", prompt_tokens=prompt_tokens,
                      completion_tokens=len(answer.token_ids))
        return [
            {"type": "start", "prompt_tokens": prompt_tokens, "adapter_version": version,
             "strategy": record.strategy},
            {"type": "chunks", "items": [(0, chunk)]},
            {"type": "compute", "record": record.model_dump(), "reasoning": outcome.reasoning},
        ]

    async def _handoff(self, payload: dict, sampler: Sampler, local: Outcome | None,
                       extra: dict, version: str) -> AsyncIterator[dict | ServingError]:
        """Stream the upstream's answer; fall back to the local model when it cannot."""
        from serving.compute.upstream import UpstreamUnavailable

        messages, tenant = payload["messages"], (payload.get("route") or {}).get("tenant", "")
        sampling = payload["sampling"]
        prompt_tokens = len(self.engine.encode_chat(messages))
        candidates = local.record.get("candidates", []) if local is not None else []
        record = {**(local.record if local is not None else {"samples": 0}), **extra}
        stream = None
        try:
            if self.upstream is None:
                raise UpstreamUnavailable("not_configured", "no upstream is configured "
                                          "(LORALOOP_UPSTREAM_URL)")
            stream = self.upstream.stream(tenant, messages, max_tokens=sampling.max_tokens,
                                          temperature=sampling.temperature)
            first = await anext(stream)
        except (UpstreamUnavailable, StopAsyncIteration) as exc:
            reason = getattr(exc, "reason", "error")
            logger.info("handoff fell back to the local model: %s", exc)
            answer = local.answer if local is not None else await sampler.one(messages)
            if local is not None:
                answer = await complete(sampler, messages, answer, sampling.max_tokens)
            fallback = Outcome(answer, {**record, "fallback": reason,
                                        "candidates": candidates or [answer.text],
                                        "samples": max(1, record.get("samples", 0))})
            for event in self._served(fallback, sampler, messages, {}, version):
                yield event
            return
        yield {"type": "start", "prompt_tokens": prompt_tokens, "adapter_version": version,
               "strategy": extra["strategy"], "handed_off": True}
        text = first
        fallback = None
        try:
            yield _text_event(first)
            async for delta in stream:
                text += delta
                yield _text_event(delta)
        except UpstreamUnavailable as exc:  # mid-answer: the local model carries it on
            fallback = exc.reason
            rest = await sampler.one(messages, prefix=text)
            yield _text_event(rest.text)
            text += rest.text
        finally:  # the client may have gone: the upstream's connection goes too
            await stream.aclose()
        # usage counts the served answer in this model's tokens, like a local one
        served = self.engine.encode_text(text)
        yield {"type": "chunks", "items": [(0, Chunk(token_ids=served, finish_reason="stop",
                                                     prompt_tokens=prompt_tokens,
                                                     completion_tokens=len(served)))]}
        upstream_tokens = stream.tokens
        differs = [normalise(c) != normalise(text) for c in candidates]
        done = ComputeRecord(**{**record, "candidates": candidates,
                                "samples": len(candidates), "handed_off": fallback is None,
                                "upstream_model": stream.model or self.upstream.config.model,
                                "upstream_tokens": upstream_tokens, "fallback": fallback,
                                "disagreement": sum(differs) / len(differs) if differs
                                else None, "compute_tokens": sampler.tokens})
        yield {"type": "compute", "record": done.model_dump(), "reasoning": None}


def _text_event(text: str) -> dict:
    return {"type": "chunks", "items": [(0, Chunk(text=text))]}

