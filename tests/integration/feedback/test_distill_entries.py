"""Handed-off answers reach the learner: the sink writes each with its distillation entry in
the feedback stream (both or neither), the learner's reader delivers it, ratings readers
skip it, forget-user deletes it, and the stored compute record is bounded. Real Redis."""

from __future__ import annotations

import time

from feedback.bounds import StoredBounds
from feedback.distill import DISTILL_SOURCE, Distillation, DistillEntry, current_ratings
from feedback.events import ComputeRecord, FeedbackEntry, hash_user
from feedback.forget import forget_user
from feedback.interactions import get_interaction, read_interactions
from feedback.ratings import feedback_since
from feedback.sink import SinkConfig
from feedback.source import FeedbackSource
from tests.support.handoff import HandedOff, handed_off, log_interactions
from tests.support.ratings import UNLIMITED

HANDOFF = HandedOff("alice", "What is the capital of Peru?", "Lima.",
                    candidates=("Quito.", "Lima", "Bogota."))


def fields_of(entry) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in entry[1].items()}


async def test_a_handed_off_answer_is_stored_with_its_distillation_entry(
        redis_url, client, keys, make_interaction):
    handoff, plain = handed_off(HANDOFF), make_interaction()
    stats = await log_interactions(redis_url, keys, [handoff, plain])
    assert (stats.written, stats.distilled, stats.failed) == (2, 1, 0), stats
    assert [i.id for _, i in await read_interactions(client, keys)] == [handoff.id, plain.id]
    assert (await get_interaction(client, keys, handoff.id)).compute.handed_off
    # One entry in the feedback stream, for the handed-off answer only.
    [entry] = await client.xrange(keys.feedback_stream)
    fields = fields_of(entry)
    assert fields["source"] == DISTILL_SOURCE
    assert fields["user"] == hash_user("alice") == handoff.user
    assert fields["interaction_id"] == handoff.id
    distill = Distillation.from_json(fields["event"])
    assert fields["id"] == distill.id
    assert (distill.tenant, distill.answer, distill.candidates) == (
        "acme", "Lima.", ["Quito.", "Lima", "Bogota."])
    assert distill.messages == handoff.messages and distill.upstream_model == "upstream-large"
    assert distill.disagreement == handoff.compute.disagreement


async def test_a_retried_handoff_adds_no_second_distillation_entry(redis_url, client, keys):
    handoff = handed_off(HANDOFF)
    await log_interactions(redis_url, keys, [handoff])
    stats = await log_interactions(redis_url, keys, [handoff])  # a retry after a lost reply
    assert (stats.written, stats.duplicates, stats.distilled) == (0, 1, 0), stats
    assert await client.xlen(keys.feedback_stream) == 1
    assert await client.xlen(keys.interactions_stream) == 1


async def test_neither_lands_when_the_distillation_entry_cannot(redis_url, client, keys,
                                                                make_interaction):
    """The feedback stream's key holds a string: the script refuses the handed-off answer
    before writing anything, so no interaction is stored without its entry."""
    await client.set(keys.feedback_stream, "not a stream")
    handoff, plain = handed_off(HANDOFF), make_interaction()
    stats = await log_interactions(redis_url, keys, [handoff, plain],
                                   SinkConfig(max_event_errors=1))
    assert (stats.written, stats.failed, stats.distilled) == (1, 1, 0), stats
    assert await get_interaction(client, keys, handoff.id) is None
    assert [i.id for _, i in await read_interactions(client, keys)] == [plain.id]
    assert await client.get(keys.feedback_stream) == b"not a stream"


async def test_the_reader_delivers_both_kinds_and_ratings_readers_skip_distillation(
        redis_url, client, redis_client, keys):
    from feedback.store import FeedbackStore

    handoff = handed_off(HANDOFF)
    since_ms = int(time.time() * 1000) - 1000
    await log_interactions(redis_url, keys, [handoff])
    store = FeedbackStore(client, keys, UNLIMITED)
    await store.start()
    await store.record(interaction_id=handoff.id, user="alice", rating="down")

    entries = await FeedbackSource(client, keys, "reader").read(block_ms=0)
    assert [type(e) for e in entries] == [DistillEntry, FeedbackEntry]
    assert entries[0].distill.interaction_id == entries[1].feedback.interaction_id == handoff.id
    # The canary's ratings are the users' only.
    assert [f.rating for f in feedback_since(redis_client, keys, since_ms)] == [-1]
    # The user's latest rating of the handed-off answer, as curation looks it up.
    assert await current_ratings(client, keys, [(handoff.id, handoff.user),
                                                (handoff.id, hash_user("bob"))]) == {
        (handoff.id, handoff.user): -1}


async def test_forgetting_the_user_deletes_their_distillation_entries(redis_url, client, keys):
    mine = handed_off(HANDOFF)
    theirs = handed_off(HandedOff("bob", "Capital of Chile?", "Santiago.", ("Lima.",)))
    await log_interactions(redis_url, keys, [mine, theirs])
    [mine_id, theirs_id] = [e[0].decode() for e in await client.xrange(keys.feedback_stream)]
    summary = await forget_user(client, keys, "alice")
    assert summary.feedback_stream_ids == [mine_id]  # listed: the learner leaves it out
    left = await client.xrange(keys.feedback_stream)
    assert [e[0].decode() for e in left] == [theirs_id]


async def test_the_stored_compute_record_is_bounded(redis_url, client, keys):
    long = "x" * 100
    compute = ComputeRecord(strategy="handoff", handed_off=True, samples=12,
                            candidates=[f"{i} {long}" for i in range(12)],
                            scores=[float(i) for i in range(12)],
                            votes={f"{i} {long}": i for i in range(12)}, disagreement=1.0)
    handoff = handed_off(HANDOFF).model_copy(update={"compute": compute})
    bounds = StoredBounds(max_candidates=3, max_candidate_chars=10)
    await log_interactions(redis_url, keys, [handoff], SinkConfig(bounds=bounds))
    stored = await get_interaction(client, keys, handoff.id)
    assert stored.compute.candidates == ["0 xxxxxxxx", "1 xxxxxxxx", "2 xxxxxxxx"]
    assert stored.compute.scores == [0.0, 1.0, 2.0]
    assert stored.compute.votes == {"11 xxxxxxx": 11, "10 xxxxxxx": 10, "9 xxxxxxxx": 9}
    assert {"compute.candidates", "compute.votes", "compute.scores"} <= set(stored.truncated)
    [entry] = await client.xrange(keys.feedback_stream)
    distill = Distillation.from_json(fields_of(entry)["event"])
    assert distill.candidates == stored.compute.candidates  # the entry copies the bounded one
