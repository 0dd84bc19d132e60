"""A real registry (SQLite, local artifacts) for adapter-manager tests, and versions in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.registry_view import RegistryView
from storage import ArtifactStore, promote, record_gate, register_candidate
from storage.db import open_registry


@dataclass
class LocalRegistry:
    """The registry's sessions and store (to write), and a replica's view of them (to read)."""

    sessions: object
    store: ArtifactStore
    view: RegistryView

    @classmethod
    def create(cls, root: Path) -> LocalRegistry:
        database = f"sqlite:///{root / 'registry.db'}"
        sessions = open_registry(database)
        view = RegistryView(database_url=database, artifacts_location=str(root / "artifacts"),
                            cache_dir=root / "cache")
        return cls(sessions, ArtifactStore(root / "artifacts"), view)

    def register(self, adapter_dir: Path, *, tenant: str = "acme") -> str:
        """Publish and register a gated version of ``tenant``; return its id."""
        published = self.store.publish(adapter_dir)
        with self.sessions() as session:
            register_candidate(session, version_id=published.version_id, tenant=tenant,
                               base_model="builtin:tiny", artifact_uri=published.uri,
                               artifact_sha256=published.sha256,
                               lora_config=published.lora_config)
        with self.sessions() as session:
            record_gate(session, version_id=published.version_id, passed=True, metrics={},
                        actor="test")
        return published.version_id

    def promote(self, version_id: str) -> None:
        with self.sessions() as session:
            promote(session, version_id=version_id, actor="test")
