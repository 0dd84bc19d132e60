"""Curation of handed-off answers (learner.distill): the upstream's answer desirable, the
local candidates that disagreed undesirable; the user's thumbs-down drops them; their own
share bound, outside the user rules; the held-out ones form the gate's handoff slice.
Pure Python, like the other curation tests."""

from __future__ import annotations

from dataclasses import replace

from feedback.distill import Distillation, DistillEntry
from feedback.events import hash_user
from learner.agreement import agrees, handoff_slice
from learner.curate import curate
from learner.distill import DistillConfig
from tests.integration.learner.learner_helpers import (
    TENANT,
    france_feedback,
    interaction,
    next_stream_id,
    rate,
)
from tests.support.handoff import HandedOff, handed_off

PERU = HandedOff("alice", "What is the capital of Peru?", "Lima.",
                 candidates=("Quito.", "lima", "Bogota!", "quito", "Lima is the capital."))


def distilled(h: HandedOff = PERU, **changes) -> DistillEntry:
    event = Distillation.of(handed_off(h))
    return DistillEntry(next_stream_id(), event.model_copy(update=changes), 1)


def run(feedback=(), distill=(), **kwargs):
    kwargs.setdefault("per_user_cap", 50)
    kwargs.setdefault("holdout_fraction", 0.0)
    return curate(feedback, tenant=TENANT, distill=distill, **kwargs)


def labelled(examples):
    return [(e.completion, e.desirable, e.source) for e in examples]


def test_agreement_is_a_normalised_word_match():
    assert agrees("lima", "Lima.") and agrees("Lima is the capital.", "LIMA!")
    assert agrees("Lima, of course", "lima") and not agrees("Lima", "Lim")
    assert not agrees("Quito.", "Lima.") and not agrees("...", "...")
    assert not agrees("Lima is the capital.", "Lima", how="exact")


def test_a_handed_off_answer_teaches_its_answer_and_against_the_disagreeing_candidates():
    entry = distilled()
    result = run(distill=[entry])
    assert labelled(result.train) == [("Lima.", True, "distill"), ("Quito.", False, "distill"),
                                      ("Bogota!", False, "distill")]
    example = result.train[0]
    assert (example.user, example.interaction_id, example.stream_id) == (
        hash_user("alice"), entry.distill.interaction_id, entry.stream_id)
    assert example.prompt == [{"role": "user", "content": PERU.question}]
    assert result.consumed_stream_ids == [entry.stream_id]
    assert result.members == {entry.stream_id: hash_user("alice")}  # forget finds it
    assert (result.counts["distill"], result.counts["undesirable"]) == (1, 2)


def test_a_handed_off_answer_teaches_against_at_most_max_rejected_candidates():
    """The learner's default (DistillConfig.max_rejected 1): the first disagreeing
    candidate, the answer its user would have got, and no more."""
    one = run(distill=[distilled()], distill_rejected=DistillConfig().max_rejected)
    assert labelled(one.train) == [("Lima.", True, "distill"), ("Quito.", False, "distill")]
    assert labelled(run(distill=[distilled()], distill_rejected=0).train) == [
        ("Lima.", True, "distill")]


def test_candidates_serving_found_in_agreement_are_not_taught_against():
    result = run(distill=[distilled(disagreement=0.0)])
    assert labelled(result.train) == [("Lima.", True, "distill")]


def test_a_thumbs_down_by_the_user_drops_the_handed_off_answer():
    entry = distilled()
    ident = entry.distill.interaction_id
    served = interaction(PERU.question, "Lima.").model_copy(update={"id": ident})
    # In this round: alice's thumbs-down of the handed-off answer is her own example.
    result = run([rate(served, -1)], distill=[entry])
    assert labelled(result.train) == [("Lima.", False, "thumbs")]
    assert "voted the handed-off answer down" in result.dropped[entry.stream_id]
    assert entry.stream_id in result.consumed_stream_ids  # dropped for good
    # In an earlier round: the current rating the loop looks up says so.
    earlier = run(distill=[entry], ratings={(ident, hash_user("alice")): -1})
    assert earlier.train == [] and earlier.counts["distill_voted_down"] == 1
    # Re-rated up since: the latest word wins, the answer is taught.
    later = run([rate(served, -1)], distill=[entry], ratings={(ident, hash_user("alice")): 1})
    assert ("Lima.", True, "distill") in labelled(later.train)
    # Someone else's rating of an interaction says nothing about this one.
    other = run(distill=[entry], ratings={(ident, hash_user("bob")): -1})
    assert other.counts["distill"] == 1


