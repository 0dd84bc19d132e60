"""Fixtures of the learner-loop tests: a SQLite registry, and learners over it and the
test's Redis prefix (``redis_url``, ``keys`` and ``client`` come from tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from learner.actor import LearnerSpec
from learner.gate import GateConfig
from learner.loop import Learner, LearnerConfig
from storage import ArtifactStore
from storage.db import open_registry
from tests.support.capitals import ONE_TEACHER

ROOT = Path(__file__).parents[3]
#: A learner in a process of its own, as the Ray actor runs it (it may be told to crash).
CHILD = """
import asyncio, sys, threading
from learner.actor import LearnerSpec, run_forever
spec = LearnerSpec.model_validate_json(sys.argv[1])
asyncio.run(run_forever(spec, threading.Event(), {}))
"""


@pytest.fixture
def registry(tmp_path):
    return open_registry(f"sqlite:///{tmp_path / 'registry.db'}")


@pytest.fixture
def new_learner(redis_url, keys, registry, tmp_path, tiny_model_dir):
    """``new_learner(**config)``: a learner of ``builtin:tiny`` on the test's Redis prefix
    and ``registry``; unless ``config`` says otherwise, a version that passes the gate
    goes live."""

    def make(**config) -> Learner:
        config.setdefault("gate", GateConfig(auto_promote="live", threads=1))
        _one_teacher_may_train(config)
        return Learner(redis_url=redis_url, keys=keys, sessions=registry,
                       artifacts=ArtifactStore(tmp_path / "artifacts"),
                       base_model=str(tiny_model_dir), base_model_name="builtin:tiny",
                       work_dir=tmp_path / "learner", config=LearnerConfig(**config))

    return make


@pytest.fixture
def learner_spec(redis_url, keys, tmp_path, tiny_model_dir):
    """``learner_spec(**config)``: the same learner as a ``LearnerSpec``, for the actor's
    loop (``run_forever``) or ``learner_process``."""

    def make(**config) -> LearnerSpec:
        _one_teacher_may_train(config)
        return LearnerSpec(redis_url=redis_url, redis_prefix=keys.prefix,
                           database_url=f"sqlite:///{tmp_path / 'registry.db'}",
                           artifacts_location=str(tmp_path / "artifacts"),
                           base_model=str(tiny_model_dir), base_model_name="builtin:tiny",
                           data_dir=str(tmp_path), config=LearnerConfig(**config))

    return make


@pytest.fixture
def learner_process():
    """``learner_process(spec)``: run the learner of ``spec`` in a child process until it
    exits (at a ``crash_at`` point it exits with status 17)."""

    def run(spec: LearnerSpec) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", CHILD, spec.model_dump_json()],
                              capture_output=True, text=True, timeout=600, cwd=ROOT)

    return run


def _one_teacher_may_train(config: dict) -> None:
    """These tests teach as one user (as `loraloop up` on loopback lets one do); the share
    cap and minimum of users that guard an exposed API have tests of their own."""
    for name, value in ONE_TEACHER.items():
        config.setdefault(name, value)
