"""The OpenAI-compatible HTTP API: validation, routing, streaming, logging, metrics.

:class:`ChatService` is a plain object around a ``generate`` callable (a Ray
Serve handle in production, an :class:`~serving.replica.LLMReplica` in a
test), so the API can be built and tested without Ray; :func:`build_api` turns
it into a FastAPI app. Errors are raised, typed, and answered by the one table of
:mod:`serving.http_errors`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from feedback.events import hash_user, new_interaction_id
from feedback.redact import make_redactor, redact_interaction
from feedback.store import FeedbackConfig
from serving.answer import Answer
from serving.auth import ApiKey, check_tenant, identify
from serving.compute.spec import ComputeConfig, plan_for
from serving.errors import PromptTooLong, ServingError
from serving.feedback_routes import register_feedback_routes
from serving.http_errors import (
    JSON_BYTES_PER_CHAR,
    check_size,
    error_body_for,
    install_error_handlers,
    limit_bodies,
    parse_body,
)
from serving.metrics import ServingMetrics
from serving.refusals import RefusalConfig, RefusalThrottle
from serving.routing import ModelRouter
from serving.schema import (
    ChatCompletionRequest,
    chunk_body,
    compute_chunk_body,
    usage_chunk_body,
)
from serving.ui_routes import register_ui_routes

ADAPTER_HEADER = "X-Adapter-Version"
STRATEGY_HEADER = "X-Loraloop-Strategy"


class IngressConfig(BaseModel):
    """Limits and defaults of the HTTP API."""

    tenants: list[str] = Field(default_factory=lambda: ["default"])
    api_keys: dict[str, ApiKey] = Field(
        default_factory=dict, description="API key -> user (and tenant); empty: auth off."
    )
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Larger bodies get 413 "
                                "(every route; feedback's own limit is smaller).")
    max_prompt_chars: int = Field(default=65_536, ge=1, description=(
        "Longest prompt (all messages' characters) the ingress passes on; longer gets 400 "
        "prompt_too_long before any tokenizer runs (tokenizing 900 kB takes a second). "
        "Raise it for models whose context holds more (about 4 characters a token)."))
    pinnable_statuses: dict[str, list[str]] = Field(
        default_factory=dict, description="tenant -> version statuses besides live, canary "
        "and retired that its users may request as `tenant@<version>`.")
    default_max_tokens: int = Field(default=256, ge=1)
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After on 429/503.")
    compute: ComputeConfig = Field(default_factory=ComputeConfig, description="Test-time "
                                   "compute: caps, reasoning_effort levels, adaptive policy.")
    refusals: RefusalConfig = Field(default_factory=RefusalConfig, description="When an "
                                    "address sending refused requests is slowed down.")


class ChatService:
    """Everything behind the routes; one per ingress replica."""

    def __init__(
        self,
        *,
        generate: Callable[[dict], AsyncIterator[dict | ServingError]],
        config: IngressConfig,
        sink=None,
        readiness: Callable[[], Awaitable[dict]] | None = None,
        catalog=None,
        feedback=None,
        replicas: Callable[[], Awaitable[list]] | None = None,
        ledger=None,
    ) -> None:
        self.generate = generate
        self.config = config
        self.router = ModelRouter(config.tenants, catalog=catalog,
                                  allow_statuses=config.pinnable_statuses)
        self.sink = sink
        self.readiness = readiness
        self.feedback = feedback  # a feedback.store.FeedbackStore, or None without Redis
        self.replicas = replicas
        self.ledger = ledger  # a serving.compute.ledger.ComputeLedger, or None without Redis
        self.redactor = make_redactor(config.feedback.redactor)
        self.metrics = ServingMetrics(
            (lambda: sink.stats().as_dict()) if sink is not None else None
        )

    # -- chat ------------------------------------------------------------------------
    async def chat(self, raw: bytes, authorization: str | None = None) -> Response:
        started = time.perf_counter()
        check_size(len(raw), self.config.max_body_bytes)
        request = parse_body(raw, ChatCompletionRequest)
        chars = sum(len(m.content) for m in request.messages)
        if chars > self.config.max_prompt_chars:
            raise PromptTooLong(
                f"the prompt is {chars} characters; this API takes at most "
                f"{self.config.max_prompt_chars} (IngressConfig.max_prompt_chars): shorten the "
                "messages")
        route = self.router.resolve(request.model)
        caller = identify(self.config.api_keys, authorization, request.user)
        check_tenant(caller, route.tenant)
        if caller.authenticated:  # the key says who this is; the body cannot
            request = request.model_copy(update={"user": caller.user})
        plan = plan_for(route.tenant, request.loraloop, request.reasoning_effort, request.n,
                        self.config.compute)
        interaction_id = new_interaction_id()
        payload = {
            "request_id": interaction_id,
            "messages": [m.model_dump(include={"role", "content"}) for m in request.messages],
            "sampling": request.sampling(self.config.default_max_tokens),
            "n": request.n,
            "route": route.payload(hash_user(request.user)),
            "stream": request.stream,
            "compute": plan.payload() if plan is not None else None,
        }
        events = self.generate(payload)
        first = _checked(await anext(aiter(events)))
        headers = {ADAPTER_HEADER: first["adapter_version"],
                   STRATEGY_HEADER: first.get("strategy", "single")}
        answer = Answer(interaction_id, request, route, first, started)
        self.metrics.in_flight.inc()
        if request.stream:
            return StreamingResponse(
                self._stream(events, answer), media_type="text/event-stream", headers=headers
            )
        try:
            async for event in events:
                answer.take(_checked(event))
        except BaseException:
            answer.abandoned = True
            self._finish(answer)
            raise
        self._finish(answer)
        return JSONResponse(answer.body(), headers=headers)

    async def _stream(self, events, answer: Answer) -> AsyncIterator[str]:
        request = answer.request
        try:
            for index in range(request.n):
                yield _sse(
                    chunk_body(
                        interaction_id=answer.id,
                        model=request.model,
                        index=index,
                        chunk=None,
                        role=True,
                    )
                )
            async for event in events:
                error = _error_in(event)
                if error is not None:  # mid-stream: report it in-band and stop
                    yield _sse(error_body_for(error))
                    yield "data: [DONE]\n\n"
                    answer.abandoned = True
                    return
                answer.take(event)
                for index, chunk in event.get("items", ()):
                    yield _sse(
                        chunk_body(
                            interaction_id=answer.id, model=request.model, index=index, chunk=chunk
                        )
                    )
            if answer.record is not None:  # only a client that asked for compute gets it:
                # a chunk without choices could trip one that did not ask for usage either
                yield _sse(compute_chunk_body(interaction_id=answer.id, model=request.model,
                                              loraloop=answer.summary(),
                                              reasoning=answer.reasoning))
            if request.include_usage:
                yield _sse(
                    usage_chunk_body(
                        interaction_id=answer.id,
                        model=request.model,
                        prompt_tokens=answer.prompt_tokens,
                        completion_tokens=answer.completion_tokens,
                    )
                )
            yield "data: [DONE]\n\n"
        except BaseException:
            answer.abandoned = True  # the client went away (or the server is stopping)
            raise
        finally:
            await events.aclose()
            self._finish(answer)

    def _finish(self, answer: Answer) -> None:
        self.metrics.in_flight.dec()
        labels = (answer.route.tenant, answer.version)
        elapsed = time.perf_counter() - answer.started
        status = "abandoned" if answer.abandoned else "ok"
        self.metrics.requests.labels(*labels, str(answer.request.stream).lower(), status).inc()
        self.metrics.latency.labels(*labels).observe(elapsed)
        if answer.first_token_at is not None:
            self.metrics.first_token.labels(*labels).observe(answer.first_token_at - answer.started)
        self.metrics.prompt_tokens.labels(*labels).inc(answer.prompt_tokens)
        self.metrics.completion_tokens.labels(*labels).inc(answer.completion_tokens)
        if answer.abandoned:
            self.metrics.abandoned.labels(*labels).inc()
        self.metrics.compute(*labels, answer.record, answer.completion_tokens)
        if self.ledger is not None:
            self.ledger.served(answer.id, answer.route.tenant, answer.version, answer.record,
                               answer.completion_tokens)
        if self.sink is not None:
            # Built and redacted by the sink off the request path: a bad event is
            # counted, never raised.
            self.sink.submit(lambda: redact_interaction(answer.interaction(elapsed), self.redactor))

    # -- the other routes --------------------------------------------------------------------
    def models(self) -> dict:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "loraloop"}
                for name in self.router.names()
            ],
        }

    async def ready(self) -> tuple[bool, dict]:
        checks: dict = {}
        if self.readiness is not None:
            checks = await self.readiness()
        return all(v is True for v in checks.values()), checks


def _sse(body: dict) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


def _error_in(event: dict | ServingError) -> ServingError | None:
    """The error an event from the replicas carries, if it is one."""
    return event if isinstance(event, ServingError) else None


def _checked(event: dict | ServingError) -> dict:
    """``event``, unless it is an error: then raise it, for the error table to answer."""
    error = _error_in(event)
    if error is not None:
        raise error
    return event  # type: ignore[return-value]


def build_api(service: ChatService) -> FastAPI:
    """The FastAPI app serving ``service`` (used by the Serve ingress and by tests)."""
    api = FastAPI(title="loraloop", version="0.1.0")
    install_error_handlers(
        api,
        retry_after_s=service.config.retry_after_s,
        on_error=lambda status, type_: service.metrics.errors.labels(str(status), type_).inc(),
        max_body_bytes=service.config.max_body_bytes,
    )
    api.add_middleware(  # outermost: it sees every refusal, BodyLimit's included
        RefusalThrottle, config=service.config.refusals,
        trusted_header=service.config.feedback.client_address_header,
        on_throttle=lambda: (service.metrics.throttled.inc(),
                             service.metrics.errors.labels("429", "rate_limit_error").inc()))
    # A prompt longer than max_prompt_chars is refused anyway: a body that cannot hold a
    # shorter one (messages' JSON plus 64 kB of the rest) is refused unread, not parsed.
    limit_bodies(api, "/v1/chat/completions", min(
        service.config.max_body_bytes,
        65_536 + JSON_BYTES_PER_CHAR * service.config.max_prompt_chars))

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        # The body is already bounded and read (http_errors.BodyLimit).
        return await service.chat(await request.body(), request.headers.get("authorization"))

    register_feedback_routes(api, service)

    @api.get("/v1/models")
    async def models() -> dict:
        return service.models()

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, checks = await service.ready()
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @api.get("/status")
    async def status() -> dict:
        """Each replica's engine, resident adapter versions, routes and recent swaps."""
        found = await service.replicas() if service.replicas is not None else []
        return {"replicas": [r if isinstance(r, dict) else {"error": repr(r)} for r in found]}

    @api.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    register_ui_routes(api)  # the web UI at / and /ui, on the API's port
    return api
