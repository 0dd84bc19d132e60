"""The evaluation gate: did a candidate learn what it was taught, without forgetting?

:func:`evaluate` compares the candidate with a reference (the tenant's live
adapter, or the base model when there is none) and returns a verdict; the
caller records it (``storage.record_gate``, with every metric and the reasons)
and acts on ``auto_promote``.

For an example the implicit reward is ``r = logp_candidate(completion | prompt)
- logp_reference(completion | prompt)`` (sums over the completion's tokens,
:func:`learner.scoring.sequence_logprobs`); the candidate moved it the right
way when ``r > 0`` for a desirable example and ``r < 0`` for an undesirable one.

Three checks, each a decision with its evidence recorded:

1. **Taught** — on the round's new training examples, ``k`` of ``n`` pieces of
   feedback moved the right way (a correction counts once: its answer gained on
   the one it replaced). With a uniform prior on the rate, ``taught_confidence`` =
   P(rate > 1/2 | k, n) must reach ``confidence`` (0.95: 4 of 4, 6 of 7, 9 of
   11, ...). It shows the round learned what users said, however few they were.
2. **Held out** — the same count on the round's held-out slice, which was not
   trained. It fails the candidate only when it is *significantly worse*:
   P(rate < 1/2) >= ``confidence``. A small slice cannot decide either way, and
   the metrics say so; a large one that goes the wrong way is caught.
3. **Regression set** — rows ``{"messages": [...], "expected": "..."}`` (the
   greedy answer, stripped, must start with the stripped expected text, or
   equal it with ``match="exact"``) or ``{"messages": [...], "pattern":
   "regex"}`` (:mod:`learner.regression`). The candidate must match at least as
   many rows as the reference, and as the base model, minus
   ``regression_tolerance``: against the live version alone the tolerance would
   let the line lose a row every round. The reference's and the base model's
   answers are cached per adapter and set (they do not change between rounds).
4. **Handoff slice** — the held-out prompts of handed-off requests, this round's
   and earlier rounds' that no version of the live line trained on
   (:func:`learner.agreement.handoff_slice`, :func:`~learner.agreement.earlier_handoffs`,
   so a slice too small in one round grows): the candidate's greedy answers must
   agree with the upstream's more often than the reference's do
   (:func:`learner.agreement.handoff_metrics`; both rates are in the metrics). On
   fewer than ``handoff_min_slice`` prompts the check is skipped, and says so.

``evidence`` in the metrics is ``taught_confidence`` of a candidate that passed
every check: the canary controller may promote on it (learner.canary).
With ``enforce=False`` the gate measures and records everything but passes any
candidate (tests of the mechanics use that).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from learner.agreement import handoff_metrics, handoff_reason, handoff_slice
from learner.examples import Example
from learner.regression import (
    RegressionRow,  # noqa: F401  (learner.gate's API since the start)
    answers_key,
    cached_answers,
    load_regression_set,
)
from learner.scoring import (
    default_threads,
    encode_pairs,
    encoded_logprobs,
    greedy_answers,
    limited_threads,
    load_base_model,
    load_tokenizer,
    render,
)

log = logging.getLogger(__name__)

AutoPromote = Literal["off", "canary", "live"]

class GateConfig(BaseModel):
    """The gate's policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    confidence: float = Field(0.95, gt=0.5, lt=1, description="Posterior probability the "
                              "taught examples need (better than chance), and at which a held-out "
                              "slice counts as worse.")
    regression_tolerance: int = Field(1, ge=0, description="How many fewer regression rows "
                                      "the candidate may match than the reference.")
    enforce: bool = Field(True, description="False: measure and record, but pass every "
                          "candidate (for testing the loop's mechanics).")
    match: Literal["prefix", "exact"] = Field("prefix", description="How an `expected` row "
                                              "matches the stripped greedy answer.")
    max_new_tokens: int = Field(24, ge=1, le=4096, description="Greedy answer length for "
                                "the regression set (the rows' answers come early).")
    auto_promote: AutoPromote = Field("off", description="What the learner does with a "
                                      "passing candidate: nothing, start a canary, or make "
                                      "it live. The gate only reports it.")
    batch_size: int = Field(16, ge=1, description="Sequences scored or generated per pass.")
    max_length: int = Field(1024, ge=16, description="Longest scored sequence in tokens.")
    threads: int | None = Field(None, ge=1, le=256, description="torch threads; None: "
                                "learner.scoring.default_threads().")
    handoff_min_slice: int = Field(2, ge=1, description="Held-out handed-off prompts the "
                                   "handoff check needs; on fewer it is skipped (the "
                                   "agreement rates are still reported). The slice grows "
                                   "round after round (earlier rounds' held-out prompts "
                                   "count), so 2 judges from the second round on.")
    handoff_max_slice: int = Field(64, ge=1, description="Most held-out handed-off prompts "
                                   "answered for the handoff check (the newest).")


