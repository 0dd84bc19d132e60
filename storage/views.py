"""Plain, immutable views of registry rows, returned by ``storage.registry``.

Callers (CLI, admin API, serving, learner) never hold ORM objects or sessions
beyond a call; these dataclasses are safe to pass around and ``to_dict()``
gives their JSON form (times as ISO 8601 strings in UTC).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (SQLite returns naive ones; they were stored in UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else utc(value).isoformat()


class _View:
    """``to_dict()`` of a view dataclass: its fields, times as ISO 8601 strings in UTC."""

    def to_dict(self) -> dict[str, Any]:
        return {k: _iso(v) if isinstance(v, datetime) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class VersionInfo(_View):
    """An adapter version as stored in the registry."""

    id: str
    tenant: str
    base_model: str
    parent_id: str | None
    lora_config: dict[str, Any]
    artifact_uri: str
    artifact_sha256: str
    status: str
    metrics: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime
    dataset_size: int = 0


@dataclass(frozen=True)
class AliasInfo(_View):
    """``(tenant, name) -> version_id``; ``revision`` grows by one at every change."""

    tenant: str
    name: str
    version_id: str
    fraction: float | None
    pinned: bool
    revision: int
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class AuditEntry(_View):
    """One attempted change; ``outcome`` is ``ok`` or the kind of refusal."""

    id: int
    at: datetime
    actor: str
    action: str
    outcome: str
    tenant: str | None
    version_id: str | None
    alias: str | None
    from_status: str | None
    to_status: str | None
    from_version: str | None
    to_version: str | None
    reason: str
    detail: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AliasChange(_View):
    """A committed alias change: the message replicas reconcile on.

    ``version_id`` is ``None`` when the alias was removed (a stopped canary).
    The registry stays the source of truth; this is only a hint to re-read it.
    """

    tenant: str
    alias: str
    version_id: str | None
    previous_version_id: str | None
    fraction: float | None
    revision: int | None
    action: str
    actor: str
    at: datetime

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AliasChange:
        at = datetime.fromisoformat(data["at"]) if data.get("at") else datetime.now(UTC)
        return cls(**{**data, "at": at})


@dataclass(frozen=True)
class VersionDiff:
    """What differs between two versions: config, metrics and training data."""

    a: str
    b: str
    config: dict[str, tuple[Any, Any]]
    metrics: dict[str, tuple[Any, Any]]
    data: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "config": {k: {"a": va, "b": vb} for k, (va, vb) in self.config.items()},
            "metrics": {k: {"a": va, "b": vb} for k, (va, vb) in self.metrics.items()},
            "data": dict(self.data),
        }
