"""`loraloop status` shows what each replica is retrying, so an operator sees a transient
adapter load problem (issue 13, item 1) without reading logs."""

from __future__ import annotations

from loraloop import render


def test_status_shows_retrying_loads_and_their_counts(capsys):
    render.stack_status({
        "http": "http://127.0.0.1:8000",
        "waiting_for_operator": [],
        "replica_status": [{
            "adapters": [],
            "queue_depth": 0,
            "adapter_manager": {
                "name": "replica-1", "routes": {}, "swaps": [],
                "retrying": {"ab" * 32: {"kind": "transient", "attempts": 3, "since": 0.0,
                                         "error": "store unavailable", "retry_in_s": 4.0}},
                "load_errors": {"transient": 3},
            },
        }],
    })
    out = capsys.readouterr().out
    assert f"retrying {'ab' * 6} (transient, attempt 3, next in 4.0 s): store unavailable" in out
    assert "load errors {'transient': 3}" in out


def test_status_shows_compute_handoffs_and_thumbs_per_strategy(capsys):
    render.stack_status({
        "http": "http://127.0.0.1:8000",
        "waiting_for_operator": [],
        "replica_status": [{
            "adapters": [], "queue_depth": 0, "adapter_manager": None,
            "compute": {"upstream": {"breaker": {"state": "open", "failures": 3},
                                     "tenants": {"acme": {"handoffs": 2}}},
                        "thresholds": {}, "bandit_errors": 0},
        }],
        "compute": {"acme": {"cd" * 32: {"adaptive": {
            "requests": 10, "compute_tokens_per_request": 88.5, "handoffs_per_request": 0.3,
            "upstream_tokens": 420, "fallbacks": 1, "thumbs_up_rate": 0.75}}}},
    })
    out = capsys.readouterr().out
    assert "upstream circuit open" in out
    row = next(line for line in out.splitlines() if "adaptive" in line)
    for cell in ("acme", "cd" * 6, "10", "88.5", "0.3", "420", "0.75"):
        assert cell in row
