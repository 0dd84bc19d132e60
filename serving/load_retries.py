"""Which adapter load errors may fail a version, and the retries of those that may not.

A version's status is fleet-wide and ``failed`` is final (``storage.states``),
so one replica may mark a version failed only when the artifact itself is bad:
its checksum, its format or its shapes (``ArtifactCorrupt``, ``UnsafeArtifact``,
``AdapterValidationError``): every replica would refuse it the same way.
Everything else says something about this replica at this moment — the
artifact store answered 503 or was unmounted, the cache disk is full, every
adapter slot is leased by a long stream — and is retried here:

* ``slots``: every adapter slot is in use; retried as soon as a lease is
  released (and at every reconcile), never counted against the version;
* ``transient``: anything else; retried with exponential backoff.

Each retry is counted by kind and shown in the replica's ``info`` (``loraloop
status``) until the version loads.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Literal

from serving.errors import AdapterBusy, AdapterLimitReached, AdapterValidationError
from storage.errors import ArtifactCorrupt, UnsafeArtifact

Kind = Literal["invalid", "slots", "transient"]

#: The only errors that may mark a version failed: the artifact itself is bad.
INVALID_ARTIFACT: tuple[type[BaseException], ...] = (
    ArtifactCorrupt,
    UnsafeArtifact,
    AdapterValidationError,
)
#: Every adapter slot is taken: wait for one, or evict; never a reason to fail.
NO_SLOT: tuple[type[BaseException], ...] = (AdapterLimitReached, AdapterBusy)


def classify(exc: BaseException) -> Kind:
    """``invalid`` (fail the version), ``slots`` (wait for a slot) or ``transient`` (retry)."""
    if isinstance(exc, INVALID_ARTIFACT):
        return "invalid"
    if isinstance(exc, NO_SLOT):
        return "slots"
    return "transient"


@dataclass
class PendingLoad:
    """A version this replica wants but could not load yet."""

    kind: Kind
    attempts: int
    error: str
    since: float  # wall clock of the first failed attempt
    next_at: float  # monotonic time of the next attempt


class LoadRetries:
    """The versions waiting for another load attempt on this replica, and the counts."""

    def __init__(self, *, base_s: float = 0.5, max_s: float = 60.0) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.pending: dict[str, PendingLoad] = {}
        #: Failed load attempts by kind since the replica started.
        self.counts: collections.Counter[str] = collections.Counter()

    def record(self, version_id: str, kind: Kind, exc: BaseException) -> float:
        """Note a failed attempt; the seconds until the next one is due."""
        self.counts[kind] += 1
        previous = self.pending.get(version_id)
        attempts = (previous.attempts if previous else 0) + 1
        delay = 0.0 if kind == "slots" else min(self.max_s, self.base_s * 2 ** (attempts - 1))
        self.pending[version_id] = PendingLoad(
            kind=kind,
            attempts=attempts,
            error=f"{type(exc).__name__}: {exc}"[:500],
            since=previous.since if previous else time.time(),
            next_at=time.monotonic() + delay,
        )
        return delay

    def due(self, version_id: str) -> bool:
        """Whether an attempt at ``version_id`` may run now (its backoff has passed)."""
        entry = self.pending.get(version_id)
        return entry is None or time.monotonic() >= entry.next_at

    def waiting_for_slot(self) -> bool:
        return any(e.kind == "slots" for e in self.pending.values())

    def loaded(self, version_id: str) -> None:
        self.pending.pop(version_id, None)

    def keep_only(self, version_ids: set[str]) -> None:
        """Forget the versions no longer wanted (the registry moved on without them)."""
        for version_id in set(self.pending) - version_ids:
            del self.pending[version_id]

    def status(self) -> dict:
        now = time.monotonic()
        return {
            "retrying": {
                version: {
                    "kind": e.kind,
                    "attempts": e.attempts,
                    "error": e.error,
                    "since": e.since,
                    "retry_in_s": round(max(0.0, e.next_at - now), 3),
                }
                for version, e in self.pending.items()
            },
            "load_errors": dict(self.counts),
        }
