"""Handoff to a stronger upstream model: any OpenAI-compatible ``/v1`` server.

:meth:`Upstream.stream` posts a chat completion to ``{url}/chat/completions`` with
``stream: true`` and yields the upstream's content deltas as they arrive. Before it sends,
it checks that an upstream is configured, that the circuit breaker admits the request and
that the tenant has budget left; when a check fails, or the upstream does, it raises
:class:`UpstreamUnavailable`, whose ``reason`` the caller records as its fallback
(``ComputeRecord.fallback``) before answering locally:

* ``not_configured``: ``UpstreamConfig.url`` is empty;
* ``breaker_open``: ``breaker_failures`` consecutive failures opened the circuit; after
  ``breaker_cooldown_s`` one trial request goes through (half-open), and its success
  closes the circuit, its failure opens it again;
* ``budget``: the tenant spent its tokens of the current window;
* ``error``: connection refused or dropped, an HTTP status >= 400, an error reported in
  the stream, or a stream that is not OpenAI's SSE;
* ``timeout``: no connection within ``connect_timeout_s``, no content within
  ``first_token_timeout_s``, or no end within ``total_timeout_s``.

The error may come mid-stream: ``UpstreamUnavailable.partial`` holds the text received.

Budget: the tokens a handoff spent (the upstream's ``usage`` when it reports it, else
about four characters a token) are charged to the tenant's window in
:class:`~serving.compute.upstream_budget.UpstreamBudget` (Redis, shared by the replicas on
a prefix, or this process when Redis does not answer). The check comes before a handoff
and the charge after it, so handoffs running at once may overspend by what they spend
together.

Privacy: ``redact`` (a ``feedback.redact`` redactor's ``redact``) is applied to every
message's content before anything leaves the process; without one, the default
(regex) redactor is, so that nothing leaves unredacted by omission.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from feedback.connections import redact_url
from feedback.redact import make_redactor
from serving.compute.upstream_budget import UpstreamBudget
from serving.compute.upstream_config import UpstreamConfig
from serving.errors import ServingError

__all__ = ["Upstream", "UpstreamAnswer", "UpstreamConfig", "UpstreamStream",
           "UpstreamUnavailable"]

log = logging.getLogger(__name__)

Reason = Literal["not_configured", "breaker_open", "budget", "error", "timeout"]
BreakerState = Literal["closed", "open", "half_open"]

#: Characters per token when the upstream reports no usage (English text, roughly).
CHARS_PER_TOKEN = 4


class UpstreamUnavailable(ServingError, RuntimeError):
    """No (complete) upstream answer; ``reason`` says why, ``partial`` what had arrived."""

    def __init__(self, reason: Reason, detail: str, *, partial: str = "") -> None:
        self.reason = reason
        self.partial = partial
        super().__init__(f"upstream unavailable ({reason}): {detail}")


@dataclass(frozen=True)
class UpstreamAnswer:
    """A whole upstream answer (:meth:`Upstream.complete`)."""

    text: str
    tokens: int
    model: str


class UpstreamStream:
    """The content deltas of one handoff: ``async for delta in stream``.

    ``text``, ``tokens`` and ``model`` grow as it runs; after the last delta they are the
    upstream's answer, the tokens charged to the tenant and the model that answered.
    ``aclose()`` abandons it (the connection is closed, what arrived is still charged).
    """

    def __init__(self, model: str) -> None:
        self.text = ""
        self.tokens = 0
        self.model = model
        self._deltas: AsyncGenerator[str, None] | None = None

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> str:
        assert self._deltas is not None
        return await self._deltas.__anext__()

    async def aclose(self) -> None:
        if self._deltas is not None:
            await self._deltas.aclose()


class _Breaker:
    """Consecutive-failure circuit breaker with a single half-open trial.

    Every method runs without awaiting, so it is atomic within the event loop.
    """

    def __init__(self, failures: int, cooldown_s: float) -> None:
        self.limit, self.cooldown_s = failures, cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self.trial = False

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        cooled = time.monotonic() - self.opened_at >= self.cooldown_s
        return "half_open" if self.trial or cooled else "open"

    def admit(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.trial:
            self.trial = True
            return True
        return False

    def reopens_in_s(self) -> float:
        left = self.cooldown_s - (time.monotonic() - (self.opened_at or 0.0))
        return max(0.0, left)

    def release(self) -> None:
        """An admitted request never reached the upstream: no verdict."""
        self.trial = False

    def success(self) -> None:
        self.failures, self.opened_at, self.trial = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        if self.trial or self.failures >= self.limit:
            self.opened_at, self.trial = time.monotonic(), False


class _StreamError(Exception):
    """The stream reported an error, or is not OpenAI's SSE."""


@dataclass
class _TenantStats:
    handoffs: int = 0
    upstream_tokens: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"handoffs": self.handoffs, "upstream_tokens": self.upstream_tokens,
                "fallbacks": dict(self.fallbacks)}


