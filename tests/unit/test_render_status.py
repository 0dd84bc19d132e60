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


def test_learner_status_shows_the_next_trigger_progress_and_feedback_to_live(capsys):
    import time

    from loraloop import render as shown

    now = time.time()
    base = {"updated_at": now, "backlog": 5, "rounds": 2, "recent_rounds": [
        {"tenant": "acme", "version": "ab" * 32, "outcome": "live", "seconds": 12.3,
         "feedback_to_live_s": 40.5, "settled": True},
        {"tenant": "acme", "version": "cd" * 32, "outcome": "rejected: worse", "seconds": 9.0,
         "feedback_to_live_s": None, "settled": True, "never_live": "rejected"},
        {"tenant": "acme", "version": None, "outcome": "nothing to train", "seconds": 0.1}]}
    shown.learner_status({**base, "next_trigger": {
        "reason": "settle", "backlog": 5, "needed": 8, "settle_needed": 4, "settle_s": 10,
        "max_interval_s": 300, "deferred": 0, "in_s": 6, "at": now + 6}}, [])
    out = capsys.readouterr().out
    assert "next round   in 6 s: the pause after 5 event(s)" in out
    assert f"{'ab' * 6}: live, 12.3 s, feedback-to-live 40.5 s" in out
    assert "feedback-to-live never (rejected)" in out and "- (no version)" in out
    shown.learner_status({**base, "round": {"tenant": "acme", "phase": "training",
                                            "started_at": now, "step": 12, "steps": 48}}, [])
    out = capsys.readouterr().out
    assert "training (0 s in, step 12/48)" in out and "after the one running now" in out
