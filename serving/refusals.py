"""Slow down an address that keeps sending requests the API refuses.

Every hostile body is already refused cheaply (:class:`~serving.http_errors.BodyLimit`,
the prompt and field caps), but each refusal still costs the event loop that also
relays chat: a client sending refused requests as fast as it can makes the replica
answer hundreds of them a second. :class:`RefusalThrottle` keeps a score per client
address: every answer in 400-499 adds one, and the score leaks away at
``forgive_per_s``. Past ``limit``, the address's requests are not handled at all:
each waits ``delay_s`` (a sleeping coroutine costs nothing) and gets a 429
``too_many_refused_requests``, which counts as a refusal too, so an address stays
slowed while it keeps sending faster than it is forgiven and recovers on its own
once it stops. Honest clients elsewhere never notice; one that shares the
attacker's address (a NAT, or a proxy without ``client_address_header``) does,
which is why the limit is generous.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.http_errors import TooManyRefusals, error_response


class RefusalConfig(BaseModel):
    """How many refused requests an address may send before it is slowed down."""

    limit: float = Field(default=100, ge=1, description=(
        "Refused requests (4xx answers) an address may accumulate before its requests are "
        "delayed and answered 429 too_many_refused_requests."))
    forgive_per_s: float = Field(default=5, gt=0, description=(
        "How fast the count leaks away: an address refused less often than this is never "
        "slowed down."))
    delay_s: float = Field(default=1, ge=0, le=60, description=(
        "How long a slowed address's request waits before its 429."))
    max_waiting: int = Field(default=64, ge=0, description=(
        "Requests of one address waiting at once; more are answered 429 without waiting."))
    max_addresses: int = Field(default=100_000, ge=1, description=(
        "Addresses remembered; past it the most forgiven are forgotten first."))
    enabled: bool = True


def address_of(scope: Scope, trusted_header: str | None) -> str | None:
    """The caller's network address, for per-address limits.

    ``trusted_header`` (e.g. ``x-forwarded-for``) is read only when the operator
    configured it, i.e. a proxy they run sets it: its last entry is the address
    that proxy saw (entries before it are whatever the client sent). Without it,
    the TCP peer's address.
    """
    if trusted_header:
        wanted = trusted_header.lower().encode("latin-1")
        for name, value in scope.get("headers", ()):
            if name.lower() == wanted:
                last = value.decode("latin-1").rsplit(",", 1)[-1].strip()
                if last:
                    return last
    client = scope.get("client")
    return client[0] if client else None


class RefusalThrottle:
    """ASGI middleware: see the module's docstring. ``on_throttle()`` is called for each
    request it answers itself (a metric)."""

    def __init__(self, app: ASGIApp, *, config: RefusalConfig,
                 trusted_header: str | None = None,
                 on_throttle: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.config = config
        self.trusted_header = trusted_header
        self.on_throttle = on_throttle
        self.clock = clock
        self._scores: dict[str, tuple[float, float]] = {}  # address -> (score, at)
        self._waiting: dict[str, int] = {}

    def score(self, address: str) -> float:
        score, at = self._scores.get(address, (0.0, 0.0))
        return max(0.0, score - (self.clock() - at) * self.config.forgive_per_s)

    def _refused(self, address: str) -> None:
        if address not in self._scores and len(self._scores) >= self.config.max_addresses:
            self._forget()
        self._scores[address] = (self.score(address) + 1, self.clock())

    def _forget(self) -> None:
        """Drop the most forgiven half of the remembered addresses."""
        ranked = sorted(self._scores, key=self.score)
        for address in ranked[: max(1, len(ranked) // 2)]:
            del self._scores[address]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        address = address_of(scope, self.trusted_header) if scope["type"] == "http" else None
        if address is None or not self.config.enabled:
            await self.app(scope, receive, send)
            return
        if self.score(address) >= self.config.limit:
            await self._slow_down(address, scope, receive, send)
            return
        status = 0

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            if 400 <= status < 500:
                self._refused(address)

    async def _slow_down(self, address: str, scope: Scope, receive: Receive,
                         send: Send) -> None:
        self._refused(address)
        if self.on_throttle is not None:
            self.on_throttle()
        waiting = self._waiting.get(address, 0)
        if waiting < self.config.max_waiting:
            self._waiting[address] = waiting + 1
            try:
                await asyncio.sleep(self.config.delay_s)
            finally:
                self._waiting[address] -= 1
                if not self._waiting[address]:
                    del self._waiting[address]
        retry = max(1.0, (self.score(address) - self.config.limit) / self.config.forgive_per_s)
        response = error_response(TooManyRefusals(
            f"too many refused requests from this address (more than {self.config.limit:g}, "
            f"forgiven at {self.config.forgive_per_s:g}/s): its requests are delayed and "
            f"refused until it sends fewer; fix the requests the API refuses (4xx answers) "
            f"and retry after {retry:.0f} s", retry))
        response.headers["connection"] = "close"  # a new connection for each, at least
        await response(scope, receive, send)
