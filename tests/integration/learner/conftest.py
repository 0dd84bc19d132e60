"""Learner fixtures: a curated France round and the KTO adapter trained on it, once per session.

Training runs with one torch thread and few epochs so the folder stays quick
on a 2-core machine shared with other test runs.
"""

from __future__ import annotations

import pytest

from learner.curate import CuratedRound, curate
from learner.train import train_adapter
from tests.integration.learner.learner_helpers import FAST, TENANT, france_feedback


@pytest.fixture(scope="session")
def france_round() -> CuratedRound:
    """128 thumbs (16 users), 20% held out."""
    return curate(france_feedback(128), tenant=TENANT, per_user_cap=50, holdout_fraction=0.2,
                  seed=7)


@pytest.fixture(scope="session")
def kto_adapter(tiny_model_dir, france_round, tmp_path_factory):
    """The KTO adapter trained on the France round (trained once per session)."""
    return train_adapter(base_model=str(tiny_model_dir), base_model_name="builtin:tiny",
                         examples=france_round.train,
                         output_dir=tmp_path_factory.mktemp("kto") / "adapter", config=FAST)
