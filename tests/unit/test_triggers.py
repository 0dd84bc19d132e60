"""The learner's next-trigger reading agrees with the rule it acts on (learner/triggers.py)."""

from __future__ import annotations

import itertools

from learner.config import LearnerConfig
from learner.triggers import is_due, next_trigger

CONFIG = LearnerConfig(min_new_examples=8, min_round_examples=4, settle_s=10,
                       max_interval_s=300)


def reading(**clock):
    return next_trigger(CONFIG, **clock, now=1000.0)


def test_a_round_is_due_exactly_when_the_reading_says_now():
    for waiting, deferred, since_round, since_arrival in itertools.product(
            range(0, 12), (0, 3, 8), (0.0, 299.0, 300.0, 500.0), (0.0, 9.0, 10.0, 60.0)):
        clock = {"waiting": waiting, "deferred": deferred, "since_round_s": since_round,
                 "since_arrival_s": since_arrival}
        trigger = reading(**clock)
        assert is_due(CONFIG, **clock) == (trigger["in_s"] == 0), (clock, trigger)


def test_the_reading_names_the_first_trigger_and_when():
    idle = reading(waiting=0, deferred=0, since_round_s=5, since_arrival_s=5)
    assert idle["reason"] == "waiting_for_feedback" and idle["at"] is None
    assert reading(waiting=9, deferred=0, since_round_s=5, since_arrival_s=0)["reason"] == "burst"
    settle = reading(waiting=5, deferred=0, since_round_s=5, since_arrival_s=4)
    assert (settle["reason"], settle["in_s"], settle["at"]) == ("settle", 6, 1006)
    few = reading(waiting=2, deferred=0, since_round_s=100, since_arrival_s=50)
    assert (few["reason"], few["in_s"]) == ("interval", 200)
    # Events the last round could not use wait for new ones or the interval.
    held = reading(waiting=9, deferred=9, since_round_s=100, since_arrival_s=50)
    assert (held["reason"], held["in_s"], held["deferred"]) == ("interval", 200, 9)
