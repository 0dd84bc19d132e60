"""learner.health.StepHealth: failures counted, backoff doubling to a cap, a success ends
the streak but not the total."""

from __future__ import annotations

import pytest

from learner.health import StepHealth


def test_backoff_doubles_to_the_cap_and_a_success_ends_the_streak():
    health = StepHealth(base_delay_s=1, max_delay_s=5)
    delays = [health.failed(RuntimeError(f"boom {i}")) for i in range(5)]
    assert delays == [1, 2, 4, 5, 5]
    report = health.report()
    assert report["failing"]["consecutive"] == 5 and report["step_failures_total"] == 5
    assert report["failing"]["last_error"] == "RuntimeError: boom 4"
    health.succeeded()
    report = health.report()
    assert report["failing"] is None and report["step_failures_total"] == 5
    assert health.failed(OSError("again")) == 1


def test_a_bad_backoff_is_refused_naming_the_values():
    with pytest.raises(ValueError, match="base_delay_s=0"):
        StepHealth(base_delay_s=0)
