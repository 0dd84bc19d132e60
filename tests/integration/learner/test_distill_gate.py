"""The gate's handoff slice: on held-out handed-off prompts the candidate must agree with
the upstream model more often than the reference does, and both rates are reported.

``builtin:tiny`` answers gibberish, so the upstream's answers are made from the models'
own greedy answers: the candidate's (it agrees, the base model does not) or the base
model's (the other way round). The rest of the gate passes on its own: the taught
examples are the candidate's answers to other prompts (its own answers gained on base).
"""

from __future__ import annotations

import json

import pytest

from learner.examples import Example
from learner.gate import GateConfig, evaluate
from learner.scoring import greedy_answers, limited_threads, load_tokenizer

SLICE = ["What is the capital of Peru?", "Name a colour.", "Tell me a joke.", "What is 2 + 2?"]
TAUGHT = ["Capital of Japan?", "Which city is the capital of Kenya?", "Say hello.",
          "What day is it?", "Count to three.", "Describe the sea.", "Name a fruit.",
          "What is a cat?"]
#: 8 of 8 taught gives P = 0.998; a slice 4 of 4 the wrong way, P(worse) = 0.969: at this
#: confidence only the handoff check can fail the candidate.
POLICY = dict(threads=1, confidence=0.995, handoff_min_slice=4)


def chats(questions):
    return [[{"role": "user", "content": q}] for q in questions]


def greedy(tiny_model_dir, adapter, questions, max_new_tokens=24):
    """The greedy answers the gate computes (same batch, same length, one thread)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with limited_threads(1):
        tokenizer = load_tokenizer(str(tiny_model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
        if adapter is not None:
            model = PeftModel.from_pretrained(model, str(adapter))
        return greedy_answers(model, tokenizer, chats(questions),
                              max_new_tokens=max_new_tokens)


def examples(questions, answers, source):
    return [Example(tenant="acme", user="u", interaction_id=f"{i:032x}", stream_id=f"1-{i}",
                    prompt=chat, completion=answer, desirable=True, source=source)
            for i, (chat, answer) in enumerate(zip(chats(questions), answers, strict=True))]


@pytest.fixture(scope="module")
def candidate(make_adapter):
    return make_adapter("handoff-candidate", r=8, seed=3)


@pytest.fixture(scope="module")
def answers(tiny_model_dir, candidate):
    ours = greedy(tiny_model_dir, candidate, SLICE)
    base = greedy(tiny_model_dir, None, SLICE)
    assert ours != base  # else the slice could not tell them apart
    return {"candidate": ours, "base": base,
            "taught": greedy(tiny_model_dir, candidate, TAUGHT)}


def judge(tiny_model_dir, candidate, answers, upstream, regression=None, **policy):
    taught = examples(TAUGHT, answers["taught"], "thumbs")
    holdout = examples(SLICE[:len(upstream)], upstream, "distill")
    return evaluate(base_model=str(tiny_model_dir), candidate_dir=candidate, reference_dir=None,
                    taught=taught, holdout=holdout, regression_set=regression,
                    config=GateConfig(**{**POLICY, **policy}))


def test_a_candidate_agreeing_with_the_upstream_more_than_live_passes(
        tiny_model_dir, candidate, answers, tmp_path):
    regression = tmp_path / "regression.jsonl"
    regression.write_text(json.dumps({"messages": chats(SLICE[:1])[0], "pattern": "."}) + "\n")
    result = judge(tiny_model_dir, candidate, answers, answers["candidate"], regression)
    metrics = result.metrics
    assert result.passed, result.reasons
    assert metrics["handoff_slice"] == 4 and metrics["handoff_check"] == "passed"
    assert metrics["handoff_agreement_candidate"] == 1.0
    assert metrics["handoff_agreement_reference"] < 1.0
    assert metrics["regression_rows"] == 1  # the general set is still checked
    assert "handoff 4/4 vs reference" in metrics["gate"]


def test_a_candidate_agreeing_less_than_live_fails_with_the_reason(
        tiny_model_dir, candidate, answers):
    result = judge(tiny_model_dir, candidate, answers, answers["base"])
    metrics = result.metrics
    assert not result.passed and result.auto_promote == "off"
    assert metrics["handoff_check"] == "failed"
    assert metrics["handoff_agreement_reference"] == 1.0
    assert metrics["handoff_agreement_candidate"] < 1.0
    [reason] = result.reasons  # taught and held out pass: the slice decides
    assert reason.startswith("handoff slice: the candidate agrees with the upstream model on")
    assert "the base version on 4" in reason


def test_a_slice_below_the_minimum_is_reported_and_skipped(tiny_model_dir, candidate, answers):
    result = judge(tiny_model_dir, candidate, answers, answers["base"], handoff_min_slice=5)
    metrics = result.metrics
    assert result.passed, result.reasons
    assert metrics["handoff_check"].startswith("skipped: 4 held-out handed-off prompts")
    assert metrics["handoff_agreement_reference"] == 1.0  # measured all the same
    nothing = judge(tiny_model_dir, candidate, answers, [])
    assert nothing.metrics["handoff_slice"] == 0
    assert nothing.metrics["handoff_check"] == "skipped: no handed-off prompts were held out"


def test_earlier_rounds_held_out_handoffs_fill_a_small_slice(tiny_model_dir, candidate, answers,
                                                             tmp_path):
    """A round that holds out one handed-off prompt is judged on the live version's held-out
    ones too (its round's, and those its own gate inherited), less any this round trains
    on; the version then carries them on for the next round."""
    from learner.agreement import earlier_handoffs
    from learner.examples import load_from_adapter, save_with_adapter

    rows = [Example(tenant="acme", user="u", interaction_id=f"{i:032x}", stream_id=f"1-{i}",
                    prompt=chat, completion=answer, desirable=True, source="distill")
            for i, (chat, answer) in enumerate(zip(chats(SLICE), answers["candidate"],
                                                   strict=True))]
    live = tmp_path / "live"
    live.mkdir()
    save_with_adapter([], live, holdout=rows[1:3], handoff_slice=rows[:1])
    earlier = earlier_handoffs(live, trained=set(), limit=16)
    assert [e.interaction_id for e in earlier] == [r.interaction_id for r in rows[:3]]
    assert earlier_handoffs(live, trained={rows[0].interaction_id}, limit=16) == rows[1:3]
    assert earlier_handoffs(None, trained=set(), limit=16) == []

    taught = examples(TAUGHT, answers["taught"], "thumbs")
    result = evaluate(base_model=str(tiny_model_dir), candidate_dir=candidate,
                      reference_dir=None, taught=taught, holdout=rows[3:],
                      earlier_handoffs=earlier, config=GateConfig(**POLICY))
    assert result.metrics["handoff_slice"] == 4  # 1 of this round's + 3 earlier
    assert result.metrics["handoff_check"] == "passed", result.metrics["handoff_check"]

    save_with_adapter([], tmp_path, holdout=rows[3:], handoff_slice=earlier)
    assert len(load_from_adapter(tmp_path, "handoff_slice")) == 3
    assert len(earlier_handoffs(tmp_path, trained=set(), limit=16)) == 4
