"""Storage: the adapter registry (SQL, Alembic-managed) and the artifact store.

Versions are written in :mod:`storage.registry`, aliases moved in
:mod:`storage.aliases`, reads in :mod:`storage.queries`, the status machine in
:mod:`storage.states`, engines and migrations in :mod:`storage.db`, published
adapter files in :mod:`storage.artifacts`. :mod:`storage.ops` is what an
operator does (the CLI and the admin API render it).
"""

from storage.aliases import (
    CANARY,
    LIVE,
    UNCHECKED,
    pin,
    promote,
    rollback,
    start_canary,
    stop_canary,
    unpin,
)
from storage.artifacts import ArtifactStore, PublishedArtifact, content_digest
from storage.db import (
    create_engine_for,
    current_revision,
    downgrade,
    head_revision,
    make_session_factory,
    migrate,
    open_registry,
    upgrade_to_head,
)
from storage.errors import (
    AliasNotFound,
    ArtifactCorrupt,
    ArtifactError,
    ArtifactNotFound,
    Conflict,
    IllegalTransition,
    InvalidArgument,
    RegistryError,
    UnsafeArtifact,
    VersionNotFound,
)
from storage.ops import DEFAULT_LIMIT, Listed, Moved, RegistryOps
from storage.queries import (
    count_versions,
    dataset_stream_ids,
    dataset_users,
    diff_versions,
    get_alias,
    get_version,
    history,
    list_aliases,
    list_versions,
    resident_versions,
    trained_stream_ids,
    versions_trained_on,
)
from storage.registry import mark_failed, mark_rejected, record_gate, register_candidate, retire
from storage.states import STATUSES, TRANSITIONS, Status, allowed_next, check_transition
from storage.views import AliasChange, AliasInfo, AuditEntry, VersionDiff, VersionInfo

__all__ = [
    "CANARY",
    "DEFAULT_LIMIT",
    "LIVE",
    "STATUSES",
    "TRANSITIONS",
    "UNCHECKED",
    "AliasChange",
    "AliasInfo",
    "AliasNotFound",
    "ArtifactCorrupt",
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactStore",
    "AuditEntry",
    "Conflict",
    "IllegalTransition",
    "InvalidArgument",
    "Listed",
    "Moved",
    "PublishedArtifact",
    "RegistryError",
    "RegistryOps",
    "Status",
    "UnsafeArtifact",
    "VersionDiff",
    "VersionInfo",
    "VersionNotFound",
    "allowed_next",
    "check_transition",
    "content_digest",
    "count_versions",
    "create_engine_for",
    "current_revision",
    "dataset_stream_ids",
    "dataset_users",
    "diff_versions",
    "downgrade",
    "get_alias",
    "get_version",
    "head_revision",
    "history",
    "list_aliases",
    "list_versions",
    "make_session_factory",
    "mark_failed",
    "mark_rejected",
    "migrate",
    "open_registry",
    "pin",
    "promote",
    "record_gate",
    "register_candidate",
    "resident_versions",
    "retire",
    "rollback",
    "start_canary",
    "stop_canary",
    "trained_stream_ids",
    "unpin",
    "upgrade_to_head",
    "versions_trained_on",
]
