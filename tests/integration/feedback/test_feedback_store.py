"""FeedbackStore against a real Redis: ownership, limits, rate limits, redaction, outages."""

from __future__ import annotations

import asyncio
import socket

import pytest
import pytest_asyncio

from feedback import (
    Feedback,
    FeedbackConfig,
    FeedbackStore,
    async_client,
    durability_mode,
    errors,
    hash_user,
)
from tests.support.faults import Silent

PII = {
    "email": "carol.jones@example.com",
    "phone": "+1 (415) 555-0132",
    "card": "4111 1111 1111 1111",
    "ipv4": "203.0.113.77",
    "ipv6": "2001:db8:85a3::8a2e:370:7334",
}


@pytest_asyncio.fixture
async def store(redis_url, keys):
    async with FeedbackStore(redis_url, keys) as s:
        yield s


async def stream(client, keys) -> list[Feedback]:
    return [Feedback.from_json(f[b"event"]) for _, f in await client.xrange(keys.feedback_stream)]


async def test_record_then_current_and_re_rating_replaces(store, client, keys, put_interactions,
                                                          make_interaction):
    interaction = make_interaction(adapter_version="v-abc")
    await put_interactions(interaction)
    first = await store.record(interaction_id=interaction.id, user="alice", rating="up")
    current = await store.current(interaction.id, "alice")
    assert current is not None and (current.id, current.rating) == (first, 1)
    assert (current.user, current.tenant, current.adapter_version) == (
        hash_user("alice"), "acme", "v-abc")

    second = await store.record(interaction_id=interaction.id, user="alice", rating=-1,
                                correction="5", comment="off by one")
    current = await store.current(interaction.id, "alice")
    assert (current.id, current.rating, current.correction, current.comment) == (
        second, -1, "5", "off by one")
    # The stream keeps both events, in order, each once.
    assert [(f.id, f.rating) for f in await stream(client, keys)] == [(first, 1), (second, -1)]
    entries = await client.xrange(keys.feedback_stream)
    assert entries[1][1][b"user"] == hash_user("alice").encode()
    assert entries[1][1][b"interaction_id"] == interaction.id.encode()


async def test_current_is_none_before_any_rating(store, put_interactions, make_interaction):
    interaction = make_interaction()
    await put_interactions(interaction)
    assert await store.current(interaction.id, "alice") is None


async def test_wrong_user_or_tenant_is_refused(store, client, keys, put_interactions,
                                               make_interaction):
    interaction = make_interaction()
    await put_interactions(interaction)
    with pytest.raises(errors.NotYourInteraction, match="another user") as info:
        await store.record(interaction_id=interaction.id, user="mallory", rating="down")
    assert isinstance(info.value, PermissionError)
    with pytest.raises(errors.NotYourInteraction, match="tenant 'acme', not 'other'"):
        await store.record(interaction_id=interaction.id, user="alice", rating="down",
                           tenant="other")
    await store.record(interaction_id=interaction.id, user="alice", rating="up")
    with pytest.raises(errors.NotYourInteraction):
        await store.current(interaction.id, "mallory")
    assert len(await stream(client, keys)) == 1


async def test_unknown_expired_or_malformed_ids_are_not_found(redis_url, client, keys,
                                                              put_interactions, make_interaction):
    expired = make_interaction()
    await put_interactions(expired)
    await client.delete(keys.interaction(expired.id))
    async with FeedbackStore(redis_url, keys, FeedbackConfig(interaction_grace_s=0.2)) as store:
        for bad in ("f" * 32, expired.id, "not-an-id", "a:b", ""):
            with pytest.raises(errors.InteractionNotFound) as info:
                await store.record(interaction_id=bad, user="alice", rating="up")
            assert isinstance(info.value, LookupError)
            with pytest.raises(errors.InteractionNotFound):
                await store.current(bad, "alice")
    assert await client.exists(keys.feedback_stream) == 0