@dataclass(frozen=True)
class GateResult:
    """The verdict: ``passed``, the metrics (for the registry) and why it failed."""

    passed: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    auto_promote: AutoPromote = "off"  #: the policy's action; "off" whenever it failed


def evaluate(*, base_model: str, candidate_dir: str | Path, reference_dir: str | Path | None,
             taught: Sequence[Example] = (), holdout: Sequence[Example] = (),
             regression_set: str | Path | None = None, config: GateConfig | None = None,
             cache_dir: str | Path | None = None, base: Any = None,
             earlier_handoffs: Sequence[Example] = ()) -> GateResult:
    """Judge ``candidate_dir`` against ``reference_dir`` (``None``: the base model).

    ``base_model`` is the base model's local path; ``taught`` the round's new
    training examples, ``holdout`` its held-out ones, ``earlier_handoffs`` earlier
    rounds' held-out handed-off prompts (the handoff slice counts them before this
    round's, newest last: :func:`learner.agreement.earlier_handoffs`). See the module
    docstring for the checks. ``cache_dir`` keeps the reference's regression answers.
    ``base``: the base model already in memory (``TrainResult.base``, what training
    loaded), used instead of loading ``base_model`` again when it is what that load
    would give (same dtype, no adapter in it); the gate adds the adapters to it, so it
    is used up. The adapters are always read from ``candidate_dir`` and ``reference_dir``.
    Raises ``InvalidRegressionSet`` for a bad file.
    """
    config = config or GateConfig()
    started = time.perf_counter()
    rows = load_regression_set(regression_set) if regression_set is not None else []
    with limited_threads(config.threads or default_threads()):
        from peft import PeftModel

        tokenizer = load_tokenizer(base_model)
        model = PeftModel.from_pretrained(load_base_model(base_model, reuse=base),
                                          str(candidate_dir), adapter_name="candidate")
        reference = None
        if reference_dir is not None:
            model.load_adapter(str(reference_dir), adapter_name="reference")
            reference = "reference"

        def rewards(examples: Sequence[Example]) -> list[float]:
            encoded = encode_pairs(tokenizer, [render(tokenizer, e) for e in examples],
                                   max_length=config.max_length)  # once for both models

            def score(adapter: str | None) -> list[float]:
                return _with_adapter(model, adapter, lambda m: encoded_logprobs(
                    m, encoded, pad_id=tokenizer.pad_token_id, batch_size=config.batch_size))

            return [c - r for c, r in zip(score("candidate"), score(reference), strict=True)]

        def answers(adapter: str | None, chats: Sequence[Any] | None = None) -> list[str]:
            chats = [row.messages for row in rows] if chats is None else chats
            return _with_adapter(model, adapter, lambda m: greedy_answers(
                m, tokenizer, chats, max_new_tokens=config.max_new_tokens,
                batch_size=config.batch_size))

        metrics: dict[str, Any] = {"reference": "live" if reference else "base"}
        # Both slices in the same passes; each example is scored once per model.
        scored = [*taught, *holdout]
        got = rewards(scored) if scored else []
        taught_rewards, holdout_rewards = got[:len(taught)], got[len(taught):]
        metrics.update(_counted("taught", taught, taught_rewards))
        metrics.update(_counted("holdout", holdout, holdout_rewards))
        if holdout:
            metrics.update(preference_metrics(holdout, holdout_rewards))
        if rows:
            def of(adapter_dir, adapter):  # the reference's and the base's do not change
                return cached_answers(cache_dir, answers_key(
                    base_model, adapter_dir, regression_set, config.max_new_tokens,
                    config.match), lambda: answers(adapter))

            got_reference = of(reference_dir, reference)
            got_base = of(None, None) if reference else got_reference
            got_candidate = answers("candidate")
            metrics["regression_rows"] = len(rows)
            metrics["regression_candidate"] = sum(
                r.matches(a, config.match) for r, a in zip(rows, got_candidate, strict=True))
            metrics["regression_reference"], metrics["regression_base"] = (sum(
                r.matches(a, config.match) for r, a in zip(rows, got, strict=True))
                for got in (got_reference, got_base))
            metrics["regression_lost"] = [
                r.messages[-1]["content"] for r, c, ref in zip(rows, got_candidate, got_reference,
                                                              strict=True)
                if r.matches(ref, config.match) and not r.matches(c, config.match)][:10]
        handed_off = handoff_slice([*earlier_handoffs, *holdout], config.handoff_max_slice)
        chats = [e.prompt for e in handed_off]
        metrics.update(handoff_metrics(
            handed_off, answers("candidate", chats) if chats else [],
            answers(reference, chats) if chats else [], how=config.match,
            min_slice=config.handoff_min_slice))
    reasons = _verdict(metrics, config)
    passed = not reasons or not config.enforce
    metrics["evidence"] = metrics["taught_confidence"] if not reasons else 0.0
    metrics["gate"] = ("passed: " + _summary(metrics, config) if not reasons
                       else "failed: " + "; ".join(reasons))
    if reasons and not config.enforce:
        metrics["gate"] += " (not enforced)"
    metrics["gate_seconds"] = round(time.perf_counter() - started, 3)
    log.info("gate %s for %s: %s", "passed" if passed else "failed", candidate_dir,
             metrics["gate"])
    return GateResult(passed, metrics, [] if passed else reasons,
                      config.auto_promote if passed else "off")


