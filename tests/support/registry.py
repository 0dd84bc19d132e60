"""A real registry (SQLite, a local artifact store) and versions in it, for tests and benches.

Versions are registered as an operator registers them (:class:`storage.RegistryOps`:
publish, register, gate), so a test or bench that needs "a gated version of this
adapter" says so in one call: :meth:`LocalRegistry.register`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.registry_view import RegistryView
from storage import ArtifactStore, RegistryOps, get_version
from storage.db import open_registry


@dataclass
class LocalRegistry:
    """The registry under ``root``: its sessions, store and ops (to write), and a
    replica's view of it (to read)."""

    root: Path
    url: str
    sessions: object
    store: ArtifactStore
    ops: RegistryOps
    view: RegistryView

    @classmethod
    def create(cls, root: Path, *, notifier=None, actor: str = "test",
               url: str | None = None) -> LocalRegistry:
        """A registry in ``root`` (or at ``url``, already migrated, with its artifacts and
        caches in ``root``); alias moves are announced to ``notifier`` (if any)."""
        sessions = open_registry(url, upgrade=False) if url else None
        url = url or f"sqlite:///{root / 'registry.db'}"
        sessions = sessions or open_registry(url)
        artifacts = root / "artifacts"
        view = RegistryView(database_url=url, artifacts_location=str(artifacts),
                            cache_dir=root / "cache")
        ops = RegistryOps(sessions, actor=actor, notifier=notifier, artifacts=str(artifacts))
        return cls(root, url, sessions, ArtifactStore(artifacts), ops, view)

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def register(self, adapter_dir: Path, *, tenant: str = "acme",
                 base_model: str = "builtin:tiny") -> str:
        """Publish and register a gated version of ``tenant``; return its id."""
        version = self.ops.register(adapter_dir, tenant=tenant, base_model=base_model)
        return self.ops.gate(version.id, passed=True).id

    def promote(self, version_id: str) -> None:
        self.ops.promote(version_id)

    def rollback(self, tenant: str = "acme") -> None:
        self.ops.rollback(tenant)

    def load(self, version_id: str) -> Path:
        """The version's adapter directory, fetched from the store and checked."""
        with self.sessions() as session:
            info = get_version(session, version_id=version_id)
        return self.store.load(info.artifact_uri, sha256=info.artifact_sha256)
