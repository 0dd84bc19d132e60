"""Scoring: batched, length-sorted scoring with only the scored logits gives what scoring
each sequence alone with every logit gives."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from learner.scoring import (
    limited_threads,
    load_tokenizer,
    render,
    sequence_logprobs,
)
from tests.integration.learner.learner_helpers import probe

QUESTIONS = ["What is the capital of France?", "Capital of France?",
             "Hello. Which city is France's capital, if you please?"]
ANSWERS = ["Paris.", "Lyon.", "It is Paris, the largest city of France.", "Marseille"]


def one_at_a_time(model, tokenizer, pairs, max_length):
    """The plain definition: each sequence alone, log-softmax over every position."""
    scores = []
    for prompt, completion in pairs:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
        start = next((i for i, (a, b) in enumerate(zip(prompt_ids, ids, strict=False))
                      if a != b), min(len(prompt_ids), len(ids)))
        ids, start = ids[:max_length], min(start, max_length)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].float()
        logps = torch.log_softmax(logits, dim=-1)
        scores.append(sum(float(logps[t - 1, ids[t]]) for t in range(max(start, 1), len(ids))))
    return scores


@pytest.mark.parametrize("max_length", [1024, 24])
def test_batched_scores_equal_scoring_each_sequence_alone(tiny_model_dir, kto_adapter,
                                                          max_length):
    with limited_threads(1):
        tokenizer = load_tokenizer(str(tiny_model_dir))
        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
            str(kto_adapter.adapter_dir)).eval()
        pairs = [render(tokenizer, e) for q in QUESTIONS for e in probe(q, ANSWERS)]
        assert len({len(tokenizer(p + c)["input_ids"]) for p, c in pairs}) > 3  # ragged
        got = sequence_logprobs(model, tokenizer, pairs, batch_size=5, max_length=max_length)
        want = one_at_a_time(model, tokenizer, pairs, max_length)
    assert got == pytest.approx(want, abs=1e-3)  # each row's own score, in its place
    if max_length > 100:
        assert len(set(want)) == len(want)  # (so a row's score in another's place shows)
