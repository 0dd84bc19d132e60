"""``adaptive``: answer cheaply first, then decide from what only exists afterwards.

It draws ``probe_n`` short samples (one prefill, the vote stopping early once
settled) and reads signals off them: the vote margin, the geometric mean token
probability (``exp`` of the mean token log-probability), the probability of the
chosen answer's least likely token (where the model hesitated) and the model's own
verdict on the majority answer (self-verification). Their weighted mean is the
*confidence*. With ``probe_n`` 1 the probe is the answer itself, at full length
(greedy when the request is), so a confident answer costs what ``single`` costs;
a single sample has no vote margin, so the other signals decide. At or above the
tenant's threshold it stops and serves the majority answer; below it, the tenant's
:class:`~serving.compute.bandit.Bandit` picks how to escalate (stop anyway, more
samples, a reasoning budget, or a handoff), within the per-request compute budget.

The threshold is calibrated per tenant on the live version's own confidences
(:class:`Calibrator`): a new adapter shifts the distribution, so a promotion
starts a new calibration. With a target handoff rate the threshold is the
quantile of recent confidences that escalates that share of requests.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from serving.compute.answers import Vote, normalise
from serving.compute.sampler import Sample, Sampler
from serving.compute.spec import AdaptiveConfig, ComputeConfig, Plan
from serving.compute.strategies import Outcome, budget

VERIFY_PROMPT = ("Question: {question}\nProposed answer: {answer}\n\nIs the proposed answer "
                 "correct? Reply Yes or No.")
#: Weights of the signals in the confidence (a weighted mean of those present: a single
#: sample has no vote margin).
WEIGHTS = {"margin": 0.6, "token_probability": 0.2, "weakest_token": 0.2, "verified": 0.2}


class Calibrator:
    """The confidence threshold of each tenant, from its live version's recent confidences."""

    def __init__(self, config: AdaptiveConfig) -> None:
        self.config = config
        self._seen: dict[str, tuple[str, deque]] = {}

    def _history(self, tenant: str, version: str) -> deque:
        found = self._seen.get(tenant)
        if found is None or found[0] != version:  # first request, or a promotion
            found = (version, deque(maxlen=self.config.calibration_window))
            self._seen[tenant] = found
        return found[1]

    def threshold(self, tenant: str, version: str) -> float:
        history = self._history(tenant, version)
        target = self.config.target_handoff_rate
        if target is None or len(history) < self.config.min_calibration:
            return self.config.confidence_threshold
        ranked = sorted(history)
        index = min(len(ranked) - 1, max(0, math.ceil(target * len(ranked)) - 1))
        # Escalate the lowest `target` share: confidences strictly below the cut.
        return ranked[index] + 1e-9 if target > 0 else 0.0

    def status(self) -> dict[str, dict]:
        """``tenant -> {version, observed, threshold}``."""
        return {tenant: {"version": version, "observed": len(history),
                         "threshold": round(self.threshold(tenant, version), 4)}
                for tenant, (version, history) in self._seen.items()}

    def observe(self, tenant: str, version: str, confidence: float) -> None:
        self._history(tenant, version).append(confidence)


@dataclass
class Probe:
    """What the cheap first pass found."""

    vote: Vote
    candidates: list[Sample]
    chosen: int
    confidence: float
    signals: dict[str, float]


