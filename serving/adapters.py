"""Keeping a replica's adapters converged on the registry, and routing requests to them.

Every replica holds the versions the registry wants resident — each tenant's
live and canary versions and its last few live ones (so a rollback is a
routing change, not a load) — within an LRU bound: the engine's
``adapter_capacity`` (hf: ``max_loras``; vLLM: ``max_cpu_loras``, of which
vLLM keeps ``max_loras`` on the device). It reconciles at start, when an
alias-change notification arrives, and periodically.

The swap protocol: fetch the artifact (its sha256 verified), let the engine
check it (rank, target modules, base model, shapes), only then make room by
evicting, load it under its version id, and switch the routing table (one
assignment). So an adapter that would be refused never evicts a good one. A
request holds a lease on the version it started with, so it finishes there; a
version is unloaded only when no lease is held and neither the registry nor
the routing table wants it. When a load fails the previous routing stays; the
version is reported to the registry as failed only if the artifact itself is
bad (checksum, format, shapes). A store outage, a full disk or a shortage of
adapter slots is this replica's problem, not the version's: it is retried here
(``serving.load_retries``), counted, and shown in :meth:`AdapterManager.status`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from serving.engines.base import Engine
from serving.errors import AdapterBusy, AdapterNotLoaded
from serving.load_retries import LoadRetries, classify

logger = logging.getLogger(__name__)


class Registry(Protocol):
    """What the manager needs from the registry (see serving.registry_view)."""

    def wanted(self) -> list[tuple[str, Any, float | None]]:
        """``(role, version, fraction)``; a version has id, tenant, artifact_uri/sha256."""

    def get(self, version_id: str) -> Any | None: ...

    def report_failed(self, version_id: str, reason: str) -> None: ...

    def fetch(self, version) -> str:
        """A local directory with the verified artifact (raises if corrupt)."""


@dataclass(frozen=True)
class TenantRoutes:
    live: str | None = None
    canary: str | None = None
    fraction: float = 0.0


def in_canary(tenant: str, user: str, fraction: float) -> bool:
    """A stable split: the same user of a tenant always lands on the same side."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{tenant}\x00{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