async def test_feedback_ahead_of_the_interaction_log_waits_for_it(
        redis_url, client, keys, put_interactions, make_interaction):
    """Serving logs interactions asynchronously: a rating sent the moment the answer
    arrives may reach Redis before the interaction does, and must not get a 404."""
    config = FeedbackConfig(interaction_grace_s=30)  # it returns as soon as the log lands
    async with FeedbackStore(redis_url, keys, config) as store:
        late, later = make_interaction(), make_interaction()

        async def log_after(delay_s, interaction):
            await asyncio.sleep(delay_s)
            await put_interactions(interaction)

        logging = asyncio.gather(log_after(0.3, late), log_after(0.3, later))
        feedback_id = await store.record(interaction_id=late.id, user="alice", rating="down",
                                         correction="Paris")
        assert await store.current(later.id, "alice") is None  # waited, found, not rated
        await logging
        (event,) = await stream(client, keys)
        assert (event.id, event.interaction_id, event.correction) == (feedback_id, late.id,
                                                                       "Paris")
    async with FeedbackStore(redis_url, keys, FeedbackConfig(interaction_grace_s=0)) as store:
        never = make_interaction()
        with pytest.raises(errors.InteractionNotFound):
            await store.record(interaction_id=never.id, user="alice", rating="up")


async def test_a_retry_with_the_same_idempotency_key_records_once(
        redis_url, client, keys, put_interactions, make_interaction):
    interaction = make_interaction()
    await put_interactions(interaction)
    config = FeedbackConfig(user_limit=2, tenant_limit=100)
    async with FeedbackStore(redis_url, keys, config) as store:
        rate = dict(interaction_id=interaction.id, user="alice", rating="down",
                    correction="Paris")
        first = await store.record(**rate, idempotency_key="retry-1")
        for _ in range(3):  # retries after lost replies: same id, no event, no rate use
            assert await store.record(**rate, idempotency_key="retry-1") == first
        assert [f.id for f in await stream(client, keys)] == [first]
        with pytest.raises(errors.IdempotencyKeyReused, match="'retry-1' already recorded"):
            await store.record(**{**rate, "rating": "up"}, idempotency_key="retry-1")
        second = await store.record(**{**rate, "rating": "up"}, idempotency_key="retry-2")
        assert second != first and (await store.current(interaction.id, "alice")).rating == 1
        with pytest.raises(errors.InvalidFeedback, match="1 to 255 characters"):
            await store.record(**rate, idempotency_key="k" * 256)
        with pytest.raises(errors.RateLimited):  # two real events used alice's limit of 2
            await store.record(**rate, idempotency_key="retry-3")


async def test_bad_rating_and_oversized_texts_are_refused_before_redis(
        redis_url, keys, put_interactions, make_interaction):
    interaction = make_interaction()
    await put_interactions(interaction)
    config = FeedbackConfig(max_correction_chars=10, max_comment_chars=5)
    async with FeedbackStore(redis_url, keys, config) as store:
        with pytest.raises(errors.InvalidFeedback, match="rating 'sideways' is invalid"):
            await store.record(interaction_id=interaction.id, user="alice", rating="sideways")
        with pytest.raises(errors.FeedbackTooLarge, match=r"correction is 11 .*limit is 10 .*"
                                                   r"max_correction_chars") as info:
            await store.record(interaction_id=interaction.id, user="alice", rating="up",
                               correction="x" * 11)
        assert isinstance(info.value, ValueError) and info.value.limit == 10
        with pytest.raises(errors.FeedbackTooLarge, match=r"comment is 6 .*max_comment_chars"):
            await store.record(interaction_id=interaction.id, user="alice", rating="up",
                               comment="y" * 6)
        await store.record(interaction_id=interaction.id, user="alice", rating="up",
                           correction="x" * 10, comment="y" * 5)


async def test_flood_from_one_user_is_rate_limited_with_retry_after(
        redis_url, client, keys, put_interactions, make_interaction):
    interactions = [make_interaction() for _ in range(8)]
    bob = make_interaction(user=hash_user("bob"))
    await put_interactions(*interactions, bob)
    config = FeedbackConfig(user_limit=5, tenant_limit=1000, rate_window_s=30)
    async with FeedbackStore(redis_url, keys, config) as store:
        for interaction in interactions[:5]:
            await store.record(interaction_id=interaction.id, user="alice", rating="up")
        for interaction in interactions[5:]:
            with pytest.raises(errors.RateLimited, match="user rate limit") as info:
                await store.record(interaction_id=interaction.id, user="alice", rating="up")
            assert 1 <= info.value.retry_after_s <= 30 and info.value.scope == "user"
        # Refused events are not counted or written; another user is not affected.
        await store.record(interaction_id=bob.id, user="bob", rating="down")
    assert len(await stream(client, keys)) == 6


