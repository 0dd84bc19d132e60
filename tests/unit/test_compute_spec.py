"""What a request may ask of test-time compute, and the 400s for what it may not."""

from __future__ import annotations

import pytest

from serving.compute.answers import Vote, normalise
from serving.compute.spec import ComputeConfig, ComputeSpec, Effort, plan_for
from serving.errors import InvalidCompute
from serving.http_errors import error_body_for, rule_for
from serving.schema import ChatCompletionRequest

CONFIG = ComputeConfig()


def test_a_request_without_compute_is_a_plain_single_answer():
    assert plan_for("acme", None, None, 1, CONFIG) is None
    assert plan_for("acme", None, "none", 1, CONFIG) is None


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_reasoning_effort_maps_to_the_configured_levels(effort):
    plan = plan_for("acme", None, effort, 1, CONFIG)
    assert plan is not None and plan.strategy == CONFIG.efforts[effort].strategy


def test_a_tenant_may_define_its_own_levels():
    config = ComputeConfig(tenant_efforts={"acme": {"high": Effort(strategy="best_of_n", n=6)}})
    plan = plan_for("acme", None, "high", 1, config)
    assert (plan.strategy, plan.n) == ("best_of_n", 6)
    assert plan_for("other", None, "high", 1, config).strategy == "budget"


def test_adaptive_probes_as_the_operator_configured_unless_the_request_asks():
    from serving.compute.spec import AdaptiveConfig

    config = ComputeConfig(adaptive=AdaptiveConfig(probe_n=3),
                           default_strategy={"acme": "adaptive"})
    assert plan_for("acme", ComputeSpec(strategy="adaptive"), None, 1, config).n == 3
    assert plan_for("acme", None, "low", 1, config).n == 3  # the default low level
    assert plan_for("acme", None, None, 1, config).n == 3  # the tenant's default strategy
    assert plan_for("acme", ComputeSpec(strategy="adaptive", n=2), None, 1, config).n == 2
    # A level's own n is kept, but not for a strategy the request switched to.
    levels = {"acme": {"high": Effort(strategy="best_of_n", n=6)}}
    config = config.model_copy(update={"tenant_efforts": levels})
    assert plan_for("acme", ComputeSpec(strategy="adaptive"), "high", 1, config).n == 3


def test_the_extension_object_overrides_the_effort_level():
    spec = ComputeSpec(strategy="best_of_n", n=3, aggregator="scorer")
    plan = plan_for("acme", spec, "high", 1, CONFIG)
    assert (plan.strategy, plan.n, plan.aggregator) == ("best_of_n", 3, "scorer")


@pytest.mark.parametrize(("spec", "effort", "param", "words"), [
    (ComputeSpec(strategy="best_of_n", n=9), None, "loraloop.n", "cap of 8"),
    (ComputeSpec(strategy="best_of_n", n=1), None, "loraloop.n", "n >= 2"),
    (ComputeSpec(strategy="budget", max_thinking_tokens=5000), None,
     "loraloop.max_thinking_tokens", "cap of 1024"),
    (ComputeSpec(strategy="budget", min_thinking_tokens=50, max_thinking_tokens=10), None,
     "loraloop.min_thinking_tokens", "above max_thinking_tokens=10"),
    (ComputeSpec(strategy="refine", rounds=9), None, "loraloop.rounds", "cap of 3"),
    (ComputeSpec(strategy="refine", aggregator="vote"), None, "loraloop.aggregator",
     "not to 'refine'"),
    (None, "extreme", "reasoning_effort", "'extreme' is not one of"),
])
def test_what_is_not_allowed_is_a_400_naming_the_field(spec, effort, param, words):
    with pytest.raises(InvalidCompute) as caught:
        plan_for("acme", spec, effort, 1, CONFIG)
    assert caught.value.param == param and words in str(caught.value)
    assert rule_for(caught.value).status == 400
    assert error_body_for(caught.value)["error"]["param"] == param


def test_choices_and_a_strategy_do_not_mix():
    with pytest.raises(InvalidCompute, match="n=2 choices"):
        plan_for("acme", ComputeSpec(strategy="best_of_n", n=4), None, 2, CONFIG)


def test_unknown_keys_of_the_extension_are_refused():
    with pytest.raises(ValueError, match="strategee"):
        ChatCompletionRequest.model_validate({
            "model": "acme", "messages": [{"role": "user", "content": "hi"}],
            "loraloop": {"strategee": "best_of_n"}})


@pytest.mark.parametrize(("a", "b"), [
    ("The answer is 42.", "42"), ("Final answer: 1,234", "1234"), ("Paris.", "paris"),
    ("  the Paris!", "Paris"),
])
def test_answers_are_compared_after_normalising(a, b):
    assert normalise(a) == normalise(b)


def test_a_vote_is_settled_when_the_rest_cannot_change_it():
    vote = Vote(5)
    vote.add(0, "4")
    vote.add(1, "four")
    vote.add(2, "4")
    assert not vote.settled  # 2 to 1 with two to come
    vote.add(3, "4.")
    assert vote.settled and vote.winner() == ("4", 0) and vote.margin == 0.75
