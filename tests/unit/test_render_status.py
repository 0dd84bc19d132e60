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
