"""Curation rules, one test each: labels, corrections, latest rating, duplicates, cap, tenants,
held-out slice, replay, consumed ids. Pure Python: no model, no Redis."""

from __future__ import annotations

import pytest

from feedback.events import hash_user
from learner.curate import curate
from learner.errors import InvalidExample
from learner.examples import Example, dump_jsonl, load_jsonl
from tests.integration.learner.learner_helpers import (
    TENANT,
    france_feedback,
    interaction,
    rate,
)


def run(entries, **kwargs):
    kwargs.setdefault("per_user_cap", 50)
    kwargs.setdefault("holdout_fraction", 0.0)
    return curate(entries, tenant=TENANT, **kwargs)


@pytest.mark.parametrize(
    ("rating", "correction", "expected"),
    [
        (1, None, [("Paris?", True, "thumbs")]),
        (-1, None, [("Paris?", False, "thumbs")]),
        (-1, "Paris.", [("Paris.", True, "correction"), ("Paris?", False, "correction")]),
        (1, "Paris.", [("Paris.", True, "correction"), ("Paris?", False, "correction")]),
        (-1, "  Paris?  ", [("Paris?", False, "thumbs")]),  # same as the answer: no correction
        (-1, "   ", [("Paris?", False, "thumbs")]),  # blank correction: none
    ],
    ids=["up", "down", "down+correction", "up+correction", "correction=answer", "blank"],
)
def test_labels_from_thumbs_and_corrections(rating, correction, expected):
    inter = interaction("Capital of France?", "Paris?")
    result = run([rate(inter, rating, correction=correction)])
    got = [(e.completion, e.desirable, e.source) for e in result.train]
    assert got == expected
    assert all(e.prompt == [{"role": "user", "content": "Capital of France?"}]
               for e in result.train)


def test_latest_rating_per_user_and_interaction_wins():
    inter = interaction("Capital of France?", "Lyon.")
    first, second = rate(inter, 1), rate(inter, -1)
    other_user = rate(interaction("Capital of France?", "Lyon.", user="bob"), 1, user="bob")
    result = run([second, first, other_user][::-1])  # arrival order does not matter
    labels = sorted((e.user == hash_user("bob"), e.desirable) for e in result.train)
    assert labels == [(False, False), (True, True)]
    assert result.counts["superseded"] == 1
    assert "superseded" in result.dropped[first[0].stream_id]
    assert first[0].stream_id in result.consumed_stream_ids


def test_duplicates_removed_but_consumed():
    inter = interaction("Capital of France?", "Paris.")
    entry = rate(inter, 1)
    same_answer_other_user = rate(interaction("Capital of France?", "Paris.", user="bob"), 1,
                                  user="bob")
    result = run([entry, entry, same_answer_other_user])  # redelivered + equal example
    assert len(result.train) == 1
    assert result.counts["redelivered"] == 1
    assert result.counts["duplicate_examples"] == 1
    assert set(result.consumed_stream_ids) == {entry[0].stream_id,
                                               same_answer_other_user[0].stream_id}


def test_per_user_cap_keeps_the_oldest_and_records_who_was_capped():
    flood = [rate(interaction(f"Question {i}?", "Answer.", user="mallory"), 1, user="mallory")
             for i in range(10)]
    honest = [rate(interaction(f"Other {i}?", "Fine.", user="bob"), 1, user="bob")
              for i in range(3)]
    result = run(flood + honest, per_user_cap=3)
    by_user = {u: sum(e.user == u for e in result.train)
               for u in (hash_user("mallory"), hash_user("bob"))}
    assert by_user == {hash_user("mallory"): 3, hash_user("bob"): 3}
    assert result.capped_users == {hash_user("mallory"): 7}
    assert [e.prompt[0]["content"] for e in result.train[:3]] == [
        "Question 0?", "Question 1?", "Question 2?"]
    assert {sid for sid, why in result.dropped.items() if "cap" in why} == {
        e.stream_id for e, _ in flood[3:]}
    assert len(result.consumed_stream_ids) == 13


