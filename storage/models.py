"""SQLAlchemy 2 ORM models of the adapter registry.

Alembic owns the schema (``storage/migrations``); these classes describe it
for queries and for autogenerate. Times are stored in UTC.

Invariants kept by ``storage.registry`` (not by the schema alone):

* a version has status ``live`` iff the tenant's ``live`` alias points to it,
  and status ``canary`` iff the ``canary`` alias does;
* every change of status or alias writes one :class:`AuditEvent` in the same
  transaction; a refused attempt writes one in its own transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names so that migrations can drop and alter them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    """A tenant. Its row is the lock that serializes the tenant's registry writes."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AdapterVersion(Base):
    """One immutable adapter version; only ``status``, ``metrics`` and ``updated_at`` change."""

    __tablename__ = "adapter_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"), index=True)
    base_model: Mapped[str] = mapped_column(String(512))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("adapter_versions.id"))
    lora_config: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    artifact_uri: Mapped[str] = mapped_column(Text)
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Alias(Base):
    """``(tenant, name) -> version``; ``revision`` is the optimistic-concurrency counter."""

    __tablename__ = "aliases"

    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("adapter_versions.id"))
    fraction: Mapped[float | None] = mapped_column(Float)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    # UPDATE ... WHERE revision = :seen; zero rows -> StaleDataError -> Conflict.
    __mapper_args__ = {"version_id_col": revision}  # noqa: RUF012


class AuditEvent(Base):
    """One attempted registry change, successful or not.

    ``version_id`` and ``tenant`` are plain strings (no foreign keys): attempts
    on unknown ids are audited too.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    tenant: Mapped[str | None] = mapped_column(String(128), index=True)
    version_id: Mapped[str | None] = mapped_column(String(64), index=True)
    alias: Mapped[str | None] = mapped_column(String(64))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    from_version: Mapped[str | None] = mapped_column(String(64))
    to_version: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class DatasetSnapshot(Base):
    """The training data of one version, written in the transaction that registers it."""

    __tablename__ = "dataset_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[str] = mapped_column(
        ForeignKey("adapter_versions.id"), unique=True, nullable=False
    )
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetMember(Base):
    """One feedback stream entry (by its Redis stream id) in a snapshot, and its user."""

    __tablename__ = "dataset_members"

    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    stream_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str | None] = mapped_column("user_id", String(128))

    __table_args__ = (
        Index("ix_dataset_members_stream_id", "stream_id"),
        Index("ix_dataset_members_user_id", "user_id"),
    )
