"""The anchored objective (the default method) on the tiny model: corrections become likely,
disliked answers unlikely, and the anchors hold the base model's other answers.

Mechanics only: what it does to a real model is measured by bench/learning_efficacy.py.
"""

from __future__ import annotations

import pytest

from learner.anchors import anchor_prompts, forget_answers
from learner.train import TrainConfig, train_adapter
from tests.integration.learner.learner_helpers import TENANT, interaction, logprobs, probe, rate
from tests.support.learning import FACTS

TAUGHT = FACTS[:4]
WRONG_ANSWER = "I am not sure, maybe it is Zog."
DISLIKED = [("Tell me a joke.", "No."), ("Say hello.", "Go away.")]


def corrections():
    """Four corrected answers, and two answers disliked without a correction."""
    from learner.curate import curate

    joined = [rate(interaction(f.question, WRONG_ANSWER, user=f"u{i}"), -1, user=f"u{i}",
                   correction=f.correction) for i, f in enumerate(TAUGHT)]
    joined += [rate(interaction(q, a, user=f"d{i}"), -1, user=f"d{i}")
               for i, (q, a) in enumerate(DISLIKED)]
    return curate(joined, tenant=TENANT, per_user_cap=50, holdout_fraction=0.0).train


def train(tiny_model_dir, out, **overrides):
    # Anchors answered by earlier tests in this process could differ in a random model's
    # near-ties; the thresholds below were measured with answers computed here.
    forget_answers()
    config = TrainConfig(threads=1, epochs=8, learning_rate=1e-2, seed=0, **overrides)
    return train_adapter(base_model=str(tiny_model_dir), base_model_name="builtin:tiny",
                         examples=corrections(), output_dir=out, config=config)


@pytest.fixture(scope="module")
def anchored(tiny_model_dir, tmp_path_factory):
    return train(tiny_model_dir, tmp_path_factory.mktemp("anchored") / "adapter")


@pytest.fixture(scope="module")
def unanchored(tiny_model_dir, tmp_path_factory):
    return train(tiny_model_dir, tmp_path_factory.mktemp("unanchored") / "adapter",
                 anchor_weight=0.0)


def test_corrections_rise_and_disliked_answers_fall(tiny_model_dir, anchored):
    assert anchored.metrics["method"] == "anchored"
    assert anchored.metrics["anchors"] > 0 and anchored.metrics["loss_kl"] >= 0
    assert anchored.metrics["loss_npo"] > 0
    corrected = [probe(f.question, [f.correction])[0] for f in TAUGHT]
    disliked = [probe(q, [a])[0] for q, a in DISLIKED]
    before = logprobs(tiny_model_dir, None, corrected + disliked)
    after = logprobs(tiny_model_dir, anchored.adapter_dir, corrected + disliked)
    for i, example in enumerate(corrected + disliked):
        if i < len(corrected):
            assert after[i] > before[i] + 5, (example.prompt, before[i], after[i])
        else:
            assert after[i] < before[i] - 1, (example.prompt, before[i], after[i])


@pytest.mark.parametrize(("seed", "factor"), [(0, 0.5), (99, 0.8)], ids=["anchored", "unseen"])
def test_anchors_keep_the_base_models_answers_elsewhere(tiny_model_dir, anchored, unanchored,
                                                        seed, factor):
    """On neighbours of the taught prompts, the base model's own answers keep their
    likelihood far better with anchors than without: on the neighbours a round anchored
    (seed 0, as training drew them), and less so, on neighbours it never saw."""
    from transformers import AutoModelForCausalLM

    from learner.anchors import answer
    from learner.scoring import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    chats = anchor_prompts([[{"role": "user", "content": f.question}] for f in TAUGHT],
                           per_prompt=3, retain=0, tokenizer=tokenizer, seed=seed)
    probes = []
    for anchor in answer(base, tokenizer, chats, max_new_tokens=12):  # how answers begin
        text = tokenizer.decode(anchor.answer_ids, skip_special_tokens=True)
        probes.extend(probe(anchor.prompt[-1]["content"], [text]))

    def drift(adapter):
        before = logprobs(tiny_model_dir, None, probes)
        after = logprobs(tiny_model_dir, adapter, probes)
        return sum(abs(a - b) for a, b in zip(after, before, strict=True)) / len(probes)

    kept, lost = drift(anchored.adapter_dir), drift(unanchored.adapter_dir)
    assert kept < factor * lost, (kept, lost)


def test_training_leaves_autocast_as_it_found_it(tiny_model_dir, tmp_path):
    """bf16 autocast is for the training step only: a context entered again inside itself
    once left it on for the rest of the thread (the gate's and tests' forward passes)."""
    import torch

    assert not torch.is_autocast_enabled("cpu")
    train(tiny_model_dir, tmp_path / "adapter", precision="bf16")
    assert not torch.is_autocast_enabled("cpu")
