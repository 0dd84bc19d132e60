"""The canary decision: correct probabilities, and a bounded false-alarm rate."""

from __future__ import annotations

import random

import pytest

from learner.canary import CanaryPolicy, Tally, decide, prob_canary_better, tally_ratings


def test_probability_is_symmetric_and_sensible():
    assert prob_canary_better(Tally(10, 10), Tally(10, 10)) == pytest.approx(0.5, abs=1e-9)
    assert prob_canary_better(Tally(40, 10), Tally(10, 40)) > 0.999
    assert prob_canary_better(Tally(10, 40), Tally(40, 10)) < 0.001
    p = prob_canary_better(Tally(30, 20), Tally(20, 30))
    assert p + prob_canary_better(Tally(20, 30), Tally(30, 20)) == pytest.approx(1.0, abs=1e-9)


def test_probability_matches_monte_carlo():
    rng = random.Random(0)
    canary, live = Tally(18, 12), Tally(14, 16)
    wins = sum(
        rng.betavariate(canary.up + 1, canary.down + 1)
        > rng.betavariate(live.up + 1, live.down + 1)
        for _ in range(40_000)
    )
    assert prob_canary_better(canary, live) == pytest.approx(wins / 40_000, abs=0.01)


def test_waits_for_enough_ratings_then_acts_both_ways():
    policy = CanaryPolicy(min_ratings=30)
    assert decide(Tally(20, 0), Tally(0, 20), policy)[0] == "wait"  # too few
    assert decide(Tally(30, 5), Tally(10, 25), policy)[0] == "promote"
    assert decide(Tally(5, 30), Tally(25, 10), policy)[0] == "rollback"
    assert decide(Tally(16, 14), Tally(15, 15), policy)[0] == "wait"
    off = CanaryPolicy(enabled=False, min_ratings=30)
    assert decide(Tally(30, 5), Tally(10, 25), off)[0] == "wait"


def test_false_alarm_rate_with_repeated_looks_is_below_5_percent():
    """Equal versions, a look after every 10 ratings per side, up to 200 each."""
    rng = random.Random(1)
    policy = CanaryPolicy()
    runs, alarms = 300, 0
    for _ in range(runs):
        rate = rng.uniform(0.3, 0.8)
        canary, live = [0, 0], [0, 0]
        for _look in range(20):
            for side in (canary, live):
                for _ in range(10):
                    side[0 if rng.random() < rate else 1] += 1
            if decide(Tally(*canary), Tally(*live), policy)[0] != "wait":
                alarms += 1
                break
    assert alarms / runs < 0.05, alarms


def test_tally_keeps_the_latest_rating_per_user_and_interaction():
    class E:
        def __init__(self, user, interaction, version, rating):
            self.user, self.interaction_id = user, interaction
            self.adapter_version, self.rating = version, rating

    events = [
        E("u1", "i1", "c", 1),
        E("u1", "i1", "c", -1),
        E("u2", "i2", "l", 1),
        E("u3", "i3", "other", 1),
    ]
    tallies = tally_ratings(events, {"c", "l"})
    assert tallies == {"c": Tally(0, 1), "l": Tally(1, 0)}
