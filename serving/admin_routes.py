"""The admin HTTP API: ``/admin/...`` mirrors ``loraloop adapters ...``.

Every endpoint needs ``Authorization: Bearer <admin token>``. The admin token
is separate from users' API keys: no token or a wrong one gets 401, a valid
*user* key gets 403, and an empty configured admin token refuses everything.
Errors use OpenAI-style bodies ``{"error": {"message", "type", "param",
"code"}}``: 404 unknown version or alias, 409 conflict (lost race, pinned
alias, nothing to roll back to), 422 illegal status move or malformed body,
400 invalid value (e.g. a canary fraction).

Alias moves accept ``expected_live`` in the body (a version id, or ``null``
for "no live version"); when it is given and another change won, the answer
is 409. Without it the move is unconditional (still serialized).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from storage import (
    AliasNotFound,
    ArtifactError,
    Conflict,
    IllegalTransition,
    InvalidArgument,
    RegistryError,
    VersionNotFound,
)

log = logging.getLogger(__name__)


class AdminError(Exception):
    """An HTTP error with an OpenAI-style body."""

    def __init__(
        self, status: int, message: str, type_: str, code: str, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status,
            message,
            type_,
            code,
            param,
        )

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


def error_for(exc: Exception) -> AdminError:
    """The HTTP error for a registry error."""
    if isinstance(exc, VersionNotFound | AliasNotFound):
        return AdminError(404, str(exc), "not_found_error", "not_found")
    if isinstance(exc, Conflict):
        return AdminError(409, str(exc), "conflict_error", "conflict")
    if isinstance(exc, IllegalTransition):
        return AdminError(422, str(exc), "invalid_request_error", "illegal_transition", "status")
    if isinstance(exc, InvalidArgument):
        return AdminError(400, str(exc), "invalid_request_error", "invalid_value", exc.param)
    if isinstance(exc, ArtifactError):
        return AdminError(422, str(exc), "invalid_request_error", "artifact_error")
    return AdminError(500, "internal registry error", "server_error", "internal_error")


class _AdminRoute(APIRoute):
    """Turns auth, validation and registry errors into OpenAI-style responses."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except AdminError as exc:
                return exc.response()
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
                return AdminError(
                    422,
                    f"invalid request: {first.get('msg', exc)}",
                    "invalid_request_error",
                    "invalid_request",
                    ".".join(loc) or None,
                ).response()
            except RegistryError as exc:
                if not isinstance(
                    exc,
                    VersionNotFound
                    | AliasNotFound
                    | Conflict
                    | IllegalTransition
                    | InvalidArgument
                    | ArtifactError,
                ):
                    log.exception("registry error in %s", request.url.path)
                return error_for(exc).response()

        return handler


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", description="Why; kept in the audit trail.")
    actor: str | None = Field(default=None, description="Who acts (default: admin-api).")


class GateBody(_Body):
    passed: bool
    metrics: dict[str, Any] = Field(default_factory=dict)


class AliasMoveBody(_Body):
    expected_live: str | None = Field(
        default=None,
        description="Version believed live (null: none); 409 if another is. "
        "Omit the field for an unconditional move.",
    )
    expected_revision: int | None = None
    force: bool = Field(default=False, description="Promote over a pinned live alias.")


class CanaryBody(_Body):
    fraction: float = Field(description="Share of traffic, strictly between 0 and 1.")


class RollbackBody(AliasMoveBody):
    to_version: str | None = None


