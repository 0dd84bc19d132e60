"""Serving on while the registry database is down: the last known routes, kept on local disk.

The SQL registry is where routes come from, but chat must not depend on it:
a replica or ingress that (re)starts while PostgreSQL is unreachable answers
from the last routes it (or a neighbour sharing its cache directory) read, or
from the base model when there are none, and converges when the database
returns.

- :class:`SnapshotRegistry` wraps a replica's :class:`~serving.registry_view.RegistryView`:
  every successful ``wanted()`` is written to a JSON file; while the database
  is unreachable ``wanted()`` answers from that file.
- :class:`CatalogCache` is the ingress's catalog (tenant -> version ids): read
  in a thread by a background task, never on the event loop, and also kept on disk.
- :func:`start_routes` is a replica's first reconcile, which never fails its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ROUTES_FILE = "routes-snapshot.json"
CATALOG_FILE = "catalog-snapshot.json"


@dataclass(frozen=True)
class SnapshotVersion:
    """What a replica needs of a version to load and route it without the database."""

    id: str
    tenant: str
    artifact_uri: str
    artifact_sha256: str
    status: str = "live"


def _write_json(path: Path, data: Any) -> None:
    """Atomically (replicas sharing the directory never read half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        logger.warning("route snapshot %s is unreadable; ignoring it", path, exc_info=True)
        return None


class SnapshotRegistry:
    """A replica's registry (``serving.adapters.Registry``) that survives a database outage."""

    def __init__(self, view, snapshot_dir: str | Path) -> None:
        self._view = view
        self.path = Path(snapshot_dir) / ROUTES_FILE
        #: Whether the last ``wanted()`` came from the snapshot (the database was unreachable).
        self.degraded = False

    def wanted(self) -> list[tuple[str, Any, float | None]]:
        try:
            wanted = self._view.wanted()
        except Exception as exc:
            saved = _read_json(self.path)
            if saved is None:
                raise
            if not self.degraded:
                logger.warning("the registry database is unreachable (%s); serving the "
                               "last known routes from %s until it returns", exc, self.path)
            self.degraded = True
            return [(role, SnapshotVersion(**version), fraction)
                    for role, version, fraction in saved]
        if self.degraded:
            logger.info("the registry database is back; converging on it")
        self.degraded = False
        try:
            _write_json(self.path, [(role, _fields(version), fraction)
                                    for role, version, fraction in wanted])
        except OSError:  # a full or read-only disk costs the fallback, never the answer
            logger.warning("could not write the route snapshot %s", self.path, exc_info=True)
        return wanted

    def get(self, version_id: str):
        try:
            return self._view.get(version_id)
        except Exception:
            for _, version, _ in _read_json(self.path) or []:
                if version["id"] == version_id:
                    return SnapshotVersion(**version)
            raise

    def fetch(self, version) -> str:
        return self._view.fetch(version)

    def report_failed(self, version_id: str, reason: str) -> None:
        self._view.report_failed(version_id, reason)


def _fields(version) -> dict:
    return {name: getattr(version, name)
            for name in ("id", "tenant", "artifact_uri", "artifact_sha256", "status")}


async def start_routes(manager) -> bool:
    """A new replica's first reconcile; ``False`` (base only) if it could not read any routes.

    Never raises: a replica that cannot reach the registry and has no snapshot
    still starts and answers with the base model; the reconciler converges later.
    """
    try:
        await manager.reconcile()
    except Exception:
        logger.warning("no routes at start (registry unreachable, no snapshot): serving "
                       "base until the registry answers", exc_info=True)
        return False
    return True


class CatalogCache:
    """The ingress's catalog: a non-blocking callable over a copy refreshed in a thread.

    ``__call__`` (what :class:`~serving.routing.ModelRouter` calls on the event
    loop) only returns the copy and asks for a refresh; :meth:`run` reads the
    registry with ``asyncio.to_thread`` at start, on request and every ``refresh_s``.
    """

    def __init__(self, read: Callable[[], dict[str, list[str]]], *,
                 snapshot_dir: str | Path | None = None, refresh_s: float = 5.0) -> None:
        self._read = read
        self._path = Path(snapshot_dir) / CATALOG_FILE if snapshot_dir is not None else None
        self._refresh_s = refresh_s
        self._known: dict[str, list[str]] = (_read_json(self._path) or {}) if self._path else {}
        self._kick: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reads = 0  #: successful reads of the registry

    def __call__(self) -> dict[str, list[str]]:
        if self._kick is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._kick.set)
        return self._known

    def refresh(self) -> bool:
        """Read the registry now (blocking: call it in a thread); ``False`` if unreachable."""
        try:
            known = self._read()
        except Exception as exc:
            logger.warning("could not read the registry's catalog (%s); keeping the last "
                           "known one", exc)
            return False
        self._known = known
        self.reads += 1
        if self._path is not None:
            try:
                _write_json(self._path, known)
            except OSError:
                logger.warning("could not write the catalog snapshot %s", self._path)
        return True

    async def run(self) -> None:
        """Refresh until cancelled (start it as a task on the ingress's loop)."""
        self._loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        while True:
            await asyncio.to_thread(self.refresh)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=self._refresh_s)
            self._kick.clear()
