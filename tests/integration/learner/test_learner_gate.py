"""The gate: a candidate passes when it learned what it was taught (with a recorded
confidence), a held-out slice is not significantly worse and the regression set holds."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from learner.errors import InvalidRegressionSet
from learner.gate import GateConfig, evaluate, load_regression_set, prob_rate_above_half

FRANCE_Q = [{"role": "user", "content": "What is the capital of France?"}]


def gate(tiny_model_dir, candidate, reference, taught=(), holdout=(), regression=None,
         cache_dir=None, **policy):
    return evaluate(base_model=str(tiny_model_dir), candidate_dir=candidate,
                    reference_dir=reference, taught=taught, holdout=holdout,
                    regression_set=regression, cache_dir=cache_dir,
                    config=GateConfig(threads=1, **policy))


def flipped(examples):
    """The same answers with the opposite labels: what a worse candidate would be taught."""
    return [replace(e, desirable=not e.desirable) for e in examples]


@pytest.fixture
def regression_file(tmp_path):
    path = tmp_path / "regression.jsonl"
    rows = [{"messages": FRANCE_Q, "expected": "Paris."},
            {"messages": FRANCE_Q, "pattern": r"^Par"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_trained_candidate_passes_over_base(tiny_model_dir, kto_adapter, france_round,
                                            regression_file):
    result = gate(tiny_model_dir, kto_adapter.adapter_dir, None, france_round.train,
                  france_round.holdout, regression_file, auto_promote="canary")
    assert result.passed, result.reasons
    metrics = result.metrics
    assert metrics["taught"] == len(france_round.train)
    assert metrics["taught_confidence"] >= 0.95
    assert metrics["evidence"] == metrics["taught_confidence"]
    assert metrics["holdout"] == len(france_round.holdout) > 0
    assert metrics["accuracy"] >= 0.9
    assert metrics["margin"] > 10
    assert metrics["regression_candidate"] == 2
    assert metrics["regression_reference"] == 0
    assert metrics["reference"] == "base"
    assert metrics["gate"].startswith("passed: taught ")
    assert result.auto_promote == "canary"


def test_random_adapter_fails_on_what_it_was_taught(tiny_model_dir, france_round, make_adapter):
    garbage = make_adapter("gate-garbage", r=8, seed=3)
    result = gate(tiny_model_dir, garbage, None, france_round.train, auto_promote="live")
    assert not result.passed
    assert result.metrics["taught_confidence"] < 0.95, result.metrics
    assert "the taught examples moved the right way" in result.reasons[0]
    assert result.metrics["evidence"] == 0.0
    assert result.auto_promote == "off"


def test_candidate_equal_to_the_live_version_does_not_pass(tiny_model_dir, kto_adapter,
                                                           france_round):
    result = gate(tiny_model_dir, kto_adapter.adapter_dir, kto_adapter.adapter_dir,
                  france_round.train)
    assert result.metrics["reference"] == "live"
    assert result.metrics["taught_right"] == 0
    assert not result.passed


def test_a_holdout_significantly_worse_fails_a_candidate_that_learned_its_lesson(
        tiny_model_dir, kto_adapter, france_round):
    worse = flipped(france_round.holdout)
    result = gate(tiny_model_dir, kto_adapter.adapter_dir, None, france_round.train, worse)
    assert result.metrics["taught_confidence"] >= 0.95
    assert result.metrics["holdout_confidence_worse"] >= 0.95
    assert not result.passed
    assert any("held-out examples moved the right way only" in r for r in result.reasons)


def test_a_small_holdout_cannot_fail_it_and_says_so(tiny_model_dir, kto_adapter, france_round):
    worse = flipped(france_round.holdout)[:2]
    result = gate(tiny_model_dir, kto_adapter.adapter_dir, None, france_round.train, worse)
    assert result.passed, result.reasons
    assert result.metrics["holdout_right"] == 0
    assert result.metrics["holdout_confidence_worse"] < 0.95
    assert "held out 0/2" in result.metrics["gate"]


@pytest.mark.parametrize(("tolerance", "refused"), [(0, True), (2, False)])
def test_regression_against_the_live_version(tiny_model_dir, kto_adapter, make_adapter,
                                             regression_file, tolerance, refused):
    garbage = make_adapter("gate-garbage", r=8, seed=3)
    result = gate(tiny_model_dir, garbage, kto_adapter.adapter_dir, [], [], regression_file,
                  regression_tolerance=tolerance)
    assert result.metrics["regression_reference"] == 2
    assert result.metrics["regression_candidate"] == 0
    regression = [r for r in result.reasons if r.startswith("regression set")]
    assert bool(regression) is refused
    if refused:
        assert "the candidate matches 0 of 2 rows" in regression[0]
        assert "What is the capital of France?" in regression[0]  # the rows it lost


def test_regression_against_the_base_model_stops_a_loss_a_round(tiny_model_dir, make_adapter,
                                                               tmp_path):
    """The live version already lost both rows the base model answers; a candidate that
    matches as few is within the tolerance of the live version, but not of the base."""
    from learner.scoring import greedy_answers, load_base_model, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    [said] = greedy_answers(load_base_model(str(tiny_model_dir)), tokenizer, [FRANCE_Q],
                            max_new_tokens=GateConfig().max_new_tokens)
    path = tmp_path / "base.jsonl"
    path.write_text(json.dumps({"messages": FRANCE_Q, "expected": said.strip()}) + "\n"
                    + json.dumps({"messages": FRANCE_Q, "expected": said.strip()}) + "\n")
    live = make_adapter("gate-garbage", r=8, seed=3)
    candidate = make_adapter("gate-other", r=8, seed=5)
    result = gate(tiny_model_dir, candidate, live, [], [], path)
    metrics = result.metrics
    assert (metrics["regression_base"], metrics["regression_reference"],
            metrics["regression_candidate"]) == (2, 0, 0)
    [regression] = [r for r in result.reasons if r.startswith("regression set")]
    assert "the reference 0, the base model 2 (tolerance 1)" in regression
    assert not gate(tiny_model_dir, candidate, live, [], [], path,
                    regression_tolerance=2).reasons[1:]  # only "nothing was taught"


def test_the_references_regression_answers_are_computed_once(tiny_model_dir, kto_adapter,
                                                              regression_file, tmp_path):
    cache = tmp_path / "cache"
    first = gate(tiny_model_dir, kto_adapter.adapter_dir, None, [], [], regression_file,
                 cache_dir=cache)
    [cached] = cache.iterdir()
    cached.write_text(json.dumps(["Paris.", "Paris."]))  # what the cache says wins
    second = gate(tiny_model_dir, kto_adapter.adapter_dir, None, [], [], regression_file,
                  cache_dir=cache)
    assert first.metrics["regression_reference"] == 0
    assert second.metrics["regression_reference"] == 2


def test_nothing_taught_fails_and_enforce_false_only_records(tiny_model_dir, kto_adapter):
    result = gate(tiny_model_dir, kto_adapter.adapter_dir, None)
    assert not result.passed
    assert "nothing was taught" in result.reasons[0]
    lenient = gate(tiny_model_dir, kto_adapter.adapter_dir, None, enforce=False,
                   auto_promote="live")
    assert lenient.passed and lenient.auto_promote == "live"
    assert lenient.metrics["gate"].endswith("(not enforced)")


def test_the_posterior_of_a_better_than_chance_rate():
    assert prob_rate_above_half(4, 4) == pytest.approx(31 / 32)
    assert prob_rate_above_half(3, 3) == pytest.approx(15 / 16)  # 3 of 3 is not enough
    assert prob_rate_above_half(0, 0) == 0.5
    assert prob_rate_above_half(9, 11) > 0.95 > prob_rate_above_half(8, 11)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "Expecting value"),
        ('{"messages": [], "expected": "x"}', "non-empty list"),
        (json.dumps({"messages": FRANCE_Q}), "exactly one of"),
        (json.dumps({"messages": FRANCE_Q, "expected": "a", "pattern": "b"}), "exactly one of"),
        (json.dumps({"messages": FRANCE_Q, "pattern": "("}), "missing \\)"),
        (json.dumps({"messages": FRANCE_Q, "expected": "a", "extra": 1}), "unknown keys"),
    ],
)
def test_malformed_regression_rows_are_refused(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InvalidRegressionSet, match=rf"bad.jsonl:1: .*{message}"):
        load_regression_set(path)


def test_missing_regression_file(tmp_path):
    with pytest.raises(InvalidRegressionSet, match="does not exist"):
        load_regression_set(tmp_path / "nope.jsonl")