def build_admin_router(
    *,
    session_factory: Callable[[], Any],
    admin_token: str,
    user_keys: Collection[str] | Callable[[str], bool] = (),
    notifier: Callable[[Any], Any] | None = None,
) -> APIRouter:
    """The ``/admin`` router over a registry session factory.

    ``user_keys`` (a collection or a predicate) recognizes users' API keys so
    that they get 403 instead of 401. ``notifier`` receives each committed
    alias change (e.g. a ``feedback.notify.AliasChangePublisher``).
    """
    import storage

    is_user_key = user_keys if callable(user_keys) else frozenset(user_keys).__contains__

    def authorize(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AdminError(
                401,
                "missing admin token: send 'Authorization: Bearer <token>' "
                "with the admin token (LORALOOP_ADMIN_TOKEN)",
                "authentication_error",
                "missing_admin_token",
            )
        token = token.strip()
        if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
            return
        if is_user_key(token):
            raise AdminError(
                403,
                "this is a user API key; /admin endpoints need the admin "
                "token (LORALOOP_ADMIN_TOKEN)",
                "permission_error",
                "not_admin",
            )
        reason = (
            "the admin API is disabled: LORALOOP_ADMIN_TOKEN is empty"
            if not admin_token
            else "invalid admin token"
        )
        raise AdminError(401, reason, "authentication_error", "invalid_admin_token")

    router = APIRouter(
        prefix="/admin", route_class=_AdminRoute, dependencies=[Depends(authorize)], tags=["admin"]
    )

    def run(fn: Callable[..., Any], **kwargs: Any) -> Any:
        with session_factory() as session:
            result = fn(session, **kwargs)
        if isinstance(result, list):
            return [item.to_dict() for item in result]
        return result.to_dict()

    def moves(body: AliasMoveBody) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "actor": body.actor or "admin-api",
            "reason": body.reason,
            "on_alias_change": notifier,
        }
        if "expected_live" in body.model_fields_set:
            kwargs["expected_live"] = body.expected_live
        return kwargs

    @router.get("/adapters")
    def list_adapters(
        tenant: str | None = None,
        status: str | None = None,
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> Any:
        try:
            return run(storage.list_versions, tenant=tenant, status=status, limit=limit)
        except ValueError as exc:  # an unknown status name
            if isinstance(exc, RegistryError):
                raise
            raise AdminError(
                400, str(exc), "invalid_request_error", "invalid_value", "status"
            ) from exc

    @router.get("/adapters/{version_id}")
    def show(version_id: str) -> Any:
        return run(storage.get_version, version_id=version_id)

    @router.get("/adapters/{version_id}/history")
    def version_history(version_id: str, limit: int = Query(default=100, ge=1)) -> Any:
        return run(storage.history, version_id=version_id, limit=limit)

    @router.get("/adapters/{a}/diff/{b}")
    def diff(a: str, b: str) -> Any:
        return run(storage.diff_versions, a=a, b=b)

    @router.post("/adapters/{version_id}/gate")
    def gate(version_id: str, body: GateBody) -> Any:
        return run(
            storage.record_gate,
            version_id=version_id,
            passed=body.passed,
            metrics=body.metrics,
            actor=body.actor or "admin-api",
            reason=body.reason,
        )

    @router.post("/adapters/{version_id}/promote")
    def promote(version_id: str, body: AliasMoveBody) -> Any:
        return run(
            storage.promote,
            version_id=version_id,
            force=body.force,
            expected_revision=body.expected_revision,
            **moves(body),
        )

    @router.post("/adapters/{version_id}/canary")
    def canary(version_id: str, body: CanaryBody) -> Any:
        return run(
            storage.start_canary,
            version_id=version_id,
            fraction=body.fraction,
            actor=body.actor or "admin-api",
            reason=body.reason,
            on_alias_change=notifier,
        )

    @router.post("/adapters/{version_id}/pin")
    def pin(version_id: str, body: AliasMoveBody) -> Any:
        return run(storage.pin, version_id=version_id, **moves(body))

    @router.post("/adapters/{version_id}/retire")
    def retire(version_id: str, body: _Body) -> Any:
        return run(
            storage.retire,
            version_id=version_id,
            actor=body.actor or "admin-api",
            reason=body.reason,
            on_alias_change=notifier,
        )

    @router.get("/tenants/{tenant}/aliases")
    def aliases(tenant: str) -> Any:
        return run(storage.list_aliases, tenant=tenant)

    @router.post("/tenants/{tenant}/rollback")
    def rollback(tenant: str, body: RollbackBody) -> Any:
        return run(storage.rollback, tenant=tenant, to_version=body.to_version, **moves(body))

    @router.delete("/tenants/{tenant}/canary")
    def stop_canary(
        tenant: str, rollback: bool = False, reason: str = "", actor: str | None = None
    ) -> Any:
        return run(
            storage.stop_canary,
            tenant=tenant,
            rollback=rollback,
            reason=reason,
            actor=actor or "admin-api",
            on_alias_change=notifier,
        )

    @router.delete("/tenants/{tenant}/pin")
    def unpin(tenant: str, reason: str = "", actor: str | None = None) -> Any:
        return run(storage.unpin, tenant=tenant, reason=reason, actor=actor or "admin-api")

    @router.get("/audit")
    def audit(tenant: str | None = None, limit: int = Query(default=100, ge=1)) -> Any:
        return run(storage.history, tenant=tenant, limit=limit)

    return router


def build_admin_app(
    *,
    session_factory: Callable[[], Any],
    admin_token: str,
    user_keys: Collection[str] | Callable[[str], bool] = (),
    notifier: Callable[[Any], Any] | None = None,
) -> FastAPI:
    """A FastAPI app serving only the admin router (tests, or a separate admin port)."""
    app = FastAPI(title="loraloop admin", docs_url=None, redoc_url=None)
    app.include_router(
        build_admin_router(
            session_factory=session_factory,
            admin_token=admin_token,
            user_keys=user_keys,
            notifier=notifier,
        )
    )
    return app