class AdapterManager:
    """One per replica: resident adapters, the routing table, leases, swap events."""

    def __init__(
        self,
        engine: Engine,
        registry: Registry,
        *,
        max_resident: int | None = None,
        name: str = "replica",
        retries: LoadRetries | None = None,
        slot_wait_s: float = 30.0,
    ) -> None:
        """``max_resident`` lowers the bound below the engine's ``adapter_capacity``;
        ``slot_wait_s`` is how long a pinned request waits for a free adapter slot."""
        self.engine = engine
        self.registry = registry
        capacity = engine.adapter_capacity
        self.max_resident = capacity if max_resident is None else min(max_resident, capacity)
        self.name = name
        self.routes: dict[str, TenantRoutes] = {}
        self._wanted: set[str] = set()
        self._pinned: set[str] = set()  # loaded for pinned requests; LRU-evicted only
        self._last_used: dict[str, float] = {}
        self._loading: dict[str, asyncio.Task] = {}
        self._leases: collections.Counter[str] = collections.Counter()
        self._lock = asyncio.Lock()
        self.swaps: collections.deque[dict] = collections.deque(maxlen=100)
        self.failed: dict[str, str] = {}
        self.retries = retries or LoadRetries()
        self.slot_wait_s = slot_wait_s
        #: Set when a reconcile is due early (a retry's backoff ended, a slot was freed).
        self.kick = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self.routes_changed_at = 0.0

    # -- routing ------------------------------------------------------------------------
    async def acquire(self, tenant: str, alias: str, user: str, pinned: str | None) -> str | None:
        """The version for a request (None = base), leased until :meth:`release`."""
        if pinned is not None:
            version = await self._ensure_pinned(pinned)
        else:
            routes = self.routes.get(tenant, TenantRoutes())
            use_canary = routes.canary is not None and (
                alias == "canary" or (alias == "live" and in_canary(tenant, user, routes.fraction))
            )
            version = routes.canary if use_canary else routes.live
        if version is not None:
            self._leases[version] += 1
            self._last_used[version] = time.monotonic()
        return version

    def release(self, version: str | None) -> None:
        if version is None:
            return
        self._leases[version] -= 1
        if self._leases[version] > 0:
            return
        self._slot_freed.set()
        if self.retries.waiting_for_slot():
            self.kick.set()  # a version waits for this slot
        if version not in self._wanted | self._pinned:
            # A version the registry dropped while requests used it goes with the last one.
            asyncio.get_running_loop().create_task(self._evict())

    async def _ensure_pinned(self, version_id: str) -> str:
        if version_id in self.engine.loaded_adapters():
            return version_id
        if version_id in self.failed:
            raise AdapterNotLoaded(f"adapter version {version_id!r} failed to load here: "
                                   f"{self.failed[version_id]}")
        version = await asyncio.to_thread(self.registry.get, version_id)
        if version is None or version.status in ("failed", "rejected"):
            raise AdapterNotLoaded(f"adapter version {version_id!r} cannot be served")
        deadline = time.monotonic() + self.slot_wait_s
        while True:
            self._slot_freed.clear()
            try:
                await self._load(version)
                break
            except Exception as exc:
                kind = await self._load_failed(version, exc, "pinned")
                if kind == "invalid":
                    raise AdapterNotLoaded(
                        f"adapter version {version_id!r} failed to load: {exc}"
                    ) from exc
                left = deadline - time.monotonic()
                if kind == "transient" or left <= 0:
                    raise AdapterNotLoaded(
                        f"adapter version {version_id!r} cannot be loaded on {self.name} "
                        f"right now ({kind}: {exc}); retry later"
                    ) from exc
            with contextlib.suppress(TimeoutError):  # every slot is leased: wait for one
                await asyncio.wait_for(self._slot_freed.wait(), timeout=left)
        self._pinned.add(version_id)
        return version_id

    # -- reconciliation -------------------------------------------------------------------
    async def reconcile(self) -> None:
        """Load what the registry wants, then switch routing, then drop what it no longer wants."""
        async with self._lock:
            wanted = await asyncio.to_thread(self.registry.wanted)
            # Live and canary first: they carry traffic; warm ones only save a load.
            wanted.sort(key=lambda item: item[0] == "warm")
            self.retries.keep_only({version.id for _, version, _ in wanted})
            loaded: set[str] = set()
            for role, version, _ in wanted[: max(self.max_resident, 1)]:
                if version.id in self.failed or not self.retries.due(version.id):
                    continue
                try:
                    await self._load(version)
                    loaded.add(version.id)
                except Exception as exc:  # failed or retried; the old routing keeps serving
                    await self._load_failed(version, exc, role)
            routes: dict[str, TenantRoutes] = {}
            resident = set(self.engine.loaded_adapters())
            for role, version, fraction in wanted:
                if role == "warm":
                    continue
                current = routes.get(version.tenant, TenantRoutes())
                if version.id not in loaded:  # it failed: what this replica served stays
                    before = self.routes.get(version.tenant, TenantRoutes())
                    if role == "canary" and before.canary in resident:
                        routes[version.tenant] = TenantRoutes(
                            current.live, before.canary, before.fraction
                        )
                    elif role == "live" and before.live in resident:
                        routes[version.tenant] = TenantRoutes(
                            before.live, current.canary, current.fraction
                        )
                    continue
                if role == "canary":
                    routes[version.tenant] = TenantRoutes(current.live, version.id, fraction or 0.0)
                else:
                    routes[version.tenant] = TenantRoutes(
                        version.id, current.canary, current.fraction
                    )
            # What the routes still point to stays, even if it did not fit the bound.
            self._wanted = loaded | {
                v for r in routes.values() for v in (r.live, r.canary) if v is not None
            }
            if routes != self.routes:
                self.routes = routes  # the switch: new requests see the new versions from here
                self.routes_changed_at = time.time()
        await self._evict()

    async def _load(self, version) -> None:
        if version.id in self.engine.loaded_adapters():
            return
        task = self._loading.get(version.id)
        if task is None:  # concurrent loads of one version share one task
            task = asyncio.get_running_loop().create_task(self._fetch_and_load(version))
            self._loading[version.id] = task
            task.add_done_callback(lambda _: self._loading.pop(version.id, None))
        await asyncio.shield(task)

    async def _fetch_and_load(self, version) -> None:
        started = time.perf_counter()
        path = await asyncio.to_thread(self.registry.fetch, version)
        await self.engine.check_adapter(version.id, path)  # before anything is evicted for it
        await self._make_room()
        await self.engine.load_adapter(version.id, path)
        self._last_used[version.id] = time.monotonic()
        self.retries.loaded(version.id)
        seconds = time.perf_counter() - started
        self.swaps.append(
            {
                "version": version.id,
                "tenant": version.tenant,
                "event": "loaded",
                "seconds": round(seconds, 4),
                "at": time.time(),
            }
        )
        logger.info(
            "%s loaded %s for %s in %.3f s", self.name, version.id[:12], version.tenant, seconds
        )

    async def _make_room(self) -> None:
        """Evict before load: unused, unwanted versions first, least recently used first."""
        resident = self.engine.loaded_adapters()
        if len(resident) < self.max_resident:
            return
        candidates = sorted(
            (v for v in resident if self._leases[v] <= 0),
            key=lambda v: (v in self._wanted, self._last_used.get(v, 0.0)),
        )
        for version in candidates[: len(resident) - self.max_resident + 1]:
            await self._unload(version)

    async def _evict(self) -> None:
        for version in self.engine.loaded_adapters():
            if version not in self._wanted | self._pinned and self._leases[version] <= 0:
                await self._unload(version)

    async def _unload(self, version: str) -> None:
        try:
            await self.engine.unload_adapter(version)
        except (AdapterBusy, AdapterNotLoaded):
            return  # still in use (its last release evicts it) or already gone
        self._last_used.pop(version, None)
        self._pinned.discard(version)
        self.swaps.append({"version": version, "event": "unloaded", "at": time.time()})

    async def _load_failed(self, version, exc: Exception, role: str) -> str:
        """Fail the version if its artifact is bad, else schedule a retry; the kind."""
        kind = classify(exc)
        if kind == "invalid":
            await self._fail(version, exc, role)
            return kind
        delay = self.retries.record(version.id, kind, exc)
        logger.warning(
            "%s could not load %s (%s of %s) yet, %s: %s; retrying in %.1f s",
            self.name, version.id[:12], role, version.tenant, kind, exc, delay,
        )
        if kind == "transient":
            asyncio.get_running_loop().call_later(delay, self.kick.set)
        return kind

    async def _fail(self, version, exc: Exception, role: str) -> None:
        reason = f"{self.name} could not load it: {exc}"
        logger.error(
            "version %s (%s of %s) failed to load: %s", version.id[:12], role, version.tenant, exc
        )
        self.failed[version.id] = str(exc)
        try:  # off the event loop: requests keep flowing while the registry is written
            await asyncio.to_thread(self.registry.report_failed, version.id, reason[:2000])
        except Exception:  # another replica may have reported it first
            logger.warning(
                "could not mark %s failed in the registry", version.id[:12], exc_info=True
            )

    def status(self) -> dict:
        return {
            "name": self.name,
            "routes_changed_at": self.routes_changed_at,
            "resident": self.engine.loaded_adapters(),
            "routes": {t: r.__dict__ for t, r in self.routes.items()},
            "leases": {v: n for v, n in self._leases.items() if n > 0},
            "failed": dict(self.failed),
            **self.retries.status(),
            "swaps": list(self.swaps)[-10:],
        }


async def run_reconciler(
    manager: AdapterManager,
    *,
    interval_s: float,
    subscribe: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
) -> None:
    """Reconcile now, on every notification, and every ``interval_s`` seconds, until cancelled."""
    kick = manager.kick  # also set by the manager itself when a retry is due
    loop = asyncio.get_running_loop()
    stop = subscribe(lambda: loop.call_soon_threadsafe(kick.set)) if subscribe else None
    try:
        while True:
            try:
                await manager.reconcile()
            except Exception:  # the registry or store is unreachable: the next round retries
                logger.exception("reconcile failed; retrying in %.1f s", interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), timeout=interval_s)
            kick.clear()
    finally:
        if stop is not None:
            stop()
