"""Initial registry schema: tenants, adapter versions, aliases, audit, datasets.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_tenants"),
    )
    op.create_table(
        "adapter_versions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("base_model", sa.String(512), nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("lora_config", JSON, nullable=False),
        sa.Column("artifact_uri", sa.Text(), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_adapter_versions"),
        sa.ForeignKeyConstraint(
            ["tenant"], ["tenants.name"], name="fk_adapter_versions_tenant_tenants"
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["adapter_versions.id"],
            name="fk_adapter_versions_parent_id_adapter_versions",
        ),
    )
    op.create_index("ix_adapter_versions_tenant", "adapter_versions", ["tenant"])
    op.create_index("ix_adapter_versions_status", "adapter_versions", ["status"])
    op.create_table(
        "aliases",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version_id", sa.String(64), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=True),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "name", name="pk_aliases"),
        sa.ForeignKeyConstraint(["tenant"], ["tenants.name"], name="fk_aliases_tenant_tenants"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["adapter_versions.id"],
            name="fk_aliases_version_id_adapter_versions",
        ),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=True),
        sa.Column("version_id", sa.String(64), nullable=True),
        sa.Column("alias", sa.String(64), nullable=True),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=True),
        sa.Column("from_version", sa.String(64), nullable=True),
        sa.Column("to_version", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_tenant", "audit_events", ["tenant"])
    op.create_index("ix_audit_events_version_id", "audit_events", ["version_id"])
    op.create_table(
        "dataset_snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version_id", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dataset_snapshots"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["adapter_versions.id"],
            name="fk_dataset_snapshots_version_id_adapter_versions",
        ),
        sa.UniqueConstraint("version_id", name="uq_dataset_snapshots_version_id"),
    )
    op.create_table(
        "dataset_members",
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("snapshot_id", "stream_id", name="pk_dataset_members"),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["dataset_snapshots.id"],
            name="fk_dataset_members_snapshot_id_dataset_snapshots",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_dataset_members_stream_id", "dataset_members", ["stream_id"])
    op.create_index("ix_dataset_members_user_id", "dataset_members", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_dataset_members_user_id", table_name="dataset_members")
    op.drop_index("ix_dataset_members_stream_id", table_name="dataset_members")
    op.drop_table("dataset_members")
    op.drop_table("dataset_snapshots")
    op.drop_index("ix_audit_events_version_id", table_name="audit_events")
    op.drop_index("ix_audit_events_tenant", table_name="audit_events")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("aliases")
    op.drop_index("ix_adapter_versions_status", table_name="adapter_versions")
    op.drop_index("ix_adapter_versions_tenant", table_name="adapter_versions")
    op.drop_table("adapter_versions")
    op.drop_table("tenants")
