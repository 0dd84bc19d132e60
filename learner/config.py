"""The learner's configuration: when rounds run and how they train, gate and publish.

:class:`LearnerConfig` is the one declaration of these fields; ``loraloop.settings``
nests it (``LORALOOP_LEARNER_CONFIG__<FIELD>``, e.g. ``LORALOOP_LEARNER_CONFIG__TRAIN__EPOCHS``)
rather than restating them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from learner.canary import CanaryPolicy
from learner.distill import DistillConfig
from learner.gate import GateConfig
from learner.train import TrainConfig

#: Where a test may ask the learner to die (crash-safety tests).
CRASH_POINTS = ("after_read", "after_train", "after_commit")


class LearnerConfig(BaseModel):
    """When rounds run and how they train, gate and publish."""

    model_config = ConfigDict(extra="forbid")

    min_new_examples: int = Field(
        default=16, ge=1, description="Feedback events that start a round at once."
    )
    min_round_examples: int = Field(
        default=4, ge=1, description="Feedback events that start a round once no new one "
        "has arrived for settle_s (users paused): enough for the gate to judge.",
    )
    settle_s: float = Field(
        default=10.0, ge=0, description="Quiet time after the last event before a round "
        "starts with fewer than min_new_examples.",
    )
    max_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="A round also starts this long after the last one if at least one event waits.",
    )
    per_user_cap: int = Field(
        default=50, ge=1, description="Most examples one user may contribute to a round."
    )
    max_user_share: float = Field(
        default=0.5, gt=0, le=1, description="Largest share of a round's new feedback one "
        "user may give (over it: the user's latest entries wait for a later round).")
    min_round_users: int = Field(
        default=2, ge=1, description="Distinct users a round's new feedback must come from; "
        "fewer: the round waits for more.")
    holdout_fraction: float = Field(
        default=0.1, ge=0, le=0.9, description="Share of a round's new feedback kept out of "
        "training for the gate; the next round trains on it.",
    )
    replay_fraction: float = Field(
        default=0.5,
        ge=0,
        le=10,
        description="Examples the live version was trained on mixed in, as a share of the "
        "round's own.",
    )
    min_replay: int = Field(
        default=16, ge=0, le=4096, description="Fewest earlier examples a round replays (when "
        "the live version has that many): a round of a few new examples would otherwise take "
        "its steps on those alone and forget what earlier rounds taught.",
    )
    max_carried: int = Field(
        default=512, ge=0, description="Most not-yet-live examples a round carries over "
        "from the tenant's last candidate (the newest are kept).",
    )
    retries: int = Field(
        default=1, ge=0, le=5, description="Times a round retrains (another seed, twice the "
        "anchor weight, 3/4 of the learning rate) when only the regression set failed its gate.",
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig = Field(
        default_factory=DistillConfig, description="How much of a round handed-off answers "
        "(the upstream model's, logged by serving) may teach (learner.distill).")
    gate: GateConfig = Field(default_factory=GateConfig)
    canary_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Traffic of a canary the learner starts (gate.auto_promote = canary).",
    )
    regression_set: str | None = Field(
        default=None, description="JSONL regression set the gate checks (learner.gate).")
    canary: CanaryPolicy = Field(
        default_factory=CanaryPolicy,
        description="When the canary controller promotes or rolls back a running canary.",
    )
    canary_interval_s: float = Field(
        default=30.0, gt=0, description="How often the learner looks at running canaries."
    )
    claim_idle_ms: int = Field(
        default=30_000,
        ge=100,
        description="A pending entry idle this "
        "long is taken over (a restarted learner resumes after it).",
    )
    crash_at: str | None = Field(
        default=None, description=f"Tests only: die at this point ({', '.join(CRASH_POINTS)})."
    )
