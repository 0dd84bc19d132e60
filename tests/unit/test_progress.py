"""The CLI's progress off a terminal: one plain line per start-up step, round phase,
training milestone and finished round (loraloop/progress.py)."""

from __future__ import annotations

import re

import pytest

from loraloop.progress import RoundProgress, StartupSteps


def test_each_startup_step_says_how_long_it_took_and_a_failed_one_says_so():
    lines: list[str] = []
    steps = StartupSteps(lines.append, live=False)
    with steps("redis"):
        pass
    with pytest.raises(RuntimeError), steps("ray"):
        raise RuntimeError("no cluster")
    assert re.fullmatch(r"started redis in \d+\.\d\d s", lines[0])
    assert re.fullmatch(r"starting ray failed after \d+\.\d\d s", lines[1])
    assert list(steps.taken) == ["redis"]


def test_a_round_shows_its_phases_its_last_training_step_and_its_outcome():
    lines: list[str] = []
    shown = RoundProgress(lines.append, live=False, step_every_s=3600)
    shown({"rounds": 0})
    for status in (
        {"rounds": 0, "round": {"tenant": "acme", "phase": "reading"}},
        {"rounds": 0, "round": {"tenant": "acme", "phase": "training", "attempt": 1}},
        {"rounds": 0, "round": {"tenant": "acme", "phase": "training", "attempt": 1,
                                "step": 1, "steps": 3}},
        {"rounds": 0, "round": {"tenant": "acme", "phase": "training", "attempt": 1,
                                "step": 2, "steps": 3}},
        {"rounds": 0, "round": {"tenant": "acme", "phase": "training", "attempt": 1,
                                "step": 3, "steps": 3}},
        {"rounds": 0, "round": {"tenant": "acme", "phase": "gate", "attempt": 1}},
        {"rounds": 1, "last_round": {"tenant": "acme", "version": "ab" * 32,
                                     "outcome": "gated", "timings": {"read_s": 0.5,
                                                                     "train_s": 2.0}}},
    ):
        shown(status)
    assert lines == [
        "round for acme: reading",
        "round for acme: training",
        "round for acme: training step 1/3",  # the first, then at most hourly here
        "round for acme: training step 3/3",  # and always the last
        "round for acme: gate",
        f"round 1 for acme: {'ab' * 6} gated in 2.5 s (read 0.50 s, train 2.00 s)",
    ]