def test_other_tenants_never_mix():
    mine = rate(interaction("Mine?", "Yes."), 1)
    theirs = rate(interaction("Theirs?", "No.", tenant="globex"), 1, tenant="globex")
    forged = rate(interaction("Forged?", "Hm.", tenant="globex"), 1)  # feedback says acme
    foreign_replay = Example(tenant="globex", user="u", interaction_id="f" * 32,
                             stream_id="1-0", prompt=[{"role": "user", "content": "G?"}],
                             completion="G.", desirable=True)
    result = run([mine, theirs, forged], replay=[foreign_replay], replay_fraction=1.0)
    assert {e.tenant for e in result.train + result.holdout} == {TENANT}
    assert [e.completion for e in result.train] == ["Yes."]
    assert theirs[0].stream_id not in result.consumed_stream_ids  # globex's round takes it
    assert "tenant" in result.dropped[forged[0].stream_id]
    assert result.counts["foreign_tenant"] == 1
    assert result.counts["replay_foreign_tenant"] == 1


def test_expired_interaction_and_wrong_user_are_dropped_and_consumed():
    expired = rate(None, 1)
    inter = interaction("Q?", "A.", user="alice")
    not_theirs = rate(inter, 1, user="bob")
    result = run([expired, not_theirs])
    assert result.train == []
    assert set(result.consumed_stream_ids) == {expired[0].stream_id, not_theirs[0].stream_id}
    assert "expired" in result.dropped[expired[0].stream_id]
    assert "user" in result.dropped[not_theirs[0].stream_id]


@pytest.mark.parametrize(
    ("entries", "fraction", "held"),
    [(1, 0.2, 0), (2, 0.2, 1), (3, 0.1, 1), (10, 0.2, 2), (10, 0.0, 0), (4, 0.99, 3)],
)
def test_holdout_size_rule(entries, fraction, held):
    result = run(france_feedback(entries), holdout_fraction=fraction)
    assert len({e.stream_id for e in result.holdout}) == held
    assert len(result.train) == entries - held


def test_holdout_is_seeded_never_trained_and_keeps_correction_pairs_together():
    joined = france_feedback(40)
    joined += [rate(interaction(f"Fix {i}?", "Wrong."), -1, correction="Right.")
               for i in range(10)]
    a = run(joined, holdout_fraction=0.3, seed=1)
    again = run(joined, holdout_fraction=0.3, seed=1)
    other = run(joined, holdout_fraction=0.3, seed=2)
    assert [e.key for e in a.holdout] == [e.key for e in again.holdout]
    assert {e.stream_id for e in a.holdout} != {e.stream_id for e in other.holdout}
    assert not {e.key for e in a.holdout} & {e.key for e in a.train}
    assert not {e.stream_id for e in a.holdout} & {e.stream_id for e in a.train}
    assert {e.desirable for e in a.holdout} == {True, False}
    for sid in {e.stream_id for e in a.holdout if e.source == "correction"}:
        assert sum(e.stream_id == sid for e in a.holdout) == 2


def test_replay_is_mixed_into_train_only():
    earlier = [Example(tenant=TENANT, user="old", interaction_id=f"{i:032x}",
                       stream_id=f"{i + 1}-0", prompt=[{"role": "user", "content": f"Old {i}?"}],
                       completion="Old.", desirable=bool(i % 2)) for i in range(20)]
    new = france_feedback(20)
    result = run(new, holdout_fraction=0.2, replay=earlier, replay_fraction=0.5)
    replayed = [e for e in result.train if e.source == "replay"]
    assert len(replayed) == round(0.5 * result.counts["train_new"]) == 8
    assert {e.key for e in replayed} <= {e.key for e in earlier}
    assert not any(e.source == "replay" for e in result.holdout)
    assert not {e.stream_id for e in replayed} & set(result.consumed_stream_ids)
    same = run(new, holdout_fraction=0.2, replay=earlier, replay_fraction=0.5)
    assert [e.key for e in same.train] == [e.key for e in result.train]


