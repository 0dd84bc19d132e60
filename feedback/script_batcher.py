"""Many concurrent calls of one Lua script, several to a Redis round trip.

:class:`ScriptBatcher` is group commit for a script: a call waits while the batch
before it is on the wire, then goes out with every call that arrived meanwhile, as one
pipeline. Under load the calls of a busy moment share a round trip (one write and one
read on the socket for all of them, on the client and on the server); a lone call goes
out at once, alone.

What batching keeps: each call is its own ``EVALSHA``, so each runs atomically and in
arrival order, exactly as if sent alone, and its answer or error is its own (the
pipeline is not a transaction: one call's script error fails only that call). A call
whose caller gave up (cancelled, timed out) before its batch was sent is not sent. An
error of the connection fails every call of the batch, as it would have failed each.

``WAITAOF`` (strict durability): a call that asks for it gets the count of local fsyncs
that the batch's one ``WAITAOF`` reports, which covers every write of the batch (they
share its connection).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

#: Calls per round trip at most (a bound on one pipeline's size, not a wait for more).
MAX_BATCH = 64


def _new_future() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()


@dataclass
class _Call:
    keys: Sequence[str]
    args: Sequence[Any]
    waitaof_ms: int | None
    future: asyncio.Future = field(default_factory=_new_future)


class ScriptBatcher:
    """Runs ``script`` for concurrent callers, batching the calls that wait together.

    ``timeout_s`` (an attribute too) bounds one round trip of a batch; callers bound
    their own wait as well. Use from one event loop.
    """

    def __init__(self, client: aioredis.Redis, script: str, *, timeout_s: float,
                 max_batch: int = MAX_BATCH) -> None:
        self._client = client
        self._script = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()
        self.timeout_s = timeout_s
        self._max_batch = max_batch
        self._waiting: list[_Call] = []
        self._sender: asyncio.Task | None = None
        self.round_trips = 0  #: pipelines sent, for a test or a bench to read
        self.calls = 0  #: calls sent (once each, however many round trips they took)

    async def __call__(self, keys: Sequence[str], args: Sequence[Any], *,
                       waitaof_ms: int | None = None) -> tuple[Any, int | None]:
        """The script's answer to ``keys`` and ``args``, and the local fsyncs WAITAOF
        confirmed for the batch (``None`` unless ``waitaof_ms`` asked for WAITAOF with
        that timeout). Raises what Redis raised for this call or its batch."""
        call = _Call(keys, args, waitaof_ms)
        self._waiting.append(call)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_waiting())
        return await call.future

    async def _send_waiting(self) -> None:
        while self._waiting:
            batch = [c for c in self._waiting[:self._max_batch] if not c.future.done()]
            del self._waiting[:self._max_batch]
            if not batch:
                continue
            self.calls += len(batch)
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._send(batch)
            except Exception as exc:  # the connection, or the timeout: every call failed
                for call in batch:
                    if not call.future.done():
                        call.future.set_exception(exc)

    async def _send(self, batch: list[_Call], *, loaded: bool = False) -> None:
        pipe = self._client.pipeline(transaction=False)
        for call in batch:
            pipe.execute_command("EVALSHA", self._sha, len(call.keys), *call.keys, *call.args)
        waits = [c.waitaof_ms for c in batch if c.waitaof_ms is not None]
        if waits:
            pipe.execute_command("WAITAOF", 1, 0, max(waits))
        self.round_trips += 1
        answers = await pipe.execute(raise_on_error=False)
        local = None
        if waits:
            confirmed = answers.pop()
            if isinstance(confirmed, Exception):
                raise confirmed
            local = int(confirmed[0])
        unknown = [c for c, a in zip(batch, answers, strict=True)
                   if isinstance(a, NoScriptError) and not loaded]
        for call, answer in zip(batch, answers, strict=True):
            if call.future.done() or call in unknown:
                continue
            if isinstance(answer, Exception):
                call.future.set_exception(answer)
            else:
                call.future.set_result((answer, local if call.waitaof_ms is not None else None))
        if unknown:  # the server does not have the script (first use, restart, flush)
            await self._client.script_load(self._script)  # nothing of theirs ran: resend
            await self._send(unknown, loaded=True)
