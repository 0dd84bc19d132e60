"""`POST /v1/feedback` and `GET /v1/feedback/{interaction_id}`: thumbs and corrections.

A client that may retry (after a timeout or a 503) sends an ``Idempotency-Key``
header: a repeat with the same key answers the first feedback id and records
nothing more; the same key on a different request is a 422.

The store (``feedback.store.FeedbackStore``) does the work: it checks the
interaction exists and belongs to the caller, applies limits and redaction,
and writes the event exactly once. This module maps its errors to HTTP.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from feedback.errors import (
    FeedbackTooLarge,
    FeedbackUnavailable,
    IdempotencyKeyReused,
    InteractionNotFound,
    InvalidFeedback,
    NotYourInteraction,
    RateLimited,
)
from serving.auth import identify


class FeedbackRequest(BaseModel):
    interaction_id: str = Field(min_length=1, max_length=64)
    rating: str | int = Field(description="up / down, or 1 / -1")
    correction: str | None = None
    comment: str | None = None
    user: str | None = Field(default=None, max_length=256)


def register_feedback_routes(api: FastAPI, service, api_error) -> None:
    """Add the feedback routes to ``api``; ``service`` has ``feedback`` and ``config``."""

    def store():
        if service.feedback is None:
            raise api_error(
                503,
                "feedback needs Redis, which this deployment does not have",
                type_="server_error",
                code="feedback_unavailable",
                retry_after_s=5,
            )
        return service.feedback

    def caller(request: Request, user: str | None):
        return identify(service.config.api_keys, request.headers.get("authorization"), user)

    @api.post("/v1/feedback", status_code=202)
    async def post_feedback(request: Request) -> JSONResponse:
        try:
            body = FeedbackRequest.model_validate(json.loads(await request.body()))
        except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
            raise api_error(400, f"invalid feedback: {exc}", type_="invalid_request_error") from exc
        who = caller(request, body.user)
        try:
            feedback_id = await store().record(
                interaction_id=body.interaction_id,
                user=who.user,
                rating=body.rating,
                correction=body.correction,
                comment=body.comment,
                tenant=who.tenant,
                idempotency_key=request.headers.get("idempotency-key"),
            )
        except Exception as exc:
            raise _mapped(exc, api_error) from exc
        return JSONResponse(
            {"id": feedback_id, "object": "feedback", "interaction_id": body.interaction_id},
            status_code=202,
        )

    @api.get("/v1/feedback/{interaction_id}")
    async def get_feedback(
        interaction_id: str, request: Request, user: str | None = None
    ) -> JSONResponse:
        who = caller(request, user)
        try:
            current = await store().current(interaction_id, who.user, tenant=who.tenant)
        except Exception as exc:
            raise _mapped(exc, api_error) from exc
        if current is None:
            raise api_error(
                404,
                f"no feedback from you for interaction {interaction_id!r}",
                type_="invalid_request_error",
                param="interaction_id",
            )
        return JSONResponse(
            {
                "id": current.id,
                "object": "feedback",
                "interaction_id": interaction_id,
                "rating": "up" if current.rating > 0 else "down",
                "correction": current.correction,
                "comment": current.comment,
                "created_at": current.created_at,
            }
        )


def _mapped(exc: Exception, api_error):
    kind = "invalid_request_error"
    if isinstance(exc, IdempotencyKeyReused):
        return api_error(422, str(exc), type_=kind, code="idempotency_key_reused")
    if isinstance(exc, FeedbackTooLarge):
        return api_error(413, str(exc), type_=kind, param=exc.field)
    if isinstance(exc, InvalidFeedback):
        return api_error(400, str(exc), type_=kind)
    if isinstance(exc, NotYourInteraction):
        return api_error(403, str(exc), type_="permission_error", param="interaction_id")
    if isinstance(exc, InteractionNotFound):
        return api_error(404, str(exc), type_=kind, param="interaction_id")
    if isinstance(exc, RateLimited):
        return api_error(
            429,
            str(exc),
            type_="rate_limit_error",
            code="rate_limited",
            retry_after_s=max(1, round(exc.retry_after_s)),
        )
    if isinstance(exc, FeedbackUnavailable):
        return api_error(
            503, str(exc), type_="server_error", code="feedback_unavailable", retry_after_s=1
        )
    return exc
