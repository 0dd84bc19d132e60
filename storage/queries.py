"""Read side of the registry: versions, aliases, audit history, diffs, datasets.

Keyword-only functions over a session; each runs in its own read transaction
and returns immutable views (``storage.views``). Version arguments accept the
full id or a unique prefix of at least :data:`MIN_PREFIX` characters.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.audit import entry
from storage.db import read_transaction
from storage.errors import InvalidArgument, VersionNotFound
from storage.models import AdapterVersion, Alias, AuditEvent, DatasetMember, DatasetSnapshot
from storage.states import parse_status
from storage.views import AliasInfo, AuditEntry, VersionDiff, VersionInfo, utc

MIN_PREFIX = 6


def find_version(session: Session, ref: str, *, lock: bool = False) -> AdapterVersion:
    """The version row whose id is ``ref`` or starts with it (inside a transaction)."""
    stmt = select(AdapterVersion).where(AdapterVersion.id == ref)
    if lock:
        stmt = stmt.with_for_update()
    row = session.scalars(stmt.execution_options(populate_existing=True)).one_or_none()
    if row is not None:
        return row
    if len(ref) >= MIN_PREFIX:
        matches = session.scalars(
            select(AdapterVersion.id)
            .where(AdapterVersion.id.startswith(ref, autoescape=True))
            .limit(5)
        ).all()
        if len(matches) == 1:
            return find_version(session, matches[0], lock=lock)
        if len(matches) > 1:
            raise InvalidArgument(
                f"version prefix {ref!r} is ambiguous: it matches {', '.join(matches)}; "
                "give more characters of the id",
                param="version_id",
            )
    hint = f" (prefixes need at least {MIN_PREFIX} characters)" if len(ref) < MIN_PREFIX else ""
    raise VersionNotFound(
        f"no adapter version {ref!r}{hint}; list versions with `loraloop adapters list`"
    )


def version_info(session: Session, row: AdapterVersion) -> VersionInfo:
    size = session.scalar(select(DatasetSnapshot.size).where(DatasetSnapshot.version_id == row.id))
    return VersionInfo(
        id=row.id,
        tenant=row.tenant,
        base_model=row.base_model,
        parent_id=row.parent_id,
        lora_config=dict(row.lora_config or {}),
        artifact_uri=row.artifact_uri,
        artifact_sha256=row.artifact_sha256,
        status=row.status,
        metrics=dict(row.metrics or {}),
        created_by=row.created_by,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
        dataset_size=size or 0,
    )


def alias_info(row: Alias) -> AliasInfo:
    return AliasInfo(
        tenant=row.tenant,
        name=row.name,
        version_id=row.version_id,
        fraction=row.fraction,
        pinned=bool(row.pinned),
        revision=row.revision,
        updated_by=row.updated_by,
        updated_at=utc(row.updated_at),
    )


def get_version(session: Session, *, version_id: str) -> VersionInfo:
    """One version; :class:`VersionNotFound` if unknown."""
    with read_transaction(session):
        return version_info(session, find_version(session, version_id))


def list_versions(
    session: Session,
    *,
    tenant: str | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> list[VersionInfo]:
    """Versions, newest first, optionally of one tenant and/or one status."""
    stmt = select(AdapterVersion).order_by(AdapterVersion.created_at.desc(), AdapterVersion.id)
    if tenant is not None:
        stmt = stmt.where(AdapterVersion.tenant == tenant)
    if status is not None:
        stmt = stmt.where(AdapterVersion.status == parse_status(status).value)
    if limit is not None:
        stmt = stmt.limit(limit)
    with read_transaction(session):
        return [version_info(session, row) for row in session.scalars(stmt)]


def get_alias(session: Session, *, tenant: str, alias: str = "live") -> AliasInfo | None:
    """The alias ``(tenant, alias)``, or ``None`` when it is not set."""
    with read_transaction(session):
        row = session.get(Alias, (tenant, alias))
        return alias_info(row) if row is not None else None


def list_aliases(session: Session, *, tenant: str | None = None) -> list[AliasInfo]:
    """All aliases (of one tenant), by tenant then name."""
    stmt = select(Alias).order_by(Alias.tenant, Alias.name)
    if tenant is not None:
        stmt = stmt.where(Alias.tenant == tenant)
    with read_transaction(session):
        return [alias_info(row) for row in session.scalars(stmt)]


def history(
    session: Session,
    *,
    version_id: str | None = None,
    tenant: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Audit entries, oldest first: the last ``limit`` about a version and/or tenant.

    A version's history includes the alias changes that moved traffic to or from it.
    """
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    with read_transaction(session):
        if version_id is not None:
            # Refused attempts on unknown ids are audited too: keep the id as given.
            with suppress(VersionNotFound):
                version_id = find_version(session, version_id).id
            stmt = stmt.where(
                (AuditEvent.version_id == version_id)
                | (AuditEvent.from_version == version_id)
                | (AuditEvent.to_version == version_id)
            )
        if tenant is not None:
            stmt = stmt.where(AuditEvent.tenant == tenant)
        return [entry(row) for row in reversed(session.scalars(stmt).all())]