async def test_tenant_rate_limit(redis_url, client, keys, put_interactions, make_interaction):
    interactions = [make_interaction(user=hash_user(f"user-{i}")) for i in range(4)]
    await put_interactions(*interactions)
    config = FeedbackConfig(user_limit=100, tenant_limit=3, rate_window_s=60)
    async with FeedbackStore(redis_url, keys, config) as store:
        for i, interaction in enumerate(interactions[:3]):
            await store.record(interaction_id=interaction.id, user=f"user-{i}", rating="up")
        with pytest.raises(errors.RateLimited, match=r"tenant rate limit.*tenant_limit") as info:
            await store.record(interaction_id=interactions[3].id, user="user-3", rating="up")
        assert info.value.scope == "tenant" and 1 <= info.value.retry_after_s <= 60


async def test_pii_in_correction_and_comment_never_reaches_redis(
        store, client, keys, put_interactions, make_interaction, stored_bytes):
    interaction = make_interaction()
    await put_interactions(interaction)
    text = "reach me: " + ", ".join(PII.values())
    await store.record(interaction_id=interaction.id, user="alice", rating="down",
                       correction=text, comment=f"my mail is {PII['email']}")
    current = await store.current(interaction.id, "alice")
    assert current.correction == "reach me: [EMAIL], [PHONE], [CARD], [IP], [IP]"
    assert current.comment == "my mail is [EMAIL]"
    raw = await stored_bytes()
    assert b"[CARD]" in raw  # the scan does see the stored feedback
    for value in PII.values():
        assert value.encode() not in raw, value
    assert b"4111111111111111" not in raw.replace(b" ", b"")


async def test_durability_mode_is_detected(store, client):
    assert store.server_version is not None
    assert store.durability != "undetected"
    config = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
              for k, v in (await client.config_get("append*")).items()}
    expected, _ = durability_mode(store.server_version, config["appendonly"],
                                  config["appendfsync"], False)
    assert store.durability == expected  # what this server really does
    assert ("not strict" in store.durability or "not durable" in store.durability
            or store.durability in ("appendfsync-always", "waitaof"))


#: An outage is answered at once: not after the wait for a late interaction (this long),
#: nor after retries. How many milliseconds it takes is bench/feedback_ops.py's to measure.
GRACE_S = 30.0
OUTAGE = FeedbackConfig(interaction_grace_s=GRACE_S)


async def test_redis_down_fails_fast(embedded, keys, make_interaction):
    interaction = make_interaction()
    setup = async_client(embedded.url)
    await setup.set(keys.interaction(interaction.id), interaction.to_json())
    await setup.aclose()
    store = FeedbackStore(embedded.url, keys, OUTAGE)
    await store.start()
    await store.record(interaction_id=interaction.id, user="alice", rating="up")
    embedded.stop()
    for call in (lambda: store.record(interaction_id=interaction.id, user="alice", rating="up"),
                 lambda: store.current(interaction.id, "alice")):
        with pytest.raises(errors.FeedbackUnavailable, match=r"unavailable.*retry later") as info:
            await asyncio.wait_for(call(), GRACE_S / 2)
        assert isinstance(info.value, ConnectionError)
    embedded.start()  # back: the same store works again without a restart
    await store.record(interaction_id=interaction.id, user="alice", rating="down")
    await store.aclose()


async def test_never_started_store_fails_fast_on_an_unreachable_server(keys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens here once closed
    store = FeedbackStore(f"redis://127.0.0.1:{port}/0", keys, OUTAGE)
    with pytest.raises(errors.FeedbackUnavailable):
        await asyncio.wait_for(
            store.record(interaction_id="a" * 32, user="alice", rating="up"), GRACE_S / 2)
    await store.aclose()


async def test_a_hung_server_fails_fast(keys):
    # A server that accepts connections but never answers: only timeouts can save us.
    # They end the call (no hang), once (no retry on a new connection), and the store
    # does not wait for the interaction on a server that does not answer.
    with Silent() as hung:
        config = OUTAGE.model_copy(update={"socket_timeout_s": 0.3, "connect_timeout_s": 0.2})
        store = FeedbackStore(hung.url, keys, config)
        with pytest.raises(errors.FeedbackUnavailable):
            await asyncio.wait_for(
                store.record(interaction_id="a" * 32, user="alice", rating="up"), GRACE_S / 2)
        await asyncio.wait_for(store.aclose(), GRACE_S / 2)
        assert hung.accepted == 1
