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

Who acts is the admin whose token authorized the request (``admin-api`` for
``LORALOOP_ADMIN_TOKEN``, or the name of one of ``admin_tokens``): the audit's
``actor`` comes from the token, never from the body (a body naming ``actor``
is refused with 422).

Passing a gate by hand is an override of the evaluation gate, audited as such
(``storage.ops.GATE_OVERRIDE``). With ``gate_override_approvals=1`` it also
needs a second, different admin's token in the ``X-Approving-Admin-Token``
header (403 ``not_admin`` otherwise); the approver is named in the audit.

With the ingress's ``service``, two read-only routes serve the ops view (the web UI):
``GET /admin/learner/status`` (the learner's last published status, with its age and a
state: running, failing, stale, missing, unreachable) and ``GET /admin/stats``
(per-version requests, thumbs-up rate, handoff rate and compute per request from the
compute ledger, and this ingress's request counters); see :mod:`serving.ops_readings`.

Alias moves accept ``expected_live`` in the body (a version id, or ``null``
for "no live version"); when it is given and another change won, the answer
is 409. Without it the move is unconditional (still serialized).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from serving.auth import (
    SecondAdminRequired,
    admin_check,
    admin_name,
    admin_tokens,
)
from serving.http_errors import guard_bodies, install_error_handlers, limit_bodies
from serving.ops_readings import OpsConfig, OpsReadings

APPROVER_HEADER = "x-approving-admin-token"
Limit = Query(default=None, ge=1, le=1000, description="Newest entries (default: 100).")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", description="Why; kept in the audit trail.")


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
    admin_tokens_by_name: Mapping[str, str] | None = None,
    gate_override_approvals: Literal[0, 1] = 0,
    service: Any = None,
    ops_config: OpsConfig | None = None,
) -> APIRouter:
    """The ``/admin`` router over a registry session factory.

    ``user_keys`` (a collection or a predicate) recognizes users' API keys so
    that they get 403 instead of 401. ``notifier`` receives each committed
    alias change (e.g. a ``storage.alias_events.AliasChangePublisher``).
    ``admin_tokens_by_name`` adds named admins (name -> token) beside
    ``admin_token``; ``gate_override_approvals=1`` makes a manual gate pass need
    a second admin's token (see the module doc). ``service`` (the ingress's
    ``ChatService``) adds the learner status and statistics routes, read as
    ``ops_config`` says.
    """
    from storage.ops import RegistryOps

    if gate_override_approvals not in (0, 1):
        raise ValueError(
            f"gate_override_approvals={gate_override_approvals!r}: use 0 (one admin "
            "may pass a gate) or 1 (a second admin must approve)"
        )
    tokens = admin_tokens(admin_token, admin_tokens_by_name)
    if gate_override_approvals and len(tokens) < 2:
        raise ValueError(
            "gate_override_approvals=1 needs at least two admin tokens (admin_token and "
            f"admin_tokens_by_name), found {len(tokens)}: nobody could approve an override"
        )
    check = admin_check(admin_token, user_keys, admin_tokens_by_name)

    def authorize(request: Request) -> str:
        return check(request.headers.get("authorization"))

    def ops(request: Request) -> RegistryOps:
        actor = check(request.headers.get("authorization"))  # who acts: the token's admin
        return RegistryOps(session_factory, actor=actor, notifier=notifier)

    def approver(request: Request, actor: str) -> str | None:
        if not gate_override_approvals:
            return None
        second = admin_name(tokens, request.headers.get(APPROVER_HEADER))
        if second is None or second == actor:
            raise SecondAdminRequired(
                f"passing a gate by hand needs a second admin's approval: send another "
                f"admin's token (not {actor!r}'s) in the X-Approving-Admin-Token header"
            )
        return second

    router = APIRouter(prefix="/admin", dependencies=[Depends(authorize)], tags=["admin"])

    @router.get("/adapters")
    def list_adapters(
        request: Request, tenant: str | None = None, status: str | None = None,
        limit: int = Limit,
    ) -> Any:
        rows = ops(request).versions(tenant=tenant, status=status, limit=limit)
        return [row.version.to_dict() for row in rows]

    @router.get("/adapters/{version_id}")
    def show(request: Request, version_id: str) -> Any:
        return ops(request).show(version_id).version.to_dict()

    @router.get("/adapters/{version_id}/history")
    def version_history(request: Request, version_id: str, limit: int = Limit) -> Any:
        return _json(ops(request).history(version_id=version_id, limit=limit))

    @router.get("/adapters/{a}/diff/{b}")
    def diff(request: Request, a: str, b: str) -> Any:
        return _json(ops(request).diff(a, b))

    @router.post("/adapters/{version_id}/gate")
    def gate(request: Request, version_id: str, body: GateBody) -> Any:
        acting = ops(request)
        try:
            second = approver(request, acting.actor) if body.passed else None
        except SecondAdminRequired as exc:
            acting.gate_refused(version_id, outcome="unapproved", detail=str(exc),
                                reason=body.reason)
            raise
        verdict = acting.gate(
            version_id, passed=body.passed, metrics=body.metrics, reason=body.reason,
            approved_by=second,
        )
        return _json(verdict)

    @router.post("/adapters/{version_id}/promote")
    def promote(request: Request, version_id: str, body: AliasMoveBody) -> Any:
        moved = ops(request).promote(
            version_id,
            force=body.force,
            expected_revision=body.expected_revision,
            reason=body.reason,
            **body.expected(),
        )
        return _json(moved)

    @router.post("/adapters/{version_id}/canary")
    def canary(request: Request, version_id: str, body: CanaryBody) -> Any:
        moved = ops(request).start_canary(version_id, fraction=body.fraction, reason=body.reason)
        return _json(moved)

    @router.post("/adapters/{version_id}/pin")
    def pin(request: Request, version_id: str, body: AliasMoveBody) -> Any:
        return _json(ops(request).pin(version_id, reason=body.reason, **body.expected()))

    @router.post("/adapters/{version_id}/retire")
    def retire(request: Request, version_id: str, body: _Body) -> Any:
        return _json(ops(request).retire(version_id, reason=body.reason))

    @router.get("/tenants/{tenant}/aliases")
    def aliases(request: Request, tenant: str) -> Any:
        return _json(ops(request).aliases(tenant))

    @router.post("/tenants/{tenant}/rollback")
    def rollback(request: Request, tenant: str, body: RollbackBody) -> Any:
        moved = ops(request).rollback(
            tenant, to_version=body.to_version, reason=body.reason, **body.expected()
        )
        return _json(moved)

    @router.delete("/tenants/{tenant}/canary")
    def stop_canary(request: Request, tenant: str, rollback: bool = False,
                    reason: str = "") -> Any:
        return _json(ops(request).stop_canary(tenant, rollback=rollback, reason=reason))

    @router.delete("/tenants/{tenant}/pin")
    def unpin(request: Request, tenant: str, reason: str = "") -> Any:
        return _json(ops(request).unpin(tenant, reason=reason))

    @router.get("/audit")
    def audit(request: Request, tenant: str | None = None, limit: int = Limit) -> Any:
        return _json(ops(request).history(tenant=tenant, limit=limit))

    if service is not None:
        readings = OpsReadings(service, ops_config)

        @router.get("/learner/status")
        async def learner_status() -> Any:
            return await readings.learner_status()

        @router.get("/stats")
        async def stats() -> Any:
            return await readings.stats()

    return router


#: Largest admin request body: the admin API takes small JSON objects only.
MAX_ADMIN_BODY_BYTES = 64_000


def include_admin(app: FastAPI, **router_options: Any) -> None:
    """Serve ``/admin`` on ``app`` (which has the error table installed): the token is
    checked before any body is read, and bodies are bounded (413 beyond)."""
    app.include_router(build_admin_router(**router_options))
    guard_bodies(app, "/admin", admin_check(router_options["admin_token"],
                                            router_options.get("user_keys", ()),
                                            router_options.get("admin_tokens_by_name")))
    limit_bodies(app, "/admin", MAX_ADMIN_BODY_BYTES)


def build_admin_app(**router_options: Any) -> FastAPI:
    """A FastAPI app serving only the admin API (tests, or a separate admin port)."""
    app = FastAPI(title="loraloop admin", docs_url=None, redoc_url=None)
    install_error_handlers(app)
    include_admin(app, **router_options)
    return app
