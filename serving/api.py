"""The OpenAI-compatible HTTP API: validation, routing, streaming, logging, metrics.

:class:`ChatService` is a plain object around a ``generate`` callable (a Ray
Serve handle in production, an :class:`~serving.replica.LLMReplica` in a
test), so the API can be built and tested without Ray; :func:`build_api` turns
it into a FastAPI app. HTTP status codes exist only here.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from feedback.events import Interaction, hash_user, new_interaction_id
from feedback.redact import make_redactor, redact_interaction
from feedback.store import FeedbackConfig
from serving.auth import ApiKey, AuthError, check_tenant, identify
from serving.errors import UnknownModel
from serving.feedback_routes import register_feedback_routes
from serving.metrics import ServingMetrics
from serving.routing import ModelRouter, Route
from serving.schema import (
    ChatCompletionRequest,
    chunk_body,
    completion_body,
    error_body,
    usage_chunk_body,
)

logger = logging.getLogger(__name__)
ADAPTER_HEADER = "X-Adapter-Version"
_ERROR_STATUS = {
    "prompt_too_long": 400,
    "adapter_not_loaded": 503,
    "overloaded": 429,  # the engine's own queue is full
    "replicas_busy": 503,  # Ray Serve's queue in front of the replicas is full
}


class IngressConfig(BaseModel):
    """Limits and defaults of the HTTP API."""

    tenants: list[str] = Field(default_factory=lambda: ["default"])
    api_keys: dict[str, ApiKey] = Field(
        default_factory=dict, description="API key -> user (and tenant); empty: auth off."
    )
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Larger bodies get 413.")
    default_max_tokens: int = Field(default=256, ge=1)
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After on 429/503.")


class ApiError(Exception):
    """An error answered in OpenAI's format with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type_,
            param,
            code,
        )
        self.retry_after_s = retry_after_s

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else None
        body = error_body(self.message, type_=self.type, param=self.param, code=self.code)
        return JSONResponse(body, status_code=self.status, headers=headers)


class ChatService:
    """Everything behind the routes; one per ingress replica."""

    def __init__(
        self,
        *,
        generate: Callable[[dict], AsyncIterator[dict]],
        config: IngressConfig,
        sink=None,
        readiness: Callable[[], Awaitable[dict]] | None = None,
        catalog=None,
        feedback=None,
        replicas: Callable[[], Awaitable[list]] | None = None,
    ) -> None:
        self.generate = generate
        self.config = config
        self.router = ModelRouter(config.tenants, catalog=catalog)
        self.sink = sink
        self.readiness = readiness
        self.feedback = feedback  # a feedback.store.FeedbackStore, or None without Redis
        self.replicas = replicas
        self.redactor = make_redactor(config.feedback.redactor)
        self.metrics = ServingMetrics(
            (lambda: sink.stats().as_dict()) if sink is not None else None
        )

    # -- chat ------------------------------------------------------------------------
    async def chat(self, raw: bytes, authorization: str | None = None) -> Response:
        started = time.perf_counter()
        request = self._parse(raw)
        route = self._route(request.model)
        try:
            caller = identify(self.config.api_keys, authorization, request.user)
            check_tenant(caller, route.tenant)
        except AuthError as exc:
            raise ApiError(exc.status, str(exc), type_="authentication_error") from exc
        if caller.authenticated:  # the key says who this is; the body cannot
            request = request.model_copy(update={"user": caller.user})
        interaction_id = new_interaction_id()
        payload = {
            "request_id": interaction_id,
            "messages": [m.model_dump(include={"role", "content"}) for m in request.messages],
            "sampling": request.sampling(self.config.default_max_tokens),
            "n": request.n,
            "route": route.payload(hash_user(request.user)),
            "stream": request.stream,
        }
        events = self.generate(payload)
        first = await anext(aiter(events))
        if first["type"] == "error":
            raise self._engine_error(first)
        headers = {ADAPTER_HEADER: first["adapter_version"]}
        answer = _Answer(interaction_id, request, route, first, started)
        self.metrics.in_flight.inc()
        if request.stream:
            return StreamingResponse(
                self._stream(events, answer), media_type="text/event-stream", headers=headers
            )
        try:
            async for event in events:
                if event["type"] == "error":
                    raise self._engine_error(event)
                answer.add_all(event)
        except BaseException:
            answer.abandoned = True
            self._finish(answer)
            raise
        self._finish(answer)
        return JSONResponse(answer.body(), headers=headers)

    async def _stream(self, events, answer: _Answer) -> AsyncIterator[str]:
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
                if event["type"] == "error":  # mid-stream: report it in-band and stop
                    error = self._engine_error(event)
                    yield _sse(error_body(error.message, type_=error.type))
                    answer.abandoned = True
                    return
                for index, chunk in event["items"]:
                    answer.add(index, chunk)
                    yield _sse(
                        chunk_body(
                            interaction_id=answer.id, model=request.model, index=index, chunk=chunk
                        )
                    )
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

    def _finish(self, answer: _Answer) -> None:
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
        if self.sink is not None:
            # Built and redacted by the sink off the request path: a bad event is
            # counted, never raised.
            self.sink.submit(lambda: redact_interaction(answer.interaction(elapsed), self.redactor))

    # -- parsing and errors ----------------------------------------------------------------
    def _parse(self, raw: bytes) -> ChatCompletionRequest:
        if len(raw) > self.config.max_body_bytes:
            raise ApiError(
                413,
                f"the request body is {len(raw)} bytes; the limit is "
                f"{self.config.max_body_bytes} bytes",
                type_="invalid_request_error",
            )
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(
                400, f"the body is not valid JSON: {exc}", type_="invalid_request_error"
            ) from exc
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object", type_="invalid_request_error")
        try:
            return ChatCompletionRequest.model_validate(data)
        except ValidationError as exc:
            raise _validation_error(exc) from exc

    def _route(self, model: str) -> Route:
        try:
            return self.router.resolve(model)
        except UnknownModel as exc:
            raise ApiError(
                404, str(exc), type_="invalid_request_error", param="model", code="model_not_found"
            ) from exc

    def _engine_error(self, event: dict) -> ApiError:
        status = _ERROR_STATUS.get(event["kind"], 500)
        retry = self.config.retry_after_s if status in (429, 503) else None
        type_ = "invalid_request_error" if status == 400 else "server_error"
        param = "messages" if event["kind"] == "prompt_too_long" else None
        return ApiError(
            status,
            event["message"],
            type_=type_,
            param=param,
            code=event["kind"],
            retry_after_s=retry,
        )

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


