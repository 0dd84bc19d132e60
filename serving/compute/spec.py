"""What a request asks of test-time compute, and the operator's limits on it.

A request says how much to think in one of two ways:

- the standard OpenAI ``reasoning_effort`` (``none``, ``low``, ``medium``,
  ``high``), which maps to the tenant's configured :class:`Effort`;
- the extension object ``loraloop`` (:class:`ComputeSpec`, sent by the
  ``openai`` client through ``extra_body``) for exact control.

:func:`plan_for` merges them with the tenant's defaults into a :class:`Plan`
within the caps of :class:`ComputeConfig`, or raises ``InvalidCompute`` (a 400)
naming the parameter, the value and what is allowed. The plan crosses to the
replica as a plain dict (:meth:`Plan.payload`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.errors import InvalidCompute

StrategyName = Literal["single", "best_of_n", "refine", "budget", "adaptive", "handoff"]
Aggregator = Literal["vote", "scorer", "judge"]
EffortName = Literal["none", "low", "medium", "high"]
STRATEGIES: tuple[str, ...] = ("single", "best_of_n", "refine", "budget", "adaptive", "handoff")


class ComputeSpec(BaseModel):
    """The request's ``loraloop`` object; unknown keys are refused (a typo is not ignored)."""

    model_config = ConfigDict(extra="forbid")

    strategy: StrategyName | None = None
    n: int | None = Field(default=None, ge=1, description="Samples for best_of_n/adaptive.")
    aggregator: Aggregator | None = None
    rounds: int | None = Field(default=None, ge=1, description="refine: critique rounds.")
    min_thinking_tokens: int | None = Field(default=None, ge=0)
    max_thinking_tokens: int | None = Field(default=None, ge=1)


class Effort(BaseModel):
    """What one ``reasoning_effort`` level means for a tenant."""

    model_config = ConfigDict(extra="forbid")

    strategy: StrategyName = "single"
    n: int = Field(default=1, ge=1)
    aggregator: Aggregator = "vote"
    rounds: int = Field(default=1, ge=1)
    min_thinking_tokens: int = Field(default=0, ge=0)
    max_thinking_tokens: int = Field(default=0, ge=0)


def _default_efforts() -> dict[str, Effort]:
    return {
        "none": Effort(strategy="single"),
        "low": Effort(strategy="adaptive"),  # the configured probe (adaptive.probe_n)
        "medium": Effort(strategy="best_of_n", n=4, aggregator="vote"),
        "high": Effort(strategy="budget", min_thinking_tokens=64, max_thinking_tokens=256),
    }


class AdaptiveConfig(BaseModel):
    """How ``adaptive`` spends compute: probe cheaply, then stop, spend more or hand off."""

    model_config = ConfigDict(extra="forbid")

    probe_n: int = Field(default=1, ge=1, le=16, description="Short samples first; 1: the "
                         "answer itself first (full length, greedy when the request is), "
                         "judged by its token probabilities and a self-check, no vote.")
    probe_max_tokens: int = Field(default=64, ge=1, description="Tokens per probe sample.")
    more_n: int = Field(default=8, ge=2, le=64, description="Samples when it spends more.")
    confidence_threshold: float = Field(
        default=0.67, ge=0, le=1, description="Starting threshold of the confidence signal "
        "(vote margin, tempered by mean token log-probability); recalibrated per tenant and "
        "live version from what it observes.")
    target_handoff_rate: float | None = Field(
        default=0.3, ge=0, le=1, description="Target share of requests below the threshold "
        "(escalated): once min_calibration confidences are seen, the threshold is the "
        "quantile that escalates this share, whatever the model's confidence scale. None "
        "keeps confidence_threshold fixed.")
    calibration_window: int = Field(default=200, ge=10, description="Recent confidences of "
                                    "one live version the threshold is recalibrated from.")
    min_calibration: int = Field(default=5, ge=1, description="Observations before the "
                                 "threshold leaves its starting value (after a promotion too).")
    compute_budget_tokens: int = Field(default=2048, ge=1, description="Most local tokens "
                                       "one adaptive request may spend.")
    tenant_compute_budget_tokens: dict[str, int] = Field(
        default_factory=dict, description="Per tenant: a different compute_budget_tokens.")
    cost_weight: float = Field(default=0.5, ge=0, description="How much a unit of relative "
                               "cost weighs against a thumbs-up in the bandit.")
    arms: list[Literal["stop", "more", "budget", "handoff"]] = Field(
        default_factory=lambda: ["stop", "more", "handoff"], min_length=1,
        description="The escalations the bandit may choose below the threshold (handoff "
        "only while an upstream is configured and its circuit is not open; without any "
        "other arm the answer stops). `budget` (think longer) is not among the defaults: "
        "it pays only on a model trained to think (on builtin:smollm2 it lost accuracy at "
        "4x single's compute); add it for such a model.")


    def budget_for(self, tenant: str) -> int:
        """The most local tokens one of ``tenant``'s adaptive requests may spend."""
        return self.tenant_compute_budget_tokens.get(tenant, self.compute_budget_tokens)


