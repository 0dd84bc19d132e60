"""The learner: curation of the feedback stream, LoRA training (TRL + peft) and the gate.

Only this package imports trl. Importing it stays cheap: torch, transformers,
peft and trl are imported inside the functions that use them.

* :mod:`learner.examples` — :class:`Example` and its JSONL form;
* :mod:`learner.curate` — :func:`curate`: joined feedback → :class:`CuratedRound`;
* :mod:`learner.train` — :func:`train_adapter` (anchored, KTO or SFT; warm start) →
  :class:`TrainResult`, with :mod:`learner.objective` and :mod:`learner.anchors`;
* :mod:`learner.gate` — :func:`evaluate` → :class:`GateResult`;
* :mod:`learner.scoring` — rendering and log-probabilities shared by training and the gate;
* :mod:`learner.config` — :class:`LearnerConfig`, the learner's one config section;
* :mod:`learner.loop` — :class:`Learner`: one round (read, curate, train, gate, register);
* :mod:`learner.versions` — the round's registry reads (live version, carried examples)
  and automatic promotion;
* :mod:`learner.canary` / :mod:`learner.canary_controller` — canary decisions;
* :mod:`learner.actor` — the Ray actor that runs rounds in the background.
"""

from learner.curate import CuratedRound, curate
from learner.errors import (
    IncompatibleParent,
    InvalidExample,
    InvalidRegressionSet,
    LearnerError,
    NothingToTrain,
    OutputDirNotEmpty,
    TenantMismatch,
)
from learner.examples import Example, dump_jsonl, load_jsonl
from learner.gate import GateConfig, GateResult, RegressionRow, evaluate, load_regression_set
from learner.train import TrainConfig, TrainResult, train_adapter

__all__ = [
    "CuratedRound",
    "Example",
    "GateConfig",
    "GateResult",
    "IncompatibleParent",
    "InvalidExample",
    "InvalidRegressionSet",
    "LearnerError",
    "NothingToTrain",
    "OutputDirNotEmpty",
    "RegressionRow",
    "TenantMismatch",
    "TrainConfig",
    "TrainResult",
    "curate",
    "dump_jsonl",
    "evaluate",
    "load_jsonl",
    "load_regression_set",
    "train_adapter",
]
