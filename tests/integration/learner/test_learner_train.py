"""Training changes behaviour: KTO on thumbs raises the liked answer, the adapter serves, warm
starts continue from the parent, SFT works, one-sided rounds are handled."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from learner.errors import IncompatibleParent, NothingToTrain, OutputDirNotEmpty
from learner.train import TrainConfig, train_adapter
from serving.engines import EngineConfig
from serving.engines.hf import HFEngine
from storage.artifacts import ArtifactStore
from tests.integration.engine_support import complete
from tests.integration.learner.learner_helpers import (
    FAST,
    TENANT,
    WRONG,
    interaction,
    logprobs,
    probe,
    rate,
)

QUESTIONS = ["What is the capital of France?", "Hello. Which city is France's capital?"]
ANSWERS = ["Paris.", *WRONG[:3]]


def margins(model_dir, adapter, questions=QUESTIONS):
    """Per question: log p("Paris.") minus the mean log p of the wrong answers."""
    result = []
    for question in questions:
        good, *bad = logprobs(model_dir, adapter, probe(question, ANSWERS))
        result.append(good - sum(bad) / len(bad))
    return result


def train(tiny_model_dir, tmp_path, examples, parent=None, **overrides):
    return train_adapter(base_model=str(tiny_model_dir), base_model_name="builtin:tiny",
                         examples=examples, output_dir=tmp_path / "adapter",
                         config=TrainConfig(**{**FAST.model_dump(), **overrides}),
                         parent_adapter=parent)


def test_kto_raises_the_liked_answer_over_the_disliked_ones(tiny_model_dir, kto_adapter,
                                                            tmp_path):
    before = margins(tiny_model_dir, None)
    after = margins(tiny_model_dir, kto_adapter.adapter_dir)
    for b, a in zip(before, after, strict=True):
        assert a > b + 10, (before, after)
    assert kto_adapter.metrics["method"] == "kto"
    assert kto_adapter.metrics["threads"] == 1
    assert sorted(p.name for p in kto_adapter.adapter_dir.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((kto_adapter.adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "builtin:tiny"
    assert config["r"] == FAST.rank
    published = ArtifactStore(tmp_path / "artifacts").publish(kto_adapter.adapter_dir)
    assert published.lora_config["r"] == FAST.rank


async def test_trained_adapter_loads_in_the_hf_engine_and_changes_greedy_output(
        tiny_model_dir, kto_adapter):
    engine = HFEngine(EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny",
                                   max_lora_rank=8, max_loras=2, threads=1))
    await engine.start()
    try:
        await engine.load_adapter("kto-v1", kto_adapter.adapter_dir)
        base, _ = await complete(engine, QUESTIONS[0], max_tokens=8)
        tuned, _ = await complete(engine, QUESTIONS[0], adapter="kto-v1", max_tokens=8)
    finally:
        await engine.shutdown()
    assert tuned != base
    assert tuned.startswith("Paris"), (base, tuned)


def test_warm_start_begins_at_the_parent(tiny_model_dir, kto_adapter, tmp_path):
    examples = _italy_round()[:16]
    child = train(tiny_model_dir, tmp_path, examples, parent=kto_adapter.adapter_dir,
                  learning_rate=1e-9, epochs=0.5)
    assert child.metrics["warm_start"] is True
    parent_weights = load_file(kto_adapter.adapter_dir / "adapter_model.safetensors")
    child_weights = load_file(child.adapter_dir / "adapter_model.safetensors")
    assert parent_weights.keys() == child_weights.keys()
    assert all((parent_weights[k] - child_weights[k]).abs().max() < 1e-5 for k in parent_weights)
    assert margins(tiny_model_dir, child.adapter_dir) == pytest.approx(
        margins(tiny_model_dir, kto_adapter.adapter_dir), abs=1e-3)


def test_warm_start_learns_more_and_keeps_the_parents_effect(tiny_model_dir, kto_adapter,
                                                            tmp_path):
    italy = ["What is the capital of Italy?"]
    child = train(tiny_model_dir, tmp_path, _italy_round(), parent=kto_adapter.adapter_dir,
                  epochs=2)
    learned = [_italy_margin(tiny_model_dir, a, italy) for a in (kto_adapter.adapter_dir,
                                                                 child.adapter_dir)]
    assert learned[1][0] > learned[0][0] + 5, learned
    base, child_margin = margins(tiny_model_dir, None), margins(tiny_model_dir, child.adapter_dir)
    assert all(c > b + 5 for b, c in zip(base, child_margin, strict=True)), (base, child_margin)


def test_warm_start_refuses_another_lora_shape(tiny_model_dir, kto_adapter, tmp_path):
    with pytest.raises(IncompatibleParent, match=r"rank 4 != the parent's r=8"):
        train(tiny_model_dir, tmp_path, _italy_round(), parent=kto_adapter.adapter_dir, rank=4)
    with pytest.raises(IncompatibleParent, match="target_modules"):
        train(tiny_model_dir, tmp_path, _italy_round(), parent=kto_adapter.adapter_dir,
              target_modules=("q_proj",))


def test_sft_trains_on_the_desirable_answers(tiny_model_dir, france_round, tmp_path):
    result = train(tiny_model_dir, tmp_path, france_round.train, method="sft", epochs=2)
    assert result.metrics["method"] == "sft"
    assert result.metrics["examples"] == sum(e.desirable for e in france_round.train)
    paris = probe(QUESTIONS[0], ["Paris."])
    before = logprobs(tiny_model_dir, None, paris)[0]
    after = logprobs(tiny_model_dir, result.adapter_dir, paris)[0]
    assert after > before + 5, (before, after)


def test_one_sided_rounds(tiny_model_dir, france_round, tmp_path):
    liked = [e for e in france_round.train if e.desirable][:8]
    disliked = [e for e in france_round.train if not e.desirable]
    result = train(tiny_model_dir, tmp_path / "liked", liked, epochs=0.5)
    assert result.metrics["method"] == "sft"
    assert "only desirable" in result.metrics["fallback"]
    with pytest.raises(NothingToTrain, match="no desirable example"):
        train(tiny_model_dir, tmp_path / "disliked", disliked)
    assert not (tmp_path / "disliked").exists()


def test_output_dir_must_be_empty(tiny_model_dir, france_round, tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "stale.json").write_text("{}")
    with pytest.raises(OutputDirNotEmpty, match=r"\['stale.json'\]"):
        train(tiny_model_dir, tmp_path, france_round.train)


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=1)
    with pytest.raises(ValueError, match="method"):
        TrainConfig(method="dpo")


def _italy_round():
    from learner.curate import curate

    joined = []
    for i in range(32):
        user = f"it-{i % 8}"
        good = i % 2 == 0
        prefix = ["", "Hi! ", "Quick question: ", "Please answer: "][(i // 2) % 4]
        question = prefix + ["What is the capital of Italy?", "Capital of Italy?",
                             "Which city is Italy's capital?", "Name Italy's capital."][
            (i // 8) % 4]
        answer = "Rome." if good else ["Milan.", "Naples.", "Paris."][i % 3]
        joined.append(rate(interaction(question, answer, user=user), 1 if good else -1,
                           user=user))
    return curate(joined, tenant=TENANT, per_user_cap=50, holdout_fraction=0.0).train


def _italy_margin(tiny_model_dir, adapter, questions):
    out = []
    for question in questions:
        good, *bad = logprobs(tiny_model_dir, adapter,
                              probe(question, ["Rome.", "Milan.", "Naples."]))
        out.append(good - sum(bad) / len(bad))
    return out



def test_same_seed_same_weights_and_threads_restored(tiny_model_dir, tmp_path):
    import torch

    threads = torch.get_num_threads()
    examples = _italy_round()[:16]
    runs = [train(tiny_model_dir, tmp_path / str(i), examples, epochs=1) for i in range(2)]
    assert torch.get_num_threads() == threads
    first, second = (load_file(r.adapter_dir / "adapter_model.safetensors") for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
