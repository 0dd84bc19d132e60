"""The admin HTTP API: ``/admin/...`` renders :class:`storage.ops.RegistryOps` as JSON,
like ``loraloop adapters ...`` renders it as text.

Every endpoint needs ``Authorization: Bearer <admin token>``. The admin token
is separate from users' API keys: no token or a wrong one gets 401, a valid
*user* key gets 403, and an empty configured admin token refuses everything.
Errors are answered by the table of ``serving.http_errors`` (the app that
serves this router installs it), with OpenAI-style bodies ``{"error":
{"message", "type", "param", "code"}}``: 404 unknown version or alias, 409
conflict (lost race, pinned alias, nothing to roll back to), 422 illegal
status move or malformed body, 400 invalid value (e.g. a canary fraction).

Alias moves accept ``expected_live`` in the body (a version id, or ``null``
for "no live version"); when it is given and another change won, the answer
is 409. Without it the move is unconditional (still serialized).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from serving.auth import admin_check
from serving.http_errors import install_error_handlers

ADMIN_ACTOR = "admin-api"
Limit = Query(default=None, ge=1, le=1000, description="Newest entries (default: 100).")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", description="Why; kept in the audit trail.")
    actor: str | None = Field(default=None, description=f"Who acts (default: {ADMIN_ACTOR}).")


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

    def expected(self) -> dict[str, Any]:
        """``expected_live`` as ``RegistryOps`` takes it: only when the body has the field."""
        given = "expected_live" in self.model_fields_set
        return {"expected_live": self.expected_live} if given else {}


class CanaryBody(_Body):
    fraction: float = Field(description="Share of traffic, strictly between 0 and 1.")


class RollbackBody(AliasMoveBody):
    to_version: str | None = None


def _json(result: Any) -> Any:
    return [item.to_dict() for item in result] if isinstance(result, list) else result.to_dict()


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
    alias change (e.g. a ``storage.alias_events.AliasChangePublisher``).
    """
    from storage.ops import RegistryOps

    check = admin_check(admin_token, user_keys)

    def authorize(request: Request) -> None:
        check(request.headers.get("authorization"))

    def ops(body: _Body | None = None, actor: str | None = None) -> RegistryOps:
        who = (body.actor if body is not None else actor) or ADMIN_ACTOR
        return RegistryOps(session_factory, actor=who, notifier=notifier)

    router = APIRouter(prefix="/admin", dependencies=[Depends(authorize)], tags=["admin"])

    @router.get("/adapters")
    def list_adapters(
        tenant: str | None = None, status: str | None = None, limit: int = Limit
    ) -> Any:
        rows = ops().versions(tenant=tenant, status=status, limit=limit)
        return [row.version.to_dict() for row in rows]

    @router.get("/adapters/{version_id}")
    def show(version_id: str) -> Any:
        return ops().show(version_id).version.to_dict()

    @router.get("/adapters/{version_id}/history")
    def version_history(version_id: str, limit: int = Limit) -> Any:
        return _json(ops().history(version_id=version_id, limit=limit))

    @router.get("/adapters/{a}/diff/{b}")
    def diff(a: str, b: str) -> Any:
        return _json(ops().diff(a, b))

    @router.post("/adapters/{version_id}/gate")
    def gate(version_id: str, body: GateBody) -> Any:
        verdict = ops(body).gate(
            version_id, passed=body.passed, metrics=body.metrics, reason=body.reason
        )
        return _json(verdict)

    @router.post("/adapters/{version_id}/promote")
    def promote(version_id: str, body: AliasMoveBody) -> Any:
        moved = ops(body).promote(
            version_id,
            force=body.force,
            expected_revision=body.expected_revision,
            reason=body.reason,
            **body.expected(),
        )
        return _json(moved)

    @router.post("/adapters/{version_id}/canary")
    def canary(version_id: str, body: CanaryBody) -> Any:
        return _json(ops(body).start_canary(version_id, fraction=body.fraction, reason=body.reason))

    @router.post("/adapters/{version_id}/pin")
    def pin(version_id: str, body: AliasMoveBody) -> Any:
        return _json(ops(body).pin(version_id, reason=body.reason, **body.expected()))

    @router.post("/adapters/{version_id}/retire")
    def retire(version_id: str, body: _Body) -> Any:
        return _json(ops(body).retire(version_id, reason=body.reason))

    @router.get("/tenants/{tenant}/aliases")
    def aliases(tenant: str) -> Any:
        return _json(ops().aliases(tenant))

    @router.post("/tenants/{tenant}/rollback")
    def rollback(tenant: str, body: RollbackBody) -> Any:
        moved = ops(body).rollback(
            tenant, to_version=body.to_version, reason=body.reason, **body.expected()
        )
        return _json(moved)

    @router.delete("/tenants/{tenant}/canary")
    def stop_canary(
        tenant: str, rollback: bool = False, reason: str = "", actor: str | None = None
    ) -> Any:
        return _json(ops(actor=actor).stop_canary(tenant, rollback=rollback, reason=reason))

    @router.delete("/tenants/{tenant}/pin")
    def unpin(tenant: str, reason: str = "", actor: str | None = None) -> Any:
        return _json(ops(actor=actor).unpin(tenant, reason=reason))

    @router.get("/audit")
    def audit(tenant: str | None = None, limit: int = Limit) -> Any:
        return _json(ops().history(tenant=tenant, limit=limit))

    return router


def build_admin_app(**router_options: Any) -> FastAPI:
    """A FastAPI app serving only ``build_admin_router(**router_options)`` (tests, or a
    separate admin port), with the error table installed."""
    app = FastAPI(title="loraloop admin", docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.include_router(build_admin_router(**router_options))
    return app
