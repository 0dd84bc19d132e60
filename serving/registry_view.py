"""The registry as a replica sees it: what to hold, where artifacts are, how to report failure.

Blocking calls (SQL, file or object-store reads); the adapter manager runs them
in threads.
"""

from __future__ import annotations

import logging
from pathlib import Path

from storage import ArtifactStore, get_version, list_versions, mark_failed, resident_versions
from storage.db import open_registry
from storage.errors import RegistryError

logger = logging.getLogger(__name__)


class RegistryView:
    """Read-mostly access to the registry and the artifact store for one replica."""

    def __init__(
        self,
        *,
        database_url: str,
        artifacts_location: str,
        cache_dir: str | Path,
        warm_previous: int = 2,
        actor: str = "replica",
        on_alias_change=None,
    ) -> None:
        self._sessions = open_registry(database_url, upgrade=False)
        self._artifacts = ArtifactStore(artifacts_location, cache_dir=cache_dir)
        self._warm_previous = warm_previous
        self._actor = actor
        self._on_alias_change = on_alias_change

    def wanted(self):
        with self._sessions() as session:
            return resident_versions(session, warm_previous=self._warm_previous)

    def catalog(self) -> dict[str, dict[str, str]]:
        """tenant -> ``{version id: status}`` of its versions; the router decides which
        statuses a request may pin (``serving.routing.ADDRESSABLE``) and says why not."""
        known: dict[str, dict[str, str]] = {}
        with self._sessions() as session:
            for version in list_versions(session):
                known.setdefault(version.tenant, {})[version.id] = str(version.status)
        return known

    def get(self, version_id: str):
        with self._sessions() as session:
            try:
                return get_version(session, version_id=version_id)
            except RegistryError:
                return None

    def fetch(self, version) -> str:
        return str(self._artifacts.load(version.artifact_uri, sha256=version.artifact_sha256))

    def report_failed(self, version_id: str, reason: str) -> None:
        with self._sessions() as session:
            mark_failed(
                session,
                version_id=version_id,
                actor=self._actor,
                reason=reason,
                on_alias_change=self._on_alias_change,
            )
