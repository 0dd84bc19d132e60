"""The evaluation gate: is a candidate adapter better than what is live, and no worse elsewhere?

:func:`evaluate` compares the candidate with a reference (the tenant's live
adapter, or the base model when there is none) and returns a verdict; the
caller records it (``storage.record_gate``) and acts on ``auto_promote``.

**Held-out preference.** For each held-out example the implicit reward is
``r = logp_candidate(completion | prompt) - logp_reference(completion | prompt)``
(sums over the completion's tokens, :func:`learner.scoring.sequence_logprobs`).

* ``accuracy`` = mean over held-out examples of ``[r > 0]`` for desirable and
  ``[r < 0]`` for undesirable ones (a candidate identical to the reference
  scores 0);
* ``margin`` = mean ``r`` over desirable minus mean ``r`` over undesirable
  examples (a side that is absent counts as 0).

It passes when ``accuracy >= min_accuracy`` and ``margin >= min_margin``. An
empty held-out slice fails unless ``allow_empty_holdout``.

**Regression set** (optional): a JSONL file whose rows are
``{"messages": [...], "expected": "..."}`` (the greedy answer, stripped, must
start with the stripped expected text, or equal it with ``match="exact"``) or
``{"messages": [...], "pattern": "regex"}`` (``re.search`` on the answer).
Greedy answers of ``max_new_tokens`` tokens from candidate and reference are
checked; the candidate passes when it matches at least as many rows as the
reference minus ``regression_tolerance``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from learner.errors import InvalidRegressionSet
from learner.examples import Example
from learner.scoring import (
    default_threads,
    greedy_generate,
    limited_threads,
    load_tokenizer,
    render,
    sequence_logprobs,
)

log = logging.getLogger(__name__)

AutoPromote = Literal["off", "canary", "live"]
_ROW_FORMAT = ('a row is {"messages": [{"role": ..., "content": ...}, ...], "expected": str} '
               'or {"messages": [...], "pattern": regex}')


class GateConfig(BaseModel):
    """The gate's policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_accuracy: float = Field(0.6, ge=0, le=1, description="Least held-out preference "
                                "accuracy (share of examples moved the right way).")
    min_margin: float = Field(0.0, description="Least implicit reward margin (nats): mean r "
                              "of desirable minus mean r of undesirable held-out examples.")
    allow_empty_holdout: bool = Field(False, description="Pass a candidate with no held-out "
                                      "examples on the other checks alone (else it fails).")
    regression_tolerance: int = Field(0, ge=0, description="How many fewer regression rows "
                                      "the candidate may match than the reference.")
    match: Literal["prefix", "exact"] = Field("prefix", description="How an `expected` row "
                                              "matches the stripped greedy answer.")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="Greedy answer length for "
                                "the regression set.")
    auto_promote: AutoPromote = Field("off", description="What the learner does with a "
                                      "passing candidate: nothing, start a canary, or make "
                                      "it live. The gate only reports it.")
    batch_size: int = Field(16, ge=1, description="Held-out examples scored per forward pass.")
    max_length: int = Field(1024, ge=16, description="Longest scored sequence in tokens.")
    threads: int | None = Field(None, ge=1, le=256, description="torch threads; None: half "
                                "the CPUs (at least 1).")


@dataclass(frozen=True)
class GateResult:
    """The verdict: ``passed``, the metrics (for the registry) and why it failed."""

    passed: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    auto_promote: AutoPromote = "off"  #: the policy's action; "off" whenever it failed


@dataclass(frozen=True)
class RegressionRow:
    """One regression-set row: a chat and what its greedy answer must look like."""

    messages: list[dict[str, str]]
    expected: str | None = None
    pattern: str | None = None

    def matches(self, answer: str, how: str = "prefix") -> bool:
        if self.pattern is not None:
            return re.search(self.pattern, answer) is not None
        got, want = answer.strip(), (self.expected or "").strip()
        return got == want if how == "exact" else got.startswith(want)


def load_regression_set(path: str | Path) -> list[RegressionRow]:
    """Parse a regression-set JSONL file; ``InvalidRegressionSet`` names the bad line."""
    path = Path(path)
    if not path.is_file():
        raise InvalidRegressionSet(f"regression set {path} does not exist or is not a file")
    rows = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(_parse_row(json.loads(line)))
        except (ValueError, TypeError, re.error) as exc:
            raise InvalidRegressionSet(f"{path}:{number}: {exc}; {_ROW_FORMAT}") from exc
    return rows


def _parse_row(data: Any) -> RegressionRow:
    if not isinstance(data, dict):
        raise ValueError(f"row must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {"messages", "expected", "pattern"})
    if unknown:
        raise ValueError(f"unknown keys {unknown}")
    messages = data.get("messages")
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                       and isinstance(m.get("content"), str) for m in messages)):
        raise ValueError("`messages` must be a non-empty list of {role, content} strings")
    expected, pattern = data.get("expected"), data.get("pattern")
    if (expected is None) == (pattern is None):
        raise ValueError("give exactly one of `expected` and `pattern`")
    if not isinstance(expected if pattern is None else pattern, str):
        raise ValueError("`expected` / `pattern` must be a string")
    if pattern is not None:
        re.compile(pattern)
    return RegressionRow([{"role": m["role"], "content": m["content"]} for m in messages],
                         expected, pattern)


