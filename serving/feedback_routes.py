"""`POST /v1/feedback` and `GET /v1/feedback/{interaction_id}`: thumbs and corrections.

A client that may retry (after a timeout or a 503) sends an ``Idempotency-Key``
header: a repeat with the same key answers the first feedback id and records
nothing more; the same key on a different request is a 422.

The store (``feedback.store.FeedbackStore``) does the work: it checks the
interaction exists and belongs to the caller, applies limits and redaction,
and writes the event exactly once; its errors are answered by the table of
``serving.http_errors``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from feedback.errors import FeedbackNotFound, FeedbackUnavailable
from feedback.events import normalize_rating
from serving.auth import identify
from serving.http_errors import JSON_BYTES_PER_CHAR, limit_bodies, parse_body
from serving.refusals import address_of

#: Bytes of JSON a character of a correction or comment can take at most (a non-BMP
#: character escaped as a surrogate pair, ``\ud83d\ude00``), and room for the rest.
_ENVELOPE_BYTES = 4096


class FeedbackRequest(BaseModel):
    interaction_id: str = Field(min_length=1, max_length=64)
    rating: str | int = Field(description="up / down, or 1 / -1")
    correction: str | None = None
    comment: str | None = None
    user: str | None = Field(default=None, max_length=256)


def register_feedback_routes(api: FastAPI, service) -> None:
    """Add the feedback routes to ``api``; ``service`` has ``feedback`` and ``config``."""

    def store():
        if service.feedback is None:
            raise FeedbackUnavailable("feedback needs Redis, which this deployment does not have")
        return service.feedback

    def caller(request: Request, user: str | None):
        return identify(service.config.api_keys, request.headers.get("authorization"), user)

    limits = service.config.feedback
    limit_bodies(api, "/v1/feedback", _ENVELOPE_BYTES + JSON_BYTES_PER_CHAR * (
        limits.max_correction_chars + limits.max_comment_chars))

    @api.post("/v1/feedback", status_code=202)
    async def post_feedback(request: Request) -> JSONResponse:
        body = parse_body(await request.body(), FeedbackRequest)
        who = caller(request, body.user)
        feedback_id = await store().record(
            interaction_id=body.interaction_id,
            user=who.user,
            rating=body.rating,
            correction=body.correction,
            comment=body.comment,
            tenant=who.tenant,
            idempotency_key=request.headers.get("idempotency-key"),
            address=address_of(request.scope, limits.client_address_header),
        )
        if service.ledger is not None:  # credit the strategy that produced the answer
            service.ledger.credit(body.interaction_id, normalize_rating(body.rating),
                                  service.metrics.ratings)
        return JSONResponse(
            {"id": feedback_id, "object": "feedback", "interaction_id": body.interaction_id},
            status_code=202,
        )

    @api.get("/v1/feedback/{interaction_id}")
    async def get_feedback(
        interaction_id: str, request: Request, user: str | None = None
    ) -> JSONResponse:
        who = caller(request, user)
        current = await store().current(interaction_id, who.user, tenant=who.tenant)
        if current is None:
            raise FeedbackNotFound(interaction_id)
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
