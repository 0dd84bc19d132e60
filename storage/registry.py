"""The adapter registry's write side: register versions and move their status.

Keyword-only functions over a session, one transaction each (see
``storage.audit.run_change``): every attempt is audited, refused ones too.
Versions are registered here (with their training data, in the same
transaction) and judged (gate, reject, fail, retire); traffic moves
(promote, canary, rollback, pin) live in :mod:`storage.aliases`. The read
side is :mod:`storage.queries`; what operators do, over all three, is
:mod:`storage.ops`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.aliases import (
    CANARY,
    LIVE,
    _drop_alias,
    _lock,
    _lock_tenant,
    _make_live,
    _move,
    _previous_live,
)
from storage.audit import Attempt, Notifier, run_change
from storage.errors import Conflict, InvalidArgument
from storage.models import AdapterVersion, Alias, DatasetMember, DatasetSnapshot, Tenant
from storage.queries import find_version, version_info
from storage.states import Status, check_transition
from storage.views import VersionInfo

_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def register_candidate(
    session: Session,
    *,
    version_id: str,
    tenant: str,
    base_model: str,
    artifact_uri: str,
    artifact_sha256: str,
    lora_config: Mapping[str, Any],
    parent_id: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    dataset_stream_ids: Iterable[str] | Mapping[str, str | None] | None = None,
    actor: str = "learner",
    reason: str = "",
) -> VersionInfo:
    """Register a new ``candidate`` version and its training data, in one transaction.

    ``dataset_stream_ids`` are the feedback stream ids of the training batch, or a
    mapping stream id -> user. Registering the same id again with the same
    artifact is a no-op that returns the stored version.
    """
    attempt = Attempt(
        "register",
        actor,
        reason,
        tenant=tenant,
        version_id=version_id,
        to_status=Status.CANDIDATE,
        metrics=dict(metrics or {}),
    )
    members = (
        dict(dataset_stream_ids)
        if isinstance(dataset_stream_ids, Mapping)
        else dict.fromkeys(dataset_stream_ids or ())
    )

    def body(at: Attempt) -> VersionInfo:
        if not _TENANT.match(tenant):
            raise InvalidArgument(
                f"tenant name {tenant!r} is invalid: use 1-128 characters from A-Z a-z 0-9 _ . -",
                param="tenant",
            )
        if not _SHA256.match(artifact_sha256):
            raise InvalidArgument(
                f"artifact_sha256 {artifact_sha256!r} is not 64 lowercase "
                "hex digits; pass the digest ArtifactStore.publish returned",
                param="artifact_sha256",
            )
        _ensure_tenant(session, tenant)
        existing = session.get(AdapterVersion, version_id)
        if existing is not None:
            if existing.tenant != tenant:
                raise Conflict(
                    f"version {version_id} is already registered for tenant "
                    f"{existing.tenant!r}, so it cannot also belong to {tenant!r}: "
                    "ids are hashes of weights and config; register a distinct "
                    "adapter for this tenant"
                )
            if existing.artifact_sha256 != artifact_sha256:
                raise Conflict(
                    f"version {version_id} is already registered with artifact "
                    f"sha256 {existing.artifact_sha256}, not {artifact_sha256}; "
                    "use the id ArtifactStore.publish returned for this artifact"
                )
            at.detail, at.to_status = "already registered; nothing changed", existing.status
            return version_info(session, existing)
        if parent_id is not None:
            at.from_version = find_version(session, parent_id).id
        row = AdapterVersion(
            id=version_id,
            tenant=tenant,
            base_model=base_model,
            parent_id=at.from_version,
            lora_config=dict(lora_config),
            artifact_uri=artifact_uri,
            artifact_sha256=artifact_sha256,
            status=Status.CANDIDATE.value,
            metrics=dict(metrics or {}),
            created_by=actor,
        )
        session.add(row)
        session.flush()
        if members:
            snapshot = DatasetSnapshot(version_id=version_id, size=len(members))
            session.add(snapshot)
            session.flush()
            session.add_all(
                DatasetMember(snapshot_id=snapshot.id, stream_id=sid, user=user)
                for sid, user in members.items()
            )
            at.detail = f"dataset of {len(members)} stream entries"
        session.flush()
        return version_info(session, row)

    return run_change(session, attempt, body)


def record_gate(
    session: Session,
    *,
    version_id: str,
    passed: bool,
    metrics: Mapping[str, Any],
    actor: str = "learner",
    reason: str = "",
    detail: str = "",
) -> VersionInfo:
    """Store the evaluation gate's metrics; the candidate becomes ``gated`` or ``rejected``.

    ``detail`` goes to the audit row (an operator's override says so there)."""
    to = Status.GATED if passed else Status.REJECTED
    return _set_status(session, "gate", version_id, to, actor, reason, metrics, detail=detail)


def mark_rejected(
    session: Session,
    *,
    version_id: str,
    actor: str,
    reason: str = "",
    metrics: Mapping[str, Any] | None = None,
) -> VersionInfo:
    """Mark a version ``rejected`` (final)."""
    return _set_status(session, "reject", version_id, Status.REJECTED, actor, reason, metrics)


def mark_failed(
    session: Session,
    *,
    version_id: str,
    actor: str,
    reason: str = "",
    on_alias_change: Notifier | None = None,
) -> VersionInfo:
    """Mark a version ``failed`` (it would not load). Aliases on it move away.

    A failed canary loses its alias; a failed live version is replaced by the
    previous live one (as a rollback would), or the live alias is removed.
    """
    return _set_status(
        session, "fail", version_id, Status.FAILED, actor, reason, None, on_alias_change
    )


def retire(
    session: Session,
    *,
    version_id: str,
    actor: str,
    reason: str = "",
    on_alias_change: Notifier | None = None,
) -> VersionInfo:
    """Retire a version that no longer serves; a canary loses its alias. Live ones are refused."""
    return _set_status(
        session, "retire", version_id, Status.RETIRED, actor, reason, None, on_alias_change
    )


# -- internals ---------------------------------------------------------------------------


def _ensure_tenant(session: Session, tenant: str) -> None:
    if session.get(Tenant, tenant) is None:
        try:
            with session.begin_nested():  # a concurrent first registration may win the insert
                session.add(Tenant(name=tenant))
        except IntegrityError:
            pass
    _lock_tenant(session, tenant)


def _set_status(
    session: Session,
    action: str,
    version_id: str,
    to: Status,
    actor: str,
    reason: str,
    metrics: Mapping[str, Any] | None,
    on_alias_change: Notifier | None = None,
    *,
    detail: str = "",
) -> VersionInfo:
    attempt = Attempt(action, actor, reason, version_id=version_id, to_status=to, detail=detail)

    def body(at: Attempt) -> VersionInfo:
        version, live = _lock(session, at, LIVE)
        at.from_version = at.to_version = None
        if metrics:
            version.metrics = {**dict(version.metrics or {}), **dict(metrics)}
            at.metrics = dict(version.metrics)
        on_live = live is not None and live.version_id == version.id
        if on_live and to is Status.RETIRED:
            raise Conflict(
                f"version {version.id} is live for tenant {version.tenant!r}; "
                "promote another version or roll back before retiring it"
            )
        check_transition(version.id, version.status, to)
        if on_live:  # a failed live version: restore the previous one, or remove the alias
            assert live is not None
            target = _previous_live(session, version.tenant, version.id)
            if target is None:
                _drop_alias(session, at, live)
            else:
                restored = find_version(session, target, lock=True)
                prior = restored.status
                _make_live(session, at, restored, live, pinned=False, old_to=to)
                # The main row is this version's move; the restored one's is the side move.
                at.side_moves[-1] = (restored.id, prior, Status.LIVE.value)
                at.version_id, at.from_status, at.to_status = version.id, Status.LIVE, to
                return version_info(session, version)
        canary = session.get(Alias, (version.tenant, CANARY), populate_existing=True)
        if canary is not None and canary.version_id == version.id:
            _drop_alias(session, at, canary)
        _move(at, version, to)
        session.flush()
        return version_info(session, version)

    return run_change(session, attempt, body, on_alias_change=on_alias_change)
