"""Scoring and the gate's reuse of training's base model: batched scoring, with shared prompts
computed once and only the scored logits made, gives what scoring each sequence alone with
every logit gives; and a gate on the base model training kept decides as a gate that loads
the base model again."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import AutoModelForCausalLM

from learner.gate import GateConfig, evaluate
from learner.scoring import (
    limited_threads,
    load_base_model,
    load_tokenizer,
    prompt_text,
    render,
    sequence_logprobs,
)
from learner.train import TrainConfig, train_adapter
from tests.integration.learner.learner_helpers import FAST, probe

QUESTIONS = ["What is the capital of France?", "Capital of France?",
             "Hello. Which city is France's capital, if you please?"]
ANSWERS = ["Paris.", "Lyon.", "It is Paris, the largest city of France.", "Marseille"]
ALONE = ["Where is Paris?", "Which country has Lyon in it?"]


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


@pytest.mark.parametrize(("max_length", "batch_size"), [(1024, 16), (1024, 5), (24, 16)])
def test_batched_scores_equal_scoring_each_sequence_alone(tiny_model_dir, kto_adapter,
                                                          max_length, batch_size):
    with limited_threads(1):
        tokenizer = load_tokenizer(str(tiny_model_dir))
        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
            str(kto_adapter.adapter_dir)).eval()
        # Four answers to each question (their prompt is computed once) and two questions
        # with one answer each (computed whole).
        pairs = [render(tokenizer, e) for q in QUESTIONS for e in probe(q, ANSWERS)]
        pairs += [render(tokenizer, e) for q in ALONE for e in probe(q, ANSWERS[:1])]
        assert len({len(tokenizer(p + c)["input_ids"]) for p, c in pairs}) > 3  # ragged
        got = sequence_logprobs(model, tokenizer, pairs, batch_size=batch_size,
                                max_length=max_length)
        want = one_at_a_time(model, tokenizer, pairs, max_length)
    assert got == pytest.approx(want, abs=1e-3)  # each row's own score, in its place
    if max_length > 100:
        assert len(set(want)) == len(want)  # (so a row's score in another's place shows)


def test_gate_on_the_base_training_kept_decides_as_on_a_fresh_load(
        tiny_model_dir, france_round, tmp_path):
    trained = train_adapter(base_model=str(tiny_model_dir), base_model_name="builtin:tiny",
                            examples=france_round.train, output_dir=tmp_path / "adapter",
                            config=FAST, keep_base=True)
    base = trained.base
    assert not any(isinstance(m, BaseTunerLayer) for m in base.modules())
    assert "forward" not in vars(base)  # TRL's fused-loss forward is not left on it
    assert not hasattr(base, "peft_config")
    assert base.config.use_cache is True  # as loaded; the Trainer turns it off
    assert not base.training

    def judge(reused):
        return evaluate(base_model=str(tiny_model_dir), candidate_dir=trained.adapter_dir,
                        reference_dir=None, taught=france_round.train,
                        holdout=france_round.holdout, config=GateConfig(threads=1),
                        base=reused).metrics

    fresh, kept = judge(None), judge(base)
    for key in ("taught", "taught_right", "holdout", "holdout_right", "accuracy", "gate"):
        assert kept[key] == fresh[key], key
    assert kept["margin"] == pytest.approx(fresh["margin"], rel=1e-4)
    assert any(isinstance(m, BaseTunerLayer) for m in base.modules())  # used up by the gate


def test_a_copy_unlike_the_checkpoint_is_not_reused(tiny_model_dir, kto_adapter):
    path = str(tiny_model_dir)
    plain = AutoModelForCausalLM.from_pretrained(path)
    assert load_base_model(path, reuse=plain) is plain
    half = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    loaded = load_base_model(path, reuse=half)
    assert loaded is not half and loaded.dtype == torch.float32
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path),
                                      str(kto_adapter.adapter_dir)).base_model.model
    assert load_base_model(path, reuse=tuned) is not tuned


def test_a_base_kept_from_sft_answers_as_the_checkpoint(tiny_model_dir, france_round,
                                                             tmp_path):
    trained = train_adapter(base_model=str(tiny_model_dir), base_model_name="builtin:tiny",
                            examples=france_round.train, output_dir=tmp_path / "adapter",
                            config=TrainConfig(**{**FAST.model_dump(), "method": "sft",
                                                  "epochs": 1}), keep_base=True)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    fresh = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    ids = tokenizer(prompt_text(tokenizer, [{"role": "user", "content": QUESTIONS[0]}]),
                    return_tensors="pt", add_special_tokens=False)["input_ids"]
    with limited_threads(1), torch.no_grad():
        kept = trained.base.generate(ids, max_new_tokens=6, do_sample=False)
        want = fresh.generate(ids, max_new_tokens=6, do_sample=False)
    assert kept.tolist() == want.tolist()
    assert trained.base.config.use_cache is True
    assert "forward" not in vars(trained.base)  # SFTTrainer patched its fused-loss one in