class _Answer:
    """What a request produced so far, for the response body, metrics and the log."""

    def __init__(self, interaction_id, request, route, start, started) -> None:
        self.id, self.request, self.route, self.started = interaction_id, request, route, started
        self.version = start["adapter_version"]
        self.prompt_tokens = start["prompt_tokens"]
        self.texts = [""] * request.n
        self.finish: list[str | None] = [None] * request.n
        self.logprobs = [[] if request.logprobs else None for _ in range(request.n)]
        self.completion_tokens = 0
        self.first_token_at: float | None = None
        self.abandoned = False

    def add_all(self, event: dict) -> None:
        for index, chunk in event["items"]:
            self.add(index, chunk)

    def add(self, index: int, chunk) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.texts[index] += chunk.text
        self.completion_tokens += len(chunk.token_ids)
        if chunk.finish_reason is not None:
            self.finish[index] = chunk.finish_reason
        if self.logprobs[index] is not None and chunk.logprobs:
            self.logprobs[index].extend(chunk.logprobs)

    def body(self) -> dict:
        return completion_body(
            interaction_id=self.id,
            model=self.request.model,
            choices=list(zip(self.texts, self.finish, self.logprobs, strict=True)),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )

    def interaction(self, elapsed_s: float) -> Interaction:
        request = self.request
        return Interaction(
            id=self.id,
            tenant=self.route.tenant,
            user=hash_user(request.user),
            model=request.model,
            adapter_version=self.version,
            messages=[m.model_dump(include={"role", "content"}) for m in request.messages],
            completions=self.texts,
            finish_reasons=self.finish,
            sampling=request.model_dump(
                include={
                    "temperature",
                    "top_p",
                    "max_tokens",
                    "max_completion_tokens",
                    "stop",
                    "seed",
                    "n",
                    "logprobs",
                    "top_logprobs",
                    "stream",
                }
            ),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_ms=elapsed_s * 1000.0,
            abandoned=self.abandoned,
        )


def _sse(body: dict) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


def _validation_error(exc: ValidationError) -> ApiError:
    problems = []
    first_param = None
    for error in exc.errors():
        param = ".".join(str(p) for p in error["loc"]) or None
        first_param = first_param or param
        value = error.get("input")
        shown = json.dumps(value)[:80] if not isinstance(value, dict) else "{...}"
        problems.append(f"{param}: {error['msg']} (got {shown})")
    return ApiError(
        400,
        "invalid request: " + "; ".join(problems),
        type_="invalid_request_error",
        param=first_param,
    )


def build_api(service: ChatService) -> FastAPI:
    """The FastAPI app serving ``service`` (used by the Serve ingress and by tests)."""
    api = FastAPI(title="loraloop", version="0.1.0")

    @api.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        service.metrics.errors.labels(str(exc.status), exc.type).inc()
        return exc.response()

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        logger.exception("unexpected error %s on %s", error_id, request.url.path)
        service.metrics.errors.labels("500", "server_error").inc()
        return JSONResponse(
            error_body(f"internal error {error_id}", type_="server_error"), status_code=500
        )

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > service.config.max_body_bytes:
            raise ApiError(
                413,
                f"the request body is {declared} bytes; the limit is "
                f"{service.config.max_body_bytes} bytes",
                type_="invalid_request_error",
            )
        return await service.chat(await request.body(), request.headers.get("authorization"))

    def api_error(status, message, **kwargs) -> ApiError:
        return ApiError(status, message, **kwargs)

    register_feedback_routes(api, service, api_error)

    @api.exception_handler(AuthError)
    async def _auth_error(request: Request, exc: AuthError) -> JSONResponse:
        return await _api_error(
            request, ApiError(exc.status, str(exc), type_="authentication_error")
        )

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

    return api
