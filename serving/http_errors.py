"""The one table from exceptions to HTTP, and the one handler that applies it.

Every route (chat, feedback, admin) raises the error of the package that found
the problem: ``serving.errors`` (engines, routing; they reach the ingress from
the replicas as values), ``feedback.errors``, ``storage.errors``,
``serving.auth``, or :class:`RequestError` for a request the edge itself cannot
read. :data:`RULES` gives each class its status, OpenAI error ``type`` and
``code``, and whether the answer carries ``Retry-After``; the most specific
class in an exception's MRO wins. Anything not in the table is a bug: it is
logged with its traceback under an id and answered as a plain 500.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feedback.errors import (
    FeedbackNotFound,
    FeedbackTooLarge,
    FeedbackUnavailable,
    IdempotencyKeyReused,
    InteractionNotFound,
    InvalidFeedback,
    NotYourInteraction,
    RateLimited,
)
from serving.auth import (
    InvalidAdminToken,
    InvalidApiKey,
    MissingAdminToken,
    MissingApiKey,
    NotAdmin,
    WrongTenant,
)
from serving.errors import (
    AdapterNotLoaded,
    EngineOverloaded,
    InvalidCompute,
    PromptTooLong,
    ReplicasBusy,
    ServingError,
    UnknownModel,
)
from serving.schema import error_body
from storage.errors import (
    AliasNotFound,
    ArtifactError,
    Conflict,
    IllegalTransition,
    InvalidArgument,
    VersionNotFound,
)

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

#: The body limit of an app that does not set one (the admin API's bodies are small).
DEFAULT_MAX_BODY_BYTES = 1_000_000


class RequestError(Exception):
    """The HTTP request itself is unusable; ``param`` names the offending field."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidRequest(RequestError, ValueError):
    """The body is not JSON, or not the schema of the route (chat, feedback)."""


class BodyTooLarge(RequestError, ValueError):
    """The body is larger than the ingress accepts."""


class TooManyRefusals(RequestError):
    """The caller's address sent more refused requests than the API forgives
    (:mod:`serving.refusals`); it is slowed down."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidBody(RequestError, ValueError):
    """FastAPI refused a body, query or path parameter of a route (the admin API's)."""


@dataclass(frozen=True)
class Rule:
    """How one class of errors is answered."""

    status: int
    type: str
    code: str | None = None
    #: The parameter to blame when the exception names none (``exc.param``).
    param: str | None = None
    #: Send ``Retry-After``: the exception's ``retry_after_s``, else the ingress default.
    retry: bool = False


_INVALID, _SERVER, _AUTH, _DENIED = (
    "invalid_request_error",
    "server_error",
    "authentication_error",
    "permission_error",
)
_NOT_FOUND = Rule(404, "not_found_error", "not_found")

RULES: dict[type[BaseException], Rule] = {
    # the request as the edge reads it
    InvalidRequest: Rule(400, _INVALID),
    BodyTooLarge: Rule(413, _INVALID),
    InvalidBody: Rule(422, _INVALID, "invalid_request"),
    TooManyRefusals: Rule(429, "rate_limit_error", "too_many_refused_requests", retry=True),
    # who calls
    MissingApiKey: Rule(401, _AUTH, "missing_api_key"),
    InvalidApiKey: Rule(401, _AUTH, "invalid_api_key"),
    WrongTenant: Rule(403, _DENIED, "wrong_tenant"),
    MissingAdminToken: Rule(401, _AUTH, "missing_admin_token"),
    InvalidAdminToken: Rule(401, _AUTH, "invalid_admin_token"),
    NotAdmin: Rule(403, _DENIED, "not_admin"),
    # chat: routing, the replicas and their engines
    UnknownModel: Rule(404, _INVALID, "model_not_found", param="model"),
    PromptTooLong: Rule(400, _INVALID, "prompt_too_long", param="messages"),
    InvalidCompute: Rule(400, _INVALID, "invalid_compute"),
    EngineOverloaded: Rule(429, _SERVER, "overloaded", retry=True),  # the engine's queue
    AdapterNotLoaded: Rule(503, _SERVER, "adapter_not_loaded", retry=True),
    ReplicasBusy: Rule(503, _SERVER, "replicas_busy", retry=True),  # Ray Serve's queue
    ServingError: Rule(500, _SERVER, "engine_error"),
    # feedback
    IdempotencyKeyReused: Rule(422, _INVALID, "idempotency_key_reused"),
    FeedbackTooLarge: Rule(413, _INVALID),
    InvalidFeedback: Rule(400, _INVALID),
    NotYourInteraction: Rule(403, _DENIED, param="interaction_id"),
    InteractionNotFound: Rule(404, _INVALID, param="interaction_id"),
    FeedbackNotFound: Rule(404, _INVALID, param="interaction_id"),
    RateLimited: Rule(429, "rate_limit_error", "rate_limited", retry=True),
    FeedbackUnavailable: Rule(503, _SERVER, "feedback_unavailable", retry=True),
    # the registry (admin)
    VersionNotFound: _NOT_FOUND,
    AliasNotFound: _NOT_FOUND,
    Conflict: Rule(409, "conflict_error", "conflict"),
    IllegalTransition: Rule(422, _INVALID, "illegal_transition", param="status"),
    InvalidArgument: Rule(400, _INVALID, "invalid_value"),
    ArtifactError: Rule(422, _INVALID, "artifact_error"),
}


def rule_for(exc: BaseException) -> Rule | None:
    """The rule of the most specific class of ``exc`` in :data:`RULES`, or ``None``."""
    return next((RULES[c] for c in type(exc).__mro__ if c in RULES), None)


def error_body_for(exc: BaseException) -> dict:
    """The OpenAI error envelope of ``exc`` (also sent in-band on a started stream)."""
    rule = rule_for(exc) or Rule(500, _SERVER, "internal_error")
    param = getattr(exc, "param", None) or rule.param
    return error_body(str(exc), type_=rule.type, param=param, code=rule.code)


def error_response(exc: BaseException, *, retry_after_s: float = 1) -> JSONResponse:
    """The OpenAI-style answer to ``exc``, an instance of a class in :data:`RULES`."""
    rule = rule_for(exc)
    assert rule is not None, f"{type(exc).__name__} has no rule in serving.http_errors.RULES"
    headers = {}
    if rule.retry:
        seconds = getattr(exc, "retry_after_s", None) or retry_after_s
        headers["Retry-After"] = str(max(1, math.ceil(seconds)))
    if rule.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body_for(exc), status_code=rule.status, headers=headers or None)