def test_a_small_round_replays_at_least_min_replay():
    """Two new examples would replay one at replay_fraction 0.5: the floor makes it 12, so
    the round's steps do not fall on its two examples alone (capped by the pool)."""
    earlier = [Example(tenant=TENANT, user="old", interaction_id=f"{i:032x}",
                       stream_id=f"{i + 1}-0", prompt=[{"role": "user", "content": f"Old {i}?"}],
                       completion="Old.", desirable=True) for i in range(20)]
    new = france_feedback(2)
    proportional = run(new, holdout_fraction=0.0, replay=earlier, replay_fraction=0.5)
    assert proportional.counts["replay"] == 1
    floored = run(new, holdout_fraction=0.0, replay=earlier, replay_fraction=0.5,
                  min_replay=12)
    assert floored.counts["replay"] == 12 == sum(e.source == "replay" for e in floored.train)
    assert floored.counts["train_new"] == proportional.counts["train_new"]
    assert run(new, holdout_fraction=0.0, replay=earlier[:5], replay_fraction=0.5,
               min_replay=12).counts["replay"] == 5
    assert run([], replay=earlier, min_replay=12).train == []  # nothing new: no round
    with pytest.raises(ValueError, match="min_replay must be >= 0, got -1"):
        run(new, replay=earlier, min_replay=-1)


def test_replay_draws_the_taught_answers_before_the_rejected_ones():
    """A handed-off answer comes with three rejected local samples: a replay drawn at random
    from such a pool was mostly rejections, and a round of those forgot taught answers."""
    earlier = [Example(tenant=TENANT, user="old", interaction_id=f"{i // 4:032x}",
                       stream_id=f"{i + 1}-0", prompt=[{"role": "user", "content": f"Old {i}?"}],
                       completion=f"Answer {i}.", desirable=i % 4 == 0) for i in range(16)]
    result = run(france_feedback(2), replay=earlier, replay_fraction=0.5, min_replay=6)
    replayed = [e for e in result.train if e.source == "replay"]
    assert len(replayed) == 6
    assert sum(e.desirable for e in replayed) == 4  # every desirable one, then 2 others


def test_consumed_ids_cover_every_entry_of_the_tenant():
    inter = interaction("Q?", "A.")
    joined = [*france_feedback(12), rate(inter, 1), rate(inter, -1), rate(None, 1),
              *[rate(interaction(f"F{i}?", "X.", user="flood"), 1, user="flood") for i in range(5)]]
    result = run(joined, per_user_cap=2, holdout_fraction=0.25)
    assert set(result.consumed_stream_ids) == {e.stream_id for e, _ in joined}
    used = {e.stream_id for e in result.train + result.holdout}
    assert used | set(result.dropped) == set(result.consumed_stream_ids)
    assert result.members[joined[0][0].stream_id] == joined[0][0].feedback.user
    assert result.counts["consumed"] == len(joined)


def test_examples_round_trip_through_jsonl(tmp_path):
    result = run([rate(interaction("Capital?", "Lyon."), -1, correction="Paris.")])
    path = tmp_path / "round.jsonl"
    assert dump_jsonl(result.train, path) == 2
    assert load_jsonl(path) == result.train
    path.write_text('{"tenant": "acme", "oops": 1}\n')
    with pytest.raises(InvalidExample, match=r"round.jsonl:1: .*unknown keys \['oops'\]"):
        load_jsonl(path)
    with pytest.raises(InvalidExample, match="source 'bogus' is invalid"):
        Example(tenant="a", user="u", interaction_id="i", stream_id="1-0",
                prompt=[{"role": "user", "content": "q"}], completion="c", desirable=True,
                source="bogus")


@pytest.mark.parametrize(("rating", "correction", "rejected"), [
    (1, None, ["Lyon.", "Marseille."]),   # the samples it did not serve, each once
    (1, "Nice.", ["Lyon.", "Marseille."]),  # ... and a correction's answer is the target
    (-1, None, []),  # a thumbs-down endorses nothing: no sample is known to be worse
])
def test_samples_test_time_compute_rejected_are_undesirable(rating, correction, rejected):
    from feedback.events import ComputeRecord

    served = "Paris."
    inter = interaction("Capital of France?", served).model_copy(update={
        "compute": ComputeRecord(strategy="best_of_n", samples=5, chosen=0, candidates=[
            served, "Lyon.", "paris", "Marseille.", "Lyon."])})
    result = run([rate(inter, rating, correction=correction)])
    undesirable = [e.completion for e in result.train if not e.desirable]
    assert undesirable == ([served] if correction or rating == -1 else []) + rejected
    desirable = [e.completion for e in result.train if e.desirable]
    assert desirable == ([correction] if correction else [served] if rating == 1 else [])
