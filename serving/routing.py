"""Parsing a request's ``model`` into where it should go.

``<tenant>`` means the tenant's ``live`` alias, ``<tenant>@canary`` its canary,
``<tenant>@<version>`` a pinned version (a unique id prefix of 6+ characters
works) and ``base`` the model without an adapter.

A user may pin only a version that serves or served: ``live``, ``canary`` or
``retired`` (:data:`ADDRESSABLE`), plus the statuses a tenant explicitly
allows (``allow_statuses``). A candidate, gated, rejected, rolled-back or
failed version was never approved for users, or was taken away from them: a
request for it is refused with :class:`VersionNotAddressable`, naming its status.

The ingress only checks that the name exists; the replica's adapter manager turns the route into the
version it has loaded (so a request never goes to a version still loading).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from serving.errors import ServingError, UnknownModel

logger = logging.getLogger(__name__)
BASE = "base"
ALIASES = ("live", "canary")

#: Statuses of the versions any user may request by id.
ADDRESSABLE = frozenset({"live", "canary", "retired"})

#: tenant -> the registry's versions of it: ``{id: status}``, or a list of ids
#: (all addressable).
Catalog = dict[str, list[str] | dict[str, str]]


class VersionNotAddressable(UnknownModel):
    """``<tenant>@<version>`` names a version users may not request (its status)."""

    def __init__(self, model: str, version_id: str, status: str, allowed: Collection[str]):
        self.model, self.version_id, self.status = model, version_id, status
        self.valid = sorted(allowed)
        ServingError.__init__(
            self,
            f"model {model!r} names adapter version {version_id[:12]}, which is {status!r}: "
            f"users may request only versions that are {', '.join(self.valid)} "
            "(an operator can promote it, start a canary, or allow the status for the tenant)",
        )


@dataclass(frozen=True)
class Route:
    """A parsed ``model``: the tenant, the alias and, if pinned, the version."""

    model: str
    tenant: str
    alias: str
    pinned: str | None = None

    def payload(self, user: str) -> dict:
        return {"tenant": self.tenant, "alias": self.alias, "pinned": self.pinned, "user": user}


@dataclass
class ModelRouter:
    """Knows the tenants (configured, plus the registry's) and their versions."""

    tenants: Sequence[str]
    catalog: Callable[[], Catalog] | None = None
    refresh_every_s: float = 1.0
    #: tenant -> statuses its users may also request by id (e.g. ``{"acme": {"gated"}}``).
    allow_statuses: Mapping[str, Collection[str]] = field(default_factory=dict)
    _known: dict[str, dict[str, str | None]] = field(default_factory=dict)
    #: _known plus the configured tenants, rebuilt on refresh; status None: addressable.
    _merged: dict[str, dict[str, str | None]] | None = None
    _refreshed_at: float = -1e9
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def names(self) -> list[str]:
        """Every model name a client may send (for /v1/models and 404 messages); reads the
        registry again if the last read is older than ``refresh_every_s``, so a new
        version is listed without a request for it having missed first."""
        known = self._snapshot(force=True)
        names = [BASE]
        for tenant in sorted(known):
            names += [tenant, *(f"{tenant}@{a}" for a in ALIASES)]
            names += [f"{tenant}@{v}" for v, status in known[tenant].items()
                      if self._addressable(tenant, status)]
        return names

    def resolve(self, model: str) -> Route:
        if model == BASE:
            return Route(model, BASE, BASE)
        tenant, sep, target = model.partition("@")
        if sep and not target:
            raise UnknownModel(model, self.names())
        for force in (False, True):  # on a miss, read the registry again (rate-limited)
            known = self._snapshot(force=force)
            if tenant not in known:
                continue
            if not target or target in ALIASES:
                return Route(model, tenant, target or "live")
            matches = [
                v
                for v in known[tenant]
                if v == target or (len(target) >= 6 and v.startswith(target))
            ]
            if len(matches) == 1:
                status = known[tenant][matches[0]]
                if not self._addressable(tenant, status):
                    allowed = ADDRESSABLE | set(self.allow_statuses.get(tenant, ()))
                    raise VersionNotAddressable(model, matches[0], status, allowed)
                return Route(model, tenant, "pinned", matches[0])
        raise UnknownModel(model, self.names())

    def _addressable(self, tenant: str, status: str | None) -> bool:
        return status is None or status in ADDRESSABLE or status in self.allow_statuses.get(
            tenant, ()
        )

    def _snapshot(self, *, force: bool) -> dict[str, dict[str, str | None]]:
        """The catalog (read-only). The registry is read at most once per
        ``refresh_every_s``: at first use, and again on a miss."""
        with self._lock:
            now = time.monotonic()
            stale = now - self._refreshed_at >= self.refresh_every_s
            if self.catalog is not None and stale and (force or self._merged is None):
                self._refreshed_at = now
                try:
                    self._known = {
                        tenant: versions if isinstance(versions, dict)
                        else dict.fromkeys(versions)  # a plain list: all addressable
                        for tenant, versions in self.catalog().items()
                    }
                except Exception:  # the registry is down: keep serving what we knew
                    logger.warning("could not read the registry's catalog", exc_info=True)
                self._merged = None
            if self._merged is None:
                self._merged = {tenant: {} for tenant in self.tenants} | self._known
            return self._merged