def prob_rate_above_half(right: int, n: int) -> float:
    """P(rate > 1/2) under a uniform prior after ``right`` successes in ``n`` trials."""
    # The Beta(1 + k, 1 + n - k) CDF at 1/2 is a binomial tail, P(Bin(n + 1, 1/2) >= k + 1),
    # so the probability above 1/2 is P(Bin(n + 1, 1/2) <= k).
    total = n + 1
    return sum(math.comb(total, j) for j in range(right + 1)) / 2 ** total


def preference_metrics(examples: Sequence[Example], rewards: Sequence[float]
                       ) -> dict[str, float]:
    """``accuracy``, ``margin`` and the mean implicit rewards of desirable and undesirable."""
    good = [r for r, e in zip(rewards, examples, strict=True) if e.desirable]
    bad = [r for r, e in zip(rewards, examples, strict=True) if not e.desirable]
    right = sum(r > 0 for r in good) + sum(r < 0 for r in bad)
    mean_good = sum(good) / len(good) if good else 0.0
    mean_bad = sum(bad) / len(bad) if bad else 0.0
    return {"accuracy": right / len(rewards), "margin": mean_good - mean_bad,
            "reward_desirable": mean_good, "reward_undesirable": mean_bad,
            "holdout_desirable": len(good), "holdout_undesirable": len(bad)}