def test_distillation_takes_at_most_its_share_and_the_rest_waits():
    feedback = france_feedback(4, users=4)  # 4 user examples
    entries = [distilled(HandedOff("alice", f"Question {i}?", f"Answer {i}.",
                                   candidates=(f"Wrong {i}.",))) for i in range(5)]
    result = run(feedback, entries, distill_share=0.5)
    sources = [e.source for e in result.train]
    assert sources.count("distill") == 4 == sources.count("thumbs")  # two units of two
    assert result.deferred == [e.stream_id for e in entries[2:]]  # the newest wait
    assert not set(result.deferred) & set(result.consumed_stream_ids)
    assert result.counts["distill_deferred"] == 3
    # No bound: all of them; a backlog bound: the oldest waiting ones are dropped.
    assert run(feedback, entries, distill_share=1.0).counts["distill"] == 5
    capped = run(feedback, entries, distill_share=0.5, distill_max_waiting=1)
    assert capped.deferred == [entries[4].stream_id]
    assert "max_waiting" in capped.dropped[entries[2].stream_id]
    # Share 0 (or a round of handed-off answers alone, at 0.5): nothing trains, all wait.
    alone = run(distill=entries, distill_share=0.5)
    assert alone.train == [] and len(alone.deferred) == 5 and alone.consumed_stream_ids == []


def test_distillation_is_not_user_feedback_for_the_round_rules():
    """One user's feedback waits for a second user however many handed-off answers came;
    handed-off answers of a user do not count against that user's share."""
    one_user = france_feedback(4, users=1)
    entries = [distilled(HandedOff("user-0", f"Question {i}?", f"Answer {i}."))
               for i in range(4)]
    waiting = run(one_user, entries, min_users=2)
    assert waiting.waiting and waiting.train == [] and waiting.consumed_stream_ids == []
    two_users = france_feedback(4, users=2)
    shared = run(two_users, entries, max_user_share=0.5, min_users=2)
    assert shared.counts["over_cap"] == 0 and shared.counts["distill"] == 4


def test_held_out_handed_off_answers_are_the_gates_handoff_slice():
    entries = [distilled(HandedOff("alice", f"Question {i}?", f"Answer {i}.",
                                   candidates=(f"Wrong {i}.",))) for i in range(10)]
    result = run(france_feedback(20), entries, holdout_fraction=0.2, seed=3)
    held = [e for e in result.holdout if e.source == "distill"]
    assert {e.interaction_id for e in held} and len(held) == 4  # 2 of 10 units, kept whole
    assert not {e.interaction_id for e in held} & {
        e.interaction_id for e in result.train if e.source == "distill"}
    rows = handoff_slice(result.holdout, limit=64)
    assert [(r.completion, r.desirable) for r in rows] == [
        (e.completion, True) for e in held if e.desirable]
    assert handoff_slice(result.holdout, limit=1) == rows[-1:]


def test_carried_handed_off_answers_voted_down_since_are_left_out():
    carried = run(distill=[distilled()]).train
    ident = carried[0].interaction_id
    result = run(france_feedback(2), carried=carried,
                 ratings={(ident, hash_user("alice")): -1})
    assert not [e for e in result.train if e.source == "distill"]
    assert result.counts["carried_voted_down"] == 3
    kept = run(france_feedback(2), carried=[replace(e, source="distill") for e in carried])
    assert kept.counts["carried"] == 3


def test_handed_off_answers_of_another_tenant_are_left_for_its_round():
    entry = distilled(tenant="globex")
    result = run(france_feedback(2), [entry])
    assert result.counts["distill_foreign_tenant"] == 1
    assert entry.stream_id not in result.consumed_stream_ids + result.deferred