def _changed(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def diff_versions(session: Session, *, a: str, b: str) -> VersionDiff:
    """What differs between versions ``a`` and ``b``: config, metrics and training data."""
    with read_transaction(session):
        va, vb = find_version(session, a), find_version(session, b)
        config_a = {"base_model": va.base_model, "parent_id": va.parent_id, **va.lora_config}
        config_b = {"base_model": vb.base_model, "parent_id": vb.parent_id, **vb.lora_config}
        ids_a, ids_b = set(_stream_ids(session, va.id)), set(_stream_ids(session, vb.id))
        return VersionDiff(
            a=va.id,
            b=vb.id,
            config=_changed(config_a, config_b),
            metrics=_changed(dict(va.metrics or {}), dict(vb.metrics or {})),
            data={
                "a_size": len(ids_a),
                "b_size": len(ids_b),
                "shared": len(ids_a & ids_b),
                "only_a": len(ids_a - ids_b),
                "only_b": len(ids_b - ids_a),
            },
        )


def _stream_ids(session: Session, version_id: str) -> list[str]:
    stmt = (
        select(DatasetMember.stream_id)
        .join(DatasetSnapshot, DatasetSnapshot.id == DatasetMember.snapshot_id)
        .where(DatasetSnapshot.version_id == version_id)
        .order_by(DatasetMember.stream_id)
    )
    return list(session.scalars(stmt))


def dataset_stream_ids(session: Session, *, version_id: str) -> list[str]:
    """The feedback stream ids that trained ``version_id``."""
    with read_transaction(session):
        return _stream_ids(session, find_version(session, version_id).id)


def dataset_users(session: Session, *, version_id: str) -> set[str]:
    """The (hashed) users whose feedback trained ``version_id`` (forgotten ones excluded)."""
    with read_transaction(session):
        stmt = (
            select(DatasetMember.user)
            .join(DatasetSnapshot, DatasetSnapshot.id == DatasetMember.snapshot_id)
            .where(DatasetSnapshot.version_id == find_version(session, version_id).id,
                   DatasetMember.user.is_not(None))
            .distinct()
        )
        return set(session.scalars(stmt))


def trained_stream_ids(session: Session, *, stream_ids: Iterable[str]) -> set[str]:
    """Which of ``stream_ids`` are already in a committed dataset (the learner acks those)."""
    wanted = list(dict.fromkeys(stream_ids))
    found: set[str] = set()
    with read_transaction(session):
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            found.update(
                session.scalars(
                    select(DatasetMember.stream_id).where(DatasetMember.stream_id.in_(chunk))
                )
            )
    return found


def versions_trained_on(
    session: Session,
    *,
    stream_ids: Iterable[str] | None = None,
    user: str | None = None,
    tenant: str | None = None,
) -> list[VersionInfo]:
    """Versions (of ``tenant``, if given) whose dataset holds any of ``stream_ids`` or any
    entry of ``user``.

    This is what ``users forget`` reports: the adapters a user's data trained.
    """
    if stream_ids is None and user is None:
        raise InvalidArgument("give stream_ids, user, or both", param="stream_ids")
    conditions = []
    if stream_ids is not None:
        conditions.append(DatasetMember.stream_id.in_(list(stream_ids)))
    if user is not None:
        conditions.append(DatasetMember.user == user)
    member = (
        select(DatasetSnapshot.version_id)
        .join(DatasetMember, DatasetMember.snapshot_id == DatasetSnapshot.id)
        .where(conditions[0] if len(conditions) == 1 else conditions[0] | conditions[1])
    )
    stmt = (
        select(AdapterVersion)
        .where(AdapterVersion.id.in_(member))
        .order_by(AdapterVersion.created_at, AdapterVersion.id)
    )
    if tenant is not None:
        stmt = stmt.where(AdapterVersion.tenant == tenant)
    with read_transaction(session):
        return [version_info(session, row) for row in session.scalars(stmt)]


def count_versions(session: Session, *, tenant: str | None = None) -> int:
    """How many versions there are (of one tenant)."""
    stmt = select(func.count()).select_from(AdapterVersion)
    if tenant is not None:
        stmt = stmt.where(AdapterVersion.tenant == tenant)
    with read_transaction(session):
        return int(session.scalar(stmt) or 0)


def resident_versions(
    session: Session, *, warm_previous: int = 2
) -> list[tuple[str, VersionInfo, float | None]]:
    """What every replica should hold: ``(role, version, fraction)`` with role ``live``
    (pinned or not), ``canary`` (with its traffic fraction) or ``warm``.

    ``warm`` are each tenant's last ``warm_previous`` live versions that are now
    retired, so a rollback is a routing change, not a load.
    """
    with read_transaction(session):
        wanted: list[tuple[str, VersionInfo, float | None]] = []
        seen: set[str] = set()
        for alias in session.scalars(select(Alias).order_by(Alias.tenant, Alias.name)):
            if alias.version_id and alias.version_id not in seen:
                row = session.get(AdapterVersion, alias.version_id)
                if row is not None:
                    wanted.append((alias.name, version_info(session, row), alias.fraction))
                    seen.add(row.id)
        if warm_previous > 0:
            # Versions that left `live` most recently, newest first, per tenant.
            demoted = session.execute(
                select(AuditEvent.tenant, AuditEvent.version_id)
                .where(AuditEvent.outcome == "ok", AuditEvent.from_status == "live")
                .order_by(AuditEvent.id.desc())
                .limit(200)
            ).all()
            per_tenant: dict[str, int] = {}
            for tenant, version_id in demoted:
                if not version_id or version_id in seen:
                    continue
                row = session.get(AdapterVersion, version_id)
                if row is None or row.status not in ("retired", "rolled_back"):
                    continue
                if per_tenant.get(tenant or "", 0) >= warm_previous:
                    continue
                per_tenant[tenant or ""] = per_tenant.get(tenant or "", 0) + 1
                wanted.append(("warm", version_info(session, row), None))
                seen.add(version_id)
        return wanted
