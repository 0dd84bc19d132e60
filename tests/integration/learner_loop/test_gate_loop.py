"""What the gate's verdict does to the loop: data a rejected round used comes back in the next
round, and a candidate that damages the regression set is never served."""

from __future__ import annotations

import json

import pytest

from feedback.keys import RedisKeys
from learner.gate import GateConfig
from learner.train import TrainConfig
from storage import dataset_stream_ids, get_alias, get_version, list_versions
from tests.support.capitals import capitals, corrections
from tests.support.ratings import record_ratings

pytestmark = pytest.mark.asyncio(loop_scope="function")

COUNTRIES = capitals("France", "Italy", "Japan", "Spain", "Peru", "Kenya")


@pytest.fixture
def one_round(new_learner):
    """``await one_round(**config)``: a new learner (rounds of one event) runs one round."""

    async def run(**config) -> dict:
        config.setdefault("train", TrainConfig(epochs=6, learning_rate=1e-2, threads=1, rank=4))
        learner = new_learner(min_new_examples=1, **config)
        await learner.start()
        try:
            [report] = await learner.step()
        finally:
            await learner.close()
        return report

    return run


async def correct(client, keys, taught, *, user_prefix: str) -> list[str]:
    """Each capital: a user asks, gets a wrong answer and corrects it."""
    return await record_ratings(client, keys, corrections(taught, user_prefix=user_prefix))


async def test_a_rejected_round_keeps_its_data_for_the_next_which_passes(
    client, keys, registry, one_round
):
    # One correction is too little for the gate to call anything learned.
    await correct(client, keys, COUNTRIES[:1], user_prefix="first")
    first = await one_round(holdout_fraction=0.0)
    assert first["outcome"].startswith("rejected: the taught examples moved"), first
    assert first["metrics"]["taught"] == 1

    await correct(client, keys, COUNTRIES[1:4], user_prefix="second")
    second = await one_round(holdout_fraction=0.0)
    assert second["outcome"] == "live", second
    assert second["carried_from"] == first["version"]
    assert second["counts"]["carried"] == 2
    assert second["metrics"]["taught"] == 4  # 3 new corrections and the carried one

    with registry() as session:
        assert get_version(session, version_id=first["version"]).status == "rejected"
        assert get_alias(session, tenant="acme", alias="live").version_id == second["version"]
        first_ids = set(dataset_stream_ids(session, version_id=first["version"]))
        second_ids = set(dataset_stream_ids(session, version_id=second["version"]))
    # The ledger says which candidates saw each event; the live one holds them all.
    assert len(first_ids) == 1 and len(second_ids) == 4 and first_ids < second_ids
    pending = await client.xpending(keys.feedback_stream, RedisKeys.LEARNER_GROUP)
    assert pending["pending"] == 0

    # Once live, its data is not carried again: the next round starts from it.
    await correct(client, keys, COUNTRIES[4:], user_prefix="third")
    third = await one_round(holdout_fraction=0.0)
    assert "carried_from" not in third and third["counts"]["carried"] == 0
    assert third["metrics"]["trained_over"] == second["version"]


async def test_a_candidate_that_damages_the_regression_set_is_rejected_and_never_served(
    client, keys, registry, tmp_path, tiny_model_dir, one_round
):
    from transformers import AutoModelForCausalLM

    from learner.scoring import greedy_answers, limited_threads, load_tokenizer
    from serving.adapters import AdapterManager
    from serving.engines import EngineConfig
    from serving.engines.hf import HFEngine
    from serving.registry_view import RegistryView

    # The regression set: how the base model's answers to other questions of the same form
    # begin (computed as the gate does; the rest of a random model's answer hangs on
    # near-ties that any change of batch or thread count can flip).
    questions = [f"What is the capital of {c}?" for c in ("Chile", "Norway", "Egypt", "Greece")]
    with limited_threads(1):
        expected = greedy_answers(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                                  load_tokenizer(str(tiny_model_dir)),
                                  [[{"role": "user", "content": q}] for q in questions],
                                  max_new_tokens=GateConfig().max_new_tokens)
    rows = [{"messages": [{"role": "user", "content": q}], "expected": a.strip()[:4]}
            for q, a in zip(questions, expected, strict=True)]
    regression = tmp_path / "regression.jsonl"
    regression.write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine = HFEngine(EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny",
                                   threads=1))
    await engine.start()
    try:
        from tests.integration.engine_support import complete

        before, _ = await complete(engine, questions[0], max_tokens=24)
        await correct(client, keys, COUNTRIES, user_prefix="u")
        # No anchors and a learning rate far too high: it fits what it was taught (and its
        # held-out slice) by answering every capital question alike.
        report = await one_round(
            regression_set=str(regression), holdout_fraction=0.3,
            train=TrainConfig(epochs=8, learning_rate=5e-2, threads=1, rank=4,
                              anchor_weight=0.0),
            gate=GateConfig(auto_promote="live", threads=1, regression_tolerance=0))
        metrics = report["metrics"]
        assert report["outcome"].startswith("rejected: regression set: the candidate"), report
        assert metrics["taught_confidence"] >= 0.95  # it did learn what it was taught
        assert metrics["holdout"] > 0 and metrics["holdout_confidence_worse"] < 0.95
        assert metrics["regression_candidate"] < metrics["regression_reference"] == 4
        assert metrics["attempts"] == 2  # retried once with stronger anchors (0 x 2 here)

        with registry() as session:
            assert get_version(session, version_id=report["version"]).status == "rejected"
            assert get_alias(session, tenant="acme", alias="live") is None
            assert len(list_versions(session, tenant="acme")) == 1
        view = RegistryView(database_url=f"sqlite:///{tmp_path / 'registry.db'}",
                            artifacts_location=str(tmp_path / "artifacts"),
                            cache_dir=tmp_path / "cache")
        manager = AdapterManager(engine, view, max_resident=4)
        await manager.reconcile()  # what every replica does
        assert report["version"] not in engine.loaded_adapters()
        after, _ = await complete(engine, questions[0], max_tokens=24)
        assert after == before  # still the base model's answer
    finally:
        await engine.shutdown()