def trials(examples: Sequence[Example], rewards: Sequence[float]) -> list[bool]:
    """Whether each piece of feedback moved the right way.

    A correction is one trial, won when the corrected answer gained on the answer it
    replaced (``r_correction > r_replaced``); any other example is won when ``r > 0``
    for desirable and ``r < 0`` for undesirable.
    """
    pairs: dict[tuple[str, str], dict[bool, float]] = {}
    outcomes = []
    for example, reward in zip(examples, rewards, strict=True):
        if example.source == "correction":
            pairs.setdefault((example.stream_id, example.interaction_id), {})[
                example.desirable] = reward
        else:
            outcomes.append(reward > 0 if example.desirable else reward < 0)
    for pair in pairs.values():
        if len(pair) == 2:
            outcomes.append(pair[True] > pair[False])
        else:
            (desirable, reward), = pair.items()
            outcomes.append(reward > 0 if desirable else reward < 0)
    return outcomes


def _counted(name: str, examples: Sequence[Example], rewards: Sequence[float]) -> dict:
    won = trials(examples, rewards)
    right, n = sum(won), len(won)
    better = prob_rate_above_half(right, n)
    return {name: n, f"{name}_right": right, f"{name}_confidence": round(better, 6),
            f"{name}_confidence_worse": round(1.0 - better, 6)}


def _verdict(metrics: dict[str, Any], config: GateConfig) -> list[str]:
    reasons = []
    if not metrics["taught"]:
        reasons.append("nothing was taught to judge the candidate on; wait for feedback")
    elif metrics["taught_confidence"] < config.confidence:
        reasons.append(
            f"the taught examples moved the right way {metrics['taught_right']} of "
            f"{metrics['taught']} times: P(better than chance) = "
            f"{metrics['taught_confidence']:.3f} < {config.confidence}")
    if metrics["holdout"] and metrics["holdout_confidence_worse"] >= config.confidence:
        reasons.append(
            f"held-out examples moved the right way only {metrics['holdout_right']} of "
            f"{metrics['holdout']} times: P(worse than chance) = "
            f"{metrics['holdout_confidence_worse']:.3f} >= {config.confidence}")
    if "regression_rows" in metrics:
        # Against the base model too: a tolerance against each live version in turn would
        # let the line lose one row a round for ever.
        base = metrics.get("regression_base", metrics["regression_reference"])
        floor = max(metrics["regression_reference"], base) - config.regression_tolerance
        if metrics["regression_candidate"] < floor:
            reasons.append(
                f"regression set: the candidate matches {metrics['regression_candidate']} of "
                f"{metrics['regression_rows']} rows, the reference "
                f"{metrics['regression_reference']}, the base model {base} (tolerance "
                f"{config.regression_tolerance}); lost: {metrics['regression_lost']}")
    if handoff := handoff_reason(metrics):
        reasons.append(handoff)
    return reasons


def _summary(metrics: dict[str, Any], config: GateConfig) -> str:
    parts = [f"taught {metrics['taught_right']}/{metrics['taught']} right way "
             f"(P = {metrics['taught_confidence']:.3f} >= {config.confidence})"]
    if metrics["holdout"]:
        parts.append(f"held out {metrics['holdout_right']}/{metrics['holdout']} "
                     f"(P(worse) = {metrics['holdout_confidence_worse']:.3f})")
    else:
        parts.append("no held-out slice")
    if "regression_rows" in metrics:
        parts.append(f"regression {metrics['regression_candidate']}/{metrics['regression_rows']}"
                     f" vs reference {metrics['regression_reference']}"
                     f", base {metrics.get('regression_base', metrics['regression_reference'])}")
    if metrics["handoff_slice"]:
        parts.append(f"handoff {metrics['handoff_agree_candidate']}/{metrics['handoff_slice']}"
                     f" vs reference {metrics['handoff_agree_reference']} "
                     f"({metrics['handoff_check']})")
    return "; ".join(parts)


def _with_adapter(model: Any, adapter: str | None, fn: Any) -> Any:
    """Run ``fn(model)`` with one adapter active, or with adapters disabled (``None``: base)."""
    if adapter is None:
        with model.disable_adapter():
            return fn(model)
    model.set_adapter(adapter)
    return fn(model)


def only_regression_failed(verdict: GateResult) -> bool:
    """Whether the regression set is all that failed (a gentler retrain may pass)."""
    return bool(verdict.reasons) and all(r.startswith("regression set") for r in verdict.reasons)