async def probe(sampler: Sampler, messages: list[dict[str, str]], config: AdaptiveConfig,
                max_tokens: int) -> Probe:
    vote = Vote(config.probe_n)

    def counted(index: int, sample: Sample) -> bool:
        vote.add(index, sample.text)
        return vote.settled

    short = config.probe_n > 1  # one sample is the answer itself: full length
    found = await sampler.run(messages, n=config.probe_n, on_finish=counted,
                              max_tokens=min(config.probe_max_tokens, max_tokens) if short
                              else max_tokens)
    candidates = [s for s in found if s is not None]
    key, _ = vote.winner()
    chosen = next(i for i, c in enumerate(candidates) if normalise(c.text) == key)
    signals = {"margin": vote.margin} if len(candidates) > 1 else {}
    signals["token_probability"] = math.exp(
        sum(c.mean_logprob for c in candidates) / len(candidates))
    signals["weakest_token"] = math.exp(min(candidates[chosen].logprobs, default=0.0))
    signals["verified"] = await _verify(sampler, messages, candidates[chosen].text)
    confidence = sum(WEIGHTS[k] * v for k, v in signals.items()) / \
        sum(WEIGHTS[k] for k in signals)
    return Probe(vote, candidates, chosen, confidence, signals)


async def _verify(sampler: Sampler, messages: list[dict[str, str]], answer: str) -> float:
    users = [m["content"] for m in messages if m.get("role") == "user"]
    prompt = VERIFY_PROMPT.format(question=users[-1] if users else "", answer=answer.strip())
    verdict = await sampler.one([{"role": "user", "content": prompt}], max_tokens=3,
                                temperature=0.0, stop=())
    return 1.0 if verdict.text.strip().lower().startswith("yes") else 0.0


async def complete(sampler: Sampler, messages: list[dict[str, str]], sample: Sample,
                   max_tokens: int) -> Sample:
    """``sample`` carried on to the request's ``max_tokens`` if the probe cut it short."""
    left = max_tokens - len(sample.token_ids)
    if sample.finish != "length" or left <= 0:
        return sample
    rest = await sampler.one(messages, prefix=sample.text, max_tokens=left)
    return Sample(sample.text + rest.text, sample.token_ids + rest.token_ids, rest.finish,
                  sample.logprobs + rest.logprobs)


async def escalate(arm: str, sampler: Sampler, messages: list[dict[str, str]], first: Probe,
                   config: ComputeConfig, max_tokens: int, tenant: str = "") -> Outcome:
    """Spend more as ``arm`` says (``more`` or ``budget``) within the tenant's budget.

    The two arms cost alike: ``budget`` thinks at most as many tokens as ``more`` would
    sample (``more_n`` less the probe's samples, each up to ``max_tokens``), so the
    bandit weighs escalations of one size, and a short answer never buys a thousand
    thinking tokens."""
    left = config.adaptive.budget_for(tenant) - sampler.tokens
    extra = min(config.adaptive.more_n - len(first.candidates), left // max(max_tokens, 1))
    if arm == "more":
        vote = Vote(len(first.candidates) + max(extra, 0))
        for i, c in enumerate(first.candidates):
            vote.add(i, c.text)
        offset = len(first.candidates)
        found = [] if extra <= 0 else await sampler.run(
            messages, n=extra, first=offset, max_tokens=max_tokens,
            on_finish=lambda i, s: (vote.add(offset + i, s.text), vote.settled)[1])
        candidates = first.candidates + [s for s in found if s is not None]
        key, _ = vote.winner()
        chosen = next(i for i, c in enumerate(candidates) if normalise(c.text) == key)
        answer = await complete(sampler, messages, candidates[chosen], max_tokens)
        return Outcome(answer, {"samples": len(candidates),
                                "candidates": [c.text for c in candidates],
                                "votes": dict(vote.counts), "chosen": chosen})
    thinking = max(16, min(config.max_thinking_tokens, left // 2,
                            max(extra, 1) * max(max_tokens, 1)))
    plan = Plan(strategy="budget", min_thinking_tokens=min(32, thinking),
                max_thinking_tokens=thinking)
    outcome = await budget(sampler, messages, plan, config, max_tokens=max_tokens)
    outcome.record["candidates"] = [c.text for c in first.candidates] + \
        outcome.record["candidates"]
    outcome.record["samples"] = len(outcome.record["candidates"])
    outcome.record["chosen"] = len(outcome.record["candidates"]) - 1
    return outcome