def install_error_handlers(
    app: FastAPI,
    *,
    retry_after_s: float = 1,
    on_error: Callable[[int, str], Any] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Answer every error raised by ``app``'s routes through :data:`RULES`.

    ``retry_after_s`` is the ``Retry-After`` of errors that do not say when to
    retry; ``on_error(status, type)`` is called for each error answered (metrics).
    Every request body of ``app`` is bounded by ``max_body_bytes``
    (:class:`BodyLimit`), whatever route or router reads it.
    """
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes, on_error=on_error)

    async def known(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, RequestValidationError):
            message, param = describe_validation(exc.errors())
            exc = InvalidBody(message, param=param)
        if on_error is not None:
            rule = rule_for(exc)
            assert rule is not None
            on_error(rule.status, rule.type)
        return error_response(exc, retry_after_s=retry_after_s)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        logger.exception("unexpected error %s on %s", error_id, request.url.path)
        if on_error is not None:
            on_error(500, _SERVER)
        body = error_body(f"internal error {error_id}", type_=_SERVER, code="internal_error")
        return JSONResponse(body, status_code=500)

    for cls in (*RULES, RequestValidationError):
        app.add_exception_handler(cls, known)
    app.add_exception_handler(Exception, unexpected)


def describe_validation(errors: list[Any]) -> tuple[str, str | None]:
    """A message naming every invalid field and its value, and the first field's name."""
    problems, first = [], None
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        first = first or param
        value = error.get("input")
        shown = json.dumps(value, default=str)[:80] if not isinstance(value, dict) else "{...}"
        problems.append(f"{param}: {error['msg']} (got {shown})")
    return "invalid request: " + "; ".join(problems), first


def check_size(size: int, limit: int) -> None:
    """Raise :class:`BodyTooLarge` when a body of ``size`` bytes is over ``limit``."""
    if size > limit:
        raise BodyTooLarge(f"the request body is {size} bytes; the limit is {limit} bytes")


def parse_body(raw: bytes, model: type[M]) -> M:
    """``raw`` as a JSON object validated by ``model``, or :class:`InvalidRequest`."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the body is not valid UTF-8 (byte {raw[exc.start]:#04x} at "
                             f"offset {exc.start}): send JSON encoded as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation(exc.errors())
        raise InvalidRequest(message, param=param) from exc


#: A check of a request's headers that must pass before its body is read: it
#: raises an error of :data:`RULES` (e.g. ``serving.auth.admin_check``'s check of
#: the ``Authorization`` header).
HeaderCheck = Callable[[str | None], None]


#: The most JSON bytes one character of text can take (an escaped surrogate pair).
JSON_BYTES_PER_CHAR = 12


def limit_bodies(app: FastAPI, prefix: str, max_bytes: int) -> None:
    """Bound the bodies of requests under ``prefix`` by ``max_bytes`` (below the app's limit)."""
    app.state.body_limits = [*getattr(app.state, "body_limits", ()), (prefix, max_bytes)]


def guard_bodies(app: FastAPI, prefix: str, check: HeaderCheck) -> None:
    """Run ``check(authorization)`` on every request under ``prefix`` before its body is read.

    A caller without the right token then costs the server no body read at all.
    ``app`` must have had :func:`install_error_handlers` called on it.
    """
    app.state.body_guards = [*getattr(app.state, "body_guards", ()), (prefix, check)]


class BodyLimit:
    """ASGI middleware: bound and pre-read every request body before any route parses it.

    A ``Content-Length`` over ``max_body_bytes`` is refused with 413 before a byte
    is read; a chunked body (no ``Content-Length``) is read until it passes the
    limit, then refused with 413 without reading the rest. Checks registered
    with :func:`guard_bodies` run on the headers first. The route then receives
    the body already in memory, so no route can read an unbounded one.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int,
                 on_error: Callable[[int, str], Any] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        limit = min([self.max_body_bytes, *(n for p, n in _state(scope, "body_limits")
                                            if path.startswith(p))])
        try:
            for prefix, check in _state(scope, "body_guards"):
                if path.startswith(prefix):
                    check(headers.get("authorization"))
            declared = headers.get("content-length", "")
            if declared.isdigit():
                check_size(int(declared), limit)
            body = await _read_bounded(receive, limit)
        except tuple(RULES) as exc:
            rule = rule_for(exc)
            if self.on_error is not None and rule is not None:
                self.on_error(rule.status, rule.type)
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _state(scope: Scope, name: str) -> list[tuple[str, Any]]:
    """What :func:`limit_bodies` or :func:`guard_bodies` registered on the app."""
    return list(getattr(getattr(scope.get("app"), "state", None), name, ()))


async def _read_bounded(receive: Receive, limit: int) -> bytes:
    """The whole body, or :class:`BodyTooLarge` as soon as it passes ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(parts)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the request body is over {limit} bytes (read {size} so far); "
                               f"the limit is {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``body`` once, then waits on the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
