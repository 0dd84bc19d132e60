"""The refusal score of ``serving.refusals.RefusalThrottle``: it leaks away at the
configured rate, and the addresses it remembers are bounded."""

from __future__ import annotations

from serving.refusals import RefusalConfig, RefusalThrottle, address_of


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_score_leaks_away_at_the_forgiving_rate():
    clock = Clock()
    throttle = RefusalThrottle(None, config=RefusalConfig(limit=10, forgive_per_s=2),
                               clock=clock)
    for _ in range(10):
        throttle._refused("10.0.0.1")
    assert throttle.score("10.0.0.1") == 10
    clock.now += 1.5
    assert throttle.score("10.0.0.1") == 7
    clock.now += 100
    assert throttle.score("10.0.0.1") == 0 and throttle.score("10.0.0.2") == 0


def test_the_most_forgiven_addresses_are_forgotten_first():
    clock = Clock()
    throttle = RefusalThrottle(None, config=RefusalConfig(max_addresses=4, forgive_per_s=1),
                               clock=clock)
    for i in range(4):
        for _ in range(i + 1):
            throttle._refused(f"10.0.0.{i}")
    throttle._refused("10.0.0.9")  # the fifth address: the two lowest scores go
    assert sorted(throttle._scores) == ["10.0.0.2", "10.0.0.3", "10.0.0.9"]


def test_the_address_is_the_peers_unless_a_trusted_header_is_configured():
    scope = {"client": ("127.0.0.5", 4000),
             "headers": [(b"x-forwarded-for", b"6.6.6.6, 10.1.1.1")]}
    assert address_of(scope, None) == "127.0.0.5"
    assert address_of(scope, "X-Forwarded-For") == "10.1.1.1"  # the proxy's own entry
    assert address_of({"client": None, "headers": []}, None) is None
