"""ScriptBatcher against a real Redis: concurrent calls share round trips, and each call
still runs alone, in order, with its own answer or error."""

from __future__ import annotations

import asyncio

import pytest

from feedback import REDIS_ERRORS, async_client
from feedback.script_batcher import ScriptBatcher

pytestmark = pytest.mark.asyncio(loop_scope="function")

#: Appends ARGV[1] to a list and answers the list's length; ARGV[1] == 'fail' raises.
APPEND = """
if ARGV[1] == 'fail' then return redis.error_reply('asked to fail') end
return redis.call('RPUSH', KEYS[1], ARGV[1])
"""


async def test_concurrent_calls_share_round_trips_each_run_once_in_order(client, keys):
    log = f"{keys.prefix}:log"
    batcher = ScriptBatcher(client, APPEND, timeout_s=10)
    answers = await asyncio.gather(*(batcher([log], [str(i)]) for i in range(50)))
    assert [a for a, _ in answers] == list(range(1, 51))  # each ran alone, in arrival order
    assert await client.lrange(log, 0, -1) == [str(i).encode() for i in range(50)]
    assert batcher.calls == 50 and batcher.round_trips < 50
    assert await batcher([log], ["alone"]) == (51, None)


async def test_one_calls_script_error_is_its_own(client, keys):
    log = f"{keys.prefix}:log"
    batcher = ScriptBatcher(client, APPEND, timeout_s=10)
    answers = await asyncio.gather(*(batcher([log], [v]) for v in ("a", "fail", "b")),
                                   return_exceptions=True)
    assert answers[0] == (1, None) and answers[2] == (2, None)
    assert "asked to fail" in str(answers[1])


async def test_a_call_given_up_before_it_was_sent_is_not_sent(client, keys):
    log = f"{keys.prefix}:log"
    batcher = ScriptBatcher(client, APPEND, timeout_s=10)
    given_up = asyncio.create_task(batcher([log], ["given up"]))
    await asyncio.sleep(0)  # it is waiting for its batch to go out
    given_up.cancel()
    assert await batcher([log], ["kept"]) == (1, None)
    assert await client.lrange(log, 0, -1) == [b"kept"]


async def test_a_server_that_lost_the_script_gets_it_again(embedded, keys):
    client = async_client(embedded.url)
    log = f"{keys.prefix}:log"
    try:
        batcher = ScriptBatcher(client, APPEND, timeout_s=10)
        assert await batcher([log], ["first"]) == (1, None)
        await client.script_flush()  # as after a restart without persistence
        answers = await asyncio.gather(*(batcher([log], [str(i)]) for i in range(5)))
        assert sorted(a for a, _ in answers) == [2, 3, 4, 5, 6]
        assert await client.llen(log) == 6  # each call ran once, none twice
    finally:
        await client.aclose()


async def test_an_outage_fails_every_waiting_call(embedded, keys):
    client = async_client(embedded.url, timeout_s=1)
    batcher = ScriptBatcher(client, APPEND, timeout_s=5)
    try:
        await batcher([f"{keys.prefix}:log"], ["up"])
        embedded.stop()
        answers = await asyncio.gather(*(batcher([f"{keys.prefix}:log"], ["x"])
                                         for _ in range(3)), return_exceptions=True)
        assert all(isinstance(a, REDIS_ERRORS) for a in answers), answers
    finally:
        await client.aclose()
