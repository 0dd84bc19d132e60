"""The gate: a trained candidate passes over base on the held-out slice, a random one fails;
the regression set (expected / pattern rows) is checked with its tolerance."""

from __future__ import annotations

import json

import pytest

from learner.errors import InvalidRegressionSet
from learner.gate import GateConfig, evaluate, load_regression_set

FRANCE_Q = [{"role": "user", "content": "What is the capital of France?"}]


def gate(tiny_model_dir, candidate, reference, holdout, regression=None, **policy):
    return evaluate(base_model=str(tiny_model_dir), candidate_dir=candidate,
                    reference_dir=reference, holdout=holdout, regression_set=regression,
                    config=GateConfig(threads=1, **policy))


@pytest.fixture
def regression_file(tmp_path):
    path = tmp_path / "regression.jsonl"
    rows = [{"messages": FRANCE_Q, "expected": "Paris."},
            {"messages": FRANCE_Q, "pattern": r"^Par"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_trained_candidate_passes_over_base(tiny_model_dir, kto_adapter, france_round,
                                            regression_file):
    result = gate(tiny_model_dir, kto_adapter.adapter_dir, None, france_round.holdout,
                  regression_file, auto_promote="canary")
    assert result.passed, result.reasons
    assert result.metrics["holdout"] == len(france_round.holdout) > 0
    assert result.metrics["accuracy"] >= 0.9
    assert result.metrics["margin"] > 10
    assert result.metrics["regression_candidate"] == 2
    assert result.metrics["regression_reference"] == 0
    assert result.metrics["reference"] == "base"
    assert result.auto_promote == "canary"


def test_random_adapter_fails(tiny_model_dir, kto_adapter, france_round, make_adapter):
    garbage = make_adapter("gate-garbage", r=8, seed=3)
    result = gate(tiny_model_dir, garbage, None, france_round.holdout, auto_promote="live")
    assert not result.passed
    assert result.metrics["accuracy"] < 0.6 or result.metrics["margin"] < 0, result.metrics
    assert result.reasons
    assert result.auto_promote == "off"


def test_candidate_equal_to_the_live_version_does_not_pass(tiny_model_dir, kto_adapter,
                                                           france_round):
    result = gate(tiny_model_dir, kto_adapter.adapter_dir, kto_adapter.adapter_dir,
                  france_round.holdout)
    assert result.metrics["reference"] == "live"
    assert result.metrics["accuracy"] == 0.0
    assert not result.passed
    assert any("accuracy" in r for r in result.reasons)


@pytest.mark.parametrize(("tolerance", "passes"), [(0, False), (2, True)])
def test_regression_against_the_live_version(tiny_model_dir, kto_adapter, make_adapter,
                                             regression_file, tolerance, passes):
    garbage = make_adapter("gate-garbage", r=8, seed=3)
    result = gate(tiny_model_dir, garbage, kto_adapter.adapter_dir, [], regression_file,
                  allow_empty_holdout=True, regression_tolerance=tolerance)
    assert result.metrics["regression_reference"] == 2
    assert result.metrics["regression_candidate"] == 0
    assert result.passed is passes
    if not passes:
        assert "regression set: the candidate matches 0 of 2 rows" in result.reasons[0]


def test_empty_holdout_fails_unless_allowed(tiny_model_dir, kto_adapter):
    result = gate(tiny_model_dir, kto_adapter.adapter_dir, None, [])
    assert not result.passed
    assert "no held-out examples" in result.reasons[0]


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
