"""What one request can make the interaction log store in Redis is bounded, and its stop
strings are redacted like its messages (real Redis, the sink as the ingress builds it)."""

from __future__ import annotations

from feedback import InteractionSink, get_interaction
from feedback.bounds import StoredBounds
from feedback.redact import make_redactor


async def test_a_huge_request_is_stored_bounded_redacted_and_marked(redis_url, client, keys,
                                                                    make_interaction):
    secret = "mail alice@example.com"
    event = make_interaction(
        messages=[{"role": "user", "content": f"turn {i} " + "x" * 100_000} for i in range(500)],
        completion="y" * 200_000,
        sampling={"temperature": 0.5, "stop": [secret + "z" * 1_000_000, *["s"] * 99]},
    )
    bounds = StoredBounds()
    async with InteractionSink(redis_url, keys, redact=make_redactor("regex").redact) as sink:
        sink.submit(event)
        assert await sink.flush(30)
        assert sink.stats().written == 1
    stored_bytes = await client.strlen(keys.interaction(event.id))
    stored = await get_interaction(client, keys, event.id)
    assert stored is not None
    assert set(stored.truncated) == {"messages", "messages.content", "completions",
                                     "sampling.stop"}
    assert 0 < len(stored.messages) <= bounds.max_messages
    assert stored.messages[-1].content.startswith("turn 499 ")  # the newest turns are kept
    assert all(len(m.content) <= bounds.max_text_chars for m in stored.messages)
    assert sum(len(m.content) for m in stored.messages) <= bounds.max_total_chars
    assert len(stored.completion) == bounds.max_text_chars
    stop = stored.sampling["stop"]
    assert len(stop) == bounds.max_stop and all(len(s) <= bounds.max_stop_chars for s in stop)
    assert "alice@example.com" not in stop[0] and stop[0].startswith("mail ")
    assert stored.sampling["temperature"] == 0.5
    limit = bounds.max_total_chars + 2 * bounds.max_text_chars + 16 * 1024
    assert stored_bytes < limit, (stored_bytes, limit)


async def test_a_small_request_is_stored_whole(redis_url, client, keys, make_interaction):
    event = make_interaction(sampling={"stop": ["\n\n"]})
    async with InteractionSink(redis_url, keys, redact=make_redactor("regex").redact) as sink:
        sink.submit(event)
        assert await sink.flush(5)
    assert await get_interaction(client, keys, event.id) == event