def evaluate(*, base_model: str, candidate_dir: str | Path, reference_dir: str | Path | None,
             holdout: Sequence[Example], regression_set: str | Path | None = None,
             config: GateConfig | None = None) -> GateResult:
    """Judge ``candidate_dir`` against ``reference_dir`` (``None``: the base model).

    ``base_model`` is the base model's local path. See the module docstring for
    the metrics and the rule. Raises ``InvalidRegressionSet`` for a bad file.
    """
    config = config or GateConfig()
    started = time.perf_counter()
    rows = load_regression_set(regression_set) if regression_set is not None else []
    with limited_threads(config.threads or default_threads()):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        tokenizer = load_tokenizer(base_model)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model),
                                          str(candidate_dir), adapter_name="candidate")
        if reference_dir is not None:
            model.load_adapter(str(reference_dir), adapter_name="reference")

        def scores(adapter: str) -> list[float]:
            pairs = [render(tokenizer, e) for e in holdout]
            return _with_adapter(model, adapter, lambda m: sequence_logprobs(
                m, tokenizer, pairs, batch_size=config.batch_size, max_length=config.max_length))

        def answers(adapter: str) -> list[str]:
            return _with_adapter(model, adapter, lambda m: [
                greedy_generate(m, tokenizer, row.messages, max_new_tokens=config.max_new_tokens)
                for row in rows])

        reference = "reference" if reference_dir is not None else None
        metrics: dict[str, Any] = {"holdout": len(holdout),
                                   "reference": "live" if reference else "base"}
        if holdout:
            metrics.update(preference_metrics(holdout, scores("candidate"), scores(reference)))
        if rows:
            got_candidate, got_reference = answers("candidate"), answers(reference)
            metrics["regression_rows"] = len(rows)
            metrics["regression_candidate"] = sum(
                r.matches(a, config.match) for r, a in zip(rows, got_candidate, strict=True))
            metrics["regression_reference"] = sum(
                r.matches(a, config.match) for r, a in zip(rows, got_reference, strict=True))
    reasons = _verdict(metrics, config)
    metrics["gate_seconds"] = round(time.perf_counter() - started, 3)
    passed = not reasons
    log.info("gate %s for %s: %s", "passed" if passed else "failed", candidate_dir,
             {k: v for k, v in metrics.items() if k != "gate_seconds"})
    return GateResult(passed, metrics, reasons, config.auto_promote if passed else "off")


def preference_metrics(holdout: Sequence[Example], candidate: Sequence[float],
                       reference: Sequence[float]) -> dict[str, float]:
    """``accuracy``, ``margin`` and the mean implicit rewards from per-example log-probs."""
    rewards = [c - r for c, r in zip(candidate, reference, strict=True)]
    good = [r for r, e in zip(rewards, holdout, strict=True) if e.desirable]
    bad = [r for r, e in zip(rewards, holdout, strict=True) if not e.desirable]
    right = sum(r > 0 for r in good) + sum(r < 0 for r in bad)
    mean_good = sum(good) / len(good) if good else 0.0
    mean_bad = sum(bad) / len(bad) if bad else 0.0
    return {"accuracy": right / len(rewards), "margin": mean_good - mean_bad,
            "reward_desirable": mean_good, "reward_undesirable": mean_bad,
            "holdout_desirable": len(good), "holdout_undesirable": len(bad)}


def _verdict(metrics: dict[str, Any], config: GateConfig) -> list[str]:
    reasons = []
    if not metrics["holdout"]:
        if not config.allow_empty_holdout:
            reasons.append("no held-out examples to judge the candidate on (allow_empty_holdout "
                           "is false); wait for a larger round")
    else:
        if metrics["accuracy"] < config.min_accuracy:
            reasons.append(f"held-out preference accuracy {metrics['accuracy']:.3f} is below "
                           f"min_accuracy {config.min_accuracy}")
        if metrics["margin"] < config.min_margin:
            reasons.append(f"held-out reward margin {metrics['margin']:.3f} is below "
                           f"min_margin {config.min_margin}")
    if "regression_rows" in metrics:
        floor = metrics["regression_reference"] - config.regression_tolerance
        if metrics["regression_candidate"] < floor:
            reasons.append(
                f"regression set: the candidate matches {metrics['regression_candidate']} of "
                f"{metrics['regression_rows']} rows, the reference "
                f"{metrics['regression_reference']} (tolerance {config.regression_tolerance})")
    return reasons


def _with_adapter(model: Any, adapter: str | None, fn: Any) -> Any:
    """Run ``fn(model)`` with one adapter active, or with adapters disabled (``None``: base)."""
    if adapter is None:
        with model.disable_adapter():
            return fn(model)
    model.set_adapter(adapter)
    return fn(model)
