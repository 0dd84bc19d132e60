"""The resident adapters of an engine, and which running requests use each.

Both engines keep the same bookkeeping: a version id maps to the engine's own
handle (a peft adapter name, a vLLM ``LoRARequest``) and counts the requests
generating with it, so that an adapter in use is never unloaded under them.
"""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

from serving.errors import AdapterBusy, AdapterNotLoaded

H = TypeVar("H")


class AdapterTable(Generic[H]):
    """``version id -> handle`` with a per-version count of claims; thread safe."""

    def __init__(self) -> None:
        self._handles: dict[str, H] = {}
        self._users: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def __contains__(self, version_id: object) -> bool:
        return version_id in self._handles

    def __len__(self) -> int:
        return len(self._handles)

    def versions(self) -> list[str]:
        """The resident version ids, sorted."""
        with self._lock:
            return sorted(self._handles)

    def handles(self) -> dict[str, H]:
        """A copy of ``version id -> handle``."""
        with self._lock:
            return dict(self._handles)

    def add(self, version_id: str, handle: H) -> None:
        with self._lock:
            self._handles[version_id] = handle

    def claim(self, version_id: str | None) -> H | None:
        """The handle of ``version_id`` (``None`` for the base model), counted as in use.

        Raises ``AdapterNotLoaded`` if it is not resident. Every claim is matched
        by one :meth:`release`.
        """
        if version_id is None:
            return None
        with self._lock:
            handle = self._handles.get(version_id)
            if handle is None:
                raise AdapterNotLoaded(
                    f"adapter version {version_id!r} is not loaded; loaded: "
                    f"{sorted(self._handles) or 'none'}"
                )
            self._users[version_id] += 1
            return handle

    def release(self, version_id: str | None) -> None:
        """End one claim of ``version_id`` (nothing for the base model)."""
        if version_id is None:
            return
        with self._lock:
            if self._users[version_id] > 0:
                self._users[version_id] -= 1

    def detach(self, version_id: str) -> H:
        """Remove ``version_id`` and return its handle for the engine to free.

        Raises ``AdapterNotLoaded`` if it is not resident and ``AdapterBusy``
        while requests use it; the table is then unchanged.
        """
        with self._lock:
            handle = self._handles.get(version_id)
            if handle is None:
                raise AdapterNotLoaded(f"adapter version {version_id!r} is not loaded")
            users = self._users[version_id]
            if users > 0:
                raise AdapterBusy(
                    f"adapter {version_id!r} is used by {users} running request(s); "
                    "unload it when they finish"
                )
            del self._handles[version_id]
            del self._users[version_id]
            return handle

    def clear(self) -> None:
        with self._lock:
            self._handles.clear()
            self._users.clear()