class ComputeConfig(BaseModel):
    """The operator's test-time compute settings (``LORALOOP_COMPUTE_CONFIG__*``)."""

    model_config = ConfigDict(extra="forbid")

    max_n: int = Field(default=8, ge=1, le=64, description="Most samples a request may ask.")
    max_rounds: int = Field(default=3, ge=1, le=8, description="Most refine rounds.")
    max_thinking_tokens: int = Field(default=1024, ge=1, description="Most thinking tokens.")
    max_waits: int = Field(default=4, ge=0, description="Most times the reasoning budget "
                           "appends the wait word to reach its minimum.")
    think_open: str = Field(default="<think>", min_length=1)
    think_close: str = Field(default="</think>", min_length=1)
    wait_word: str = Field(default="Wait", min_length=1)
    answer_cue: str = Field(default="\nFinal answer:", description="Appended after a cut "
                            "thinking section, before the answer.")
    efforts: dict[str, Effort] = Field(default_factory=_default_efforts, description="What "
                                       "reasoning_effort none/low/medium/high means.")
    tenant_efforts: dict[str, dict[str, Effort]] = Field(
        default_factory=dict, description="Per tenant: reasoning_effort levels that differ.")
    default_strategy: dict[str, StrategyName] = Field(
        default_factory=dict, description="Per tenant: the strategy of a request that asks "
        "for none (otherwise single).")
    pseudo_label_tenants: list[str] = Field(
        default_factory=list, description="Tenants whose settled majority answers are "
        "pseudo-labels the learner distils (opt-in: a confident majority can be wrong).")
    pseudo_label_margin: float = Field(default=0.75, gt=0.5, le=1, description="Share of "
                                       "at least 3 samples the majority needs to be one.")
    adaptive: AdaptiveConfig = Field(default_factory=AdaptiveConfig)


class Plan(BaseModel):
    """A validated strategy for one request (what the replica runs)."""

    strategy: StrategyName = "single"
    n: int = 1
    aggregator: Aggregator = "vote"
    rounds: int = 1
    min_thinking_tokens: int = 0
    max_thinking_tokens: int = 0

    def payload(self) -> dict:
        return self.model_dump()


def plan_for(tenant: str, spec: ComputeSpec | None, effort: str | None, choices: int,
             config: ComputeConfig) -> Plan | None:
    """The request's plan, or None for a plain single answer (the engine's own path)."""
    base = _effort(tenant, effort, config)
    if base is None and spec is None:
        default = config.default_strategy.get(tenant, "single")
        base = Effort(strategy=default)
    fields = base.model_dump() if base is not None else Effort().model_dump()
    if spec is not None:
        asked = spec.model_dump(exclude_none=True)
        if "strategy" in asked and asked["strategy"] != fields["strategy"]:
            fields = Effort(strategy=asked["strategy"]).model_dump()
        fields.update(asked)
    kept_base = base is not None and (spec is None or spec.strategy in (None, base.strategy))
    asked_n = (spec is not None and spec.n is not None) or \
        (kept_base and "n" in base.model_fields_set)
    if fields["strategy"] == "adaptive" and not asked_n:
        fields["n"] = config.adaptive.probe_n  # the operator's probe, unless a request asks
    plan = Plan(**fields)
    _check(plan, spec, config, choices)
    if plan.strategy == "single":
        return None
    return plan


def _effort(tenant: str, effort: str | None, config: ComputeConfig) -> Effort | None:
    if effort is None:
        return None
    levels = {**config.efforts, **config.tenant_efforts.get(tenant, {})}
    if effort not in levels:
        raise InvalidCompute(f"reasoning_effort {effort!r} is not one of {sorted(levels)}",
                             param="reasoning_effort")
    return levels[effort]


def _check(plan: Plan, spec: ComputeSpec | None, config: ComputeConfig, choices: int) -> None:
    def refuse(param: str, message: str) -> None:
        raise InvalidCompute(message, param=f"loraloop.{param}")

    if plan.n > config.max_n:
        refuse("n", f"n={plan.n} is above this server's cap of {config.max_n} samples "
                    "(LORALOOP_COMPUTE_CONFIG__MAX_N)")
    if plan.strategy in ("best_of_n",) and plan.n < 2:
        refuse("n", f"best_of_n needs n >= 2 samples, got n={plan.n}")
    if plan.rounds > config.max_rounds:
        refuse("rounds", f"rounds={plan.rounds} is above this server's cap of "
                         f"{config.max_rounds} (LORALOOP_COMPUTE_CONFIG__MAX_ROUNDS)")
    if plan.max_thinking_tokens > config.max_thinking_tokens:
        refuse("max_thinking_tokens", f"max_thinking_tokens={plan.max_thinking_tokens} is "
               f"above this server's cap of {config.max_thinking_tokens} "
               "(LORALOOP_COMPUTE_CONFIG__MAX_THINKING_TOKENS)")
    if plan.strategy == "budget":
        if plan.max_thinking_tokens < 1:
            refuse("max_thinking_tokens", "the budget strategy needs max_thinking_tokens >= 1")
        if plan.min_thinking_tokens > plan.max_thinking_tokens:
            refuse("min_thinking_tokens", f"min_thinking_tokens={plan.min_thinking_tokens} is "
                   f"above max_thinking_tokens={plan.max_thinking_tokens}")
    if plan.strategy != "single" and choices > 1:
        raise InvalidCompute(f"n={choices} choices cannot be combined with the "
                             f"{plan.strategy!r} strategy, which returns one answer: use "
                             "loraloop.n for its samples", param="n")
    asked_aggregator = spec is not None and spec.aggregator is not None
    if asked_aggregator and plan.strategy not in ("best_of_n", "adaptive"):
        refuse("aggregator", f"aggregator applies to best_of_n and adaptive, not to "
                             f"{plan.strategy!r}")