class Upstream:
    """The client of one upstream, shared by every request of a replica (one event loop)."""

    def __init__(self, config: UpstreamConfig, *, redis_url: str = "",
                 prefix: str = "loraloop", redact: Callable[[str], str] | None = None) -> None:
        self.config = config
        # Nothing leaves unredacted unless the operator chose the "none" redactor.
        self.redact = redact if redact is not None else make_redactor("regex").redact
        self.budget = UpstreamBudget(config.budget_window_s, redis_url=redis_url,
                                     prefix=prefix)
        self._http: httpx.AsyncClient | None = None
        self._breaker = _Breaker(config.breaker_failures, config.breaker_cooldown_s)
        self._tenants: dict[str, _TenantStats] = {}

    def available(self, tenant: str) -> bool:
        """Whether a handoff for ``tenant`` may be tried now: configured, circuit not open.

        (The budget is checked when the handoff starts; a spent one falls back then.)"""
        return bool(self.config.url) and self._breaker.state != "open" and bool(tenant)

    # -- the handoff -----------------------------------------------------------------------
    def stream(self, tenant: str, messages: list[dict], *, max_tokens: int,
               temperature: float) -> UpstreamStream:
        """The upstream's answer to ``messages`` as it arrives; see the module docstring.

        Nothing is checked or sent until the first ``__anext__``, which raises
        :class:`UpstreamUnavailable` when the handoff is refused or fails; a later one
        raises it with ``partial`` set when the upstream fails mid-answer.
        """
        self.budget.check_tenant(tenant)
        out = UpstreamStream(self.config.model)
        out._deltas = self._run(out, tenant, messages, max_tokens, temperature)
        return out

    async def complete(self, tenant: str, messages: list[dict], *, max_tokens: int,
                       temperature: float) -> UpstreamAnswer:
        """The whole answer of :meth:`stream`."""
        out = self.stream(tenant, messages, max_tokens=max_tokens, temperature=temperature)
        async with aclosing(out):
            async for _ in out:
                pass
        return UpstreamAnswer(text=out.text, tokens=out.tokens, model=out.model)

    async def _run(self, out: UpstreamStream, tenant: str, messages: list[dict],
                   max_tokens: int, temperature: float) -> AsyncGenerator[str, None]:
        config, breaker = self.config, self._breaker
        if not config.url:
            raise self._refuse(tenant, "not_configured", "no upstream is configured: set "
                               "UpstreamConfig.url (LORALOOP_UPSTREAM_URL) to an "
                               "OpenAI-compatible base URL ending in /v1")
        if not breaker.admit():
            raise self._refuse(tenant, "breaker_open", f"{breaker.failures} consecutive "
                               "failures opened the circuit; a trial request may go in "
                               f"{breaker.reopens_in_s():.1f} s")
        window = self.budget.window()
        try:
            spent, budget = await self.budget.spent(tenant, window), config.budget_for(tenant)
        except BaseException:  # cancelled while reading the budget: the trial never went
            breaker.release()
            raise
        if spent >= budget:
            breaker.release()
            raise self._refuse(tenant, "budget", f"tenant {tenant!r} spent {spent} of its "
                               f"{budget} upstream tokens in this {config.budget_window_s} s "
                               "window (UpstreamConfig.budget_tokens / tenant_budget_tokens)")
        sent = [self._redacted(m) for m in messages]
        verdict: str | None = None
        usage: int | None = None
        try:
            async with aclosing(self._deltas(sent, max_tokens, temperature, out)) as deltas:
                async for delta, reported in deltas:
                    usage = reported if reported is not None else usage
                    if delta:
                        out.text += delta
                        yield delta
            verdict = "ok"
        except (TimeoutError, httpx.TimeoutException) as exc:
            verdict = "timeout"
            what = "content" if not out.text else "the end of the answer"
            raise self._fail(tenant, "timeout", f"no {what} from {redact_url(config.url)} "
                             f"in time ({type(exc).__name__}; first_token_timeout_s="
                             f"{config.first_token_timeout_s:g}, total_timeout_s="
                             f"{config.total_timeout_s:g})", out.text) from exc
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError,
                _StreamError) as exc:
            verdict = "error"
            raise self._fail(tenant, "error", f"{redact_url(config.url)}: "
                             f"{type(exc).__name__}: {exc}", out.text) from exc
        finally:
            if verdict == "ok":
                breaker.success()
                self._tenant(tenant).handoffs += 1
            elif verdict is None and out.text:  # abandoned by the caller after an answer
                breaker.success()
            elif verdict is None:  # abandoned before any answer: no verdict on the upstream
                breaker.release()
            out.tokens = usage if usage is not None else self._estimate(sent, out.text)
            if not out.text and usage is None:
                out.tokens = 0  # nothing came back: assume nothing was spent
            self._tenant(tenant).upstream_tokens += out.tokens
            await self.budget.charge(tenant, window, out.tokens)

    async def _deltas(self, messages: list[dict], max_tokens: int, temperature: float,
                      out: UpstreamStream) -> AsyncIterator[tuple[str, int | None]]:
        """(content delta, total tokens if this event reported usage) of one request."""
        config = self.config
        body = {"model": config.model, "messages": messages, "stream": True,
                "stream_options": {"include_usage": True}, "temperature": temperature,
                "max_tokens": max(1, min(max_tokens, config.max_tokens))}
        loop = asyncio.get_running_loop()
        started = loop.time()
        total_at = started + config.total_timeout_s
        first_at = min(total_at, started + config.first_token_timeout_s)
        # Deadlines bound each await here, never the caller's code between two deltas.
        async with asyncio.timeout_at(first_at):
            request = self._client().build_request("POST", f"{config.url}/chat/completions",
                                                   json=body, headers=self._headers())
            response = await self._client().send(request, stream=True)
        try:
            if response.status_code >= 400:
                async with asyncio.timeout_at(first_at):
                    detail = (await response.aread())[:300].decode(errors="replace")
                raise _StreamError(f"HTTP {response.status_code}: {detail}")
            lines = response.aiter_lines()
            while True:
                async with asyncio.timeout_at(total_at if out.text else first_at):
                    line = await anext(lines, None)
                if line is None:
                    raise _StreamError("the stream ended before `data: [DONE]`")
                if not line.startswith("data:"):
                    continue  # blank separators, comments, event names
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                yield _parse_event(data, out)
        finally:
            await response.aclose()

    # -- helpers ---------------------------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            config = self.config
            timeout = httpx.Timeout(config.total_timeout_s, connect=config.connect_timeout_s,
                                    pool=config.connect_timeout_s)
            self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        return self._http

    def _headers(self) -> dict[str, str]:
        key = self.config.api_key.get_secret_value()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _redacted(self, message: dict) -> dict:
        content = message.get("content")
        if self.redact is None or content is None:
            return dict(message)
        if isinstance(content, str):
            return {**message, "content": self.redact(content)}
        parts = [{**p, "text": self.redact(p["text"])} if isinstance(p.get("text"), str) else p
                 for p in content]  # OpenAI's multi-part content
        return {**message, "content": parts}

    @staticmethod
    def _estimate(messages: list[dict], text: str) -> int:
        chars = len(text) + sum(len(json.dumps(m.get("content", ""))) for m in messages)
        return math.ceil(chars / CHARS_PER_TOKEN)

    def _tenant(self, tenant: str) -> _TenantStats:
        return self._tenants.setdefault(tenant, _TenantStats())

    def _refuse(self, tenant: str, reason: Reason, detail: str) -> UpstreamUnavailable:
        self._tenant(tenant).fallbacks[reason] += 1
        return UpstreamUnavailable(reason, detail)

    def _fail(self, tenant: str, reason: Reason, detail: str,
              partial: str) -> UpstreamUnavailable:
        self._breaker.failure()
        log.warning("handoff for tenant %s failed (%s): %s", tenant, reason, detail)
        error = self._refuse(tenant, reason, detail)
        error.partial = partial
        return error

    def stats(self) -> dict[str, Any]:
        """Counters per tenant (handoffs, upstream_tokens, fallbacks by reason), the
        breaker's state, and how often the budget store fell back to this process."""
        breaker = self._breaker
        return {"tenants": {t: s.as_dict() for t, s in self._tenants.items()},
                "breaker": {"state": breaker.state, "failures": breaker.failures},
                "budget_store_fallbacks": self.budget.fallbacks}

    async def aclose(self) -> None:
        """Close the HTTP and Redis clients (a later handoff opens new ones)."""
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
        await self.budget.aclose()

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _parse_event(data: str, out: UpstreamStream) -> tuple[str, int | None]:
    """(content delta, total tokens or None) of one ``data:`` payload."""
    try:
        event = json.loads(data)
    except json.JSONDecodeError as exc:
        raise _StreamError(f"a stream event is not JSON: {data[:200]!r}") from exc
    if not isinstance(event, dict):
        raise _StreamError(f"a stream event is not an object: {data[:200]!r}")
    if "error" in event:
        raise _StreamError(f"the upstream reported an error: {json.dumps(event['error'])[:300]}")
    if isinstance(event.get("model"), str) and event["model"]:
        out.model = event["model"]
    usage = event.get("usage")
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    try:
        delta = "".join(c["delta"].get("content") or "" for c in event.get("choices") or [])
    except (KeyError, TypeError, AttributeError) as exc:
        raise _StreamError(f"a stream event has no choices[].delta: {data[:200]!r}") from exc
    return delta, tokens if isinstance(tokens, int) and tokens >= 0 else None
