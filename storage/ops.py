"""What an operator does to the registry: the one implementation behind
``loraloop adapters ...`` and ``/admin/...``, with one set of defaults.

A :class:`RegistryOps` is bound to a session factory, to who acts (the audit
trail's ``actor``) and to who hears of alias moves (the notifier replicas
follow). Each method is one call of ``storage.registry``, ``storage.aliases``
or ``storage.queries``: one transaction, audited when it changes anything
(refusals too), raising :class:`~storage.errors.RegistryError` subclasses
whose ``outcome`` the callers map to exit codes or HTTP statuses. The results
are the immutable views of ``storage.views``; the CLI prints them and the admin
API sends their ``to_dict()``.

Defaults, for both: alias moves have no precondition unless ``expected_live``
(or ``expected_revision``) is given (they are still serialized per tenant);
listings return the newest :data:`DEFAULT_LIMIT` entries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session

import storage.aliases as aliases
import storage.queries as queries
import storage.registry as registry
from storage.aliases import LIVE, UNCHECKED, _Unchecked
from storage.artifacts import ArtifactStore
from storage.audit import Attempt, Notifier, audit_refusal
from storage.errors import InvalidArgument, RegistryError
from storage.views import AliasChange, AliasInfo, AuditEntry, VersionDiff, VersionInfo

DEFAULT_LIMIT = 100
#: The audit ``detail`` of a gate an operator passed by hand (the learner's gate did not).
GATE_OVERRIDE = "manual gate override"
T = TypeVar("T")
Expected = str | _Unchecked | None


@dataclass(frozen=True)
class Listed:
    """A version with the aliases that point at it."""

    version: VersionInfo
    aliases: list[AliasInfo] = field(default_factory=list)

    def marks(self) -> list[str]:
        """The aliases as short labels: ``live``, ``canary(0.1)``, ``live[pinned]``."""
        return [
            a.name + (f"({a.fraction:g})" if a.fraction else "") + ("[pinned]" if a.pinned else "")
            for a in self.aliases
        ]


@dataclass(frozen=True)
class Moved:
    """An alias after a move, and the version it pointed at before (``None``: unset)."""

    alias: AliasInfo
    previous: str | None

    def to_dict(self) -> dict[str, Any]:
        return self.alias.to_dict()


class RegistryOps:
    """The operator's actions over ``sessions``, done as ``actor``, announced to ``notifier``;
    :meth:`register` publishes to the artifact store at ``artifacts``."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        *,
        actor: str,
        notifier: Notifier | None = None,
        artifacts: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.actor = actor
        self.notifier = notifier
        self.artifacts = artifacts

    # -- reading -----------------------------------------------------------------------------
    def versions(
        self, *, tenant: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[Listed]:
        """Versions, newest first, of one tenant and/or status, with their aliases."""
        with self.sessions() as session:
            found = queries.list_versions(
                session, tenant=tenant, status=status, limit=limit or DEFAULT_LIMIT
            )
            marks = queries.list_aliases(session, tenant=tenant)
        return [Listed(v, [a for a in marks if a.version_id == v.id]) for v in found]

    def show(self, version_id: str) -> Listed:
        """One version (id or unique prefix) with its aliases."""
        with self.sessions() as session:
            version = queries.get_version(session, version_id=version_id)
            marks = queries.list_aliases(session, tenant=version.tenant)
        return Listed(version, [a for a in marks if a.version_id == version.id])

    def diff(self, a: str, b: str) -> VersionDiff:
        """What differs between two versions: config, metrics and training data."""
        return self._read(queries.diff_versions, a=a, b=b)

    def history(
        self, *, version_id: str | None = None, tenant: str | None = None, limit: int | None = None
    ) -> list[AuditEntry]:
        """The audit trail, oldest first: the last entries about a version and/or tenant."""
        limit = limit or DEFAULT_LIMIT
        return self._read(queries.history, version_id=version_id, tenant=tenant, limit=limit)

    def aliases(self, tenant: str) -> list[AliasInfo]:
        """The tenant's aliases."""
        return self._read(queries.list_aliases, tenant=tenant)

    def awaiting_operator(self) -> list[VersionInfo]:
        """Per tenant, its newest ``gated`` version if it is newer than the last move of
        the tenant's live alias: nothing serves it until an operator promotes it or starts
        a canary (an older one the operator passed over is not listed)."""
        waiting, seen = [], set()
        with self.sessions() as session:
            for version in queries.list_versions(session, status="gated", limit=DEFAULT_LIMIT):
                if version.tenant in seen:
                    continue
                seen.add(version.tenant)
                live = queries.get_alias(session, tenant=version.tenant, alias=LIVE)
                if live is None or live.updated_at < version.created_at:
                    waiting.append(version)
        return waiting

    # -- changing ----------------------------------------------------------------------------
    def register(
        self,
        directory: str | Path,
        *,
        tenant: str,
        base_model: str | None = None,
        parent_id: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        reason: str = "",
    ) -> VersionInfo:
        """Publish an adapter directory to the artifact store and register it as a
        ``candidate`` (base model: the adapter config's, unless given)."""
        if self.artifacts is None:
            raise InvalidArgument("no artifact store to publish to", param="artifacts")
        published = ArtifactStore(self.artifacts).publish(directory)
        base = base_model or published.lora_config.get("base_model_name_or_path")
        if not base:
            raise InvalidArgument(
                "adapter_config.json names no base model; give the base model explicitly",
                param="base_model",
            )
        return self._write(
            registry.register_candidate,
            version_id=published.version_id,
            tenant=tenant,
            base_model=str(base),
            artifact_uri=published.uri,
            artifact_sha256=published.sha256,
            lora_config=published.lora_config,
            parent_id=parent_id,
            metrics=dict(metrics or {}),
            reason=reason,
        )

    def gate(
        self,
        version_id: str,
        *,
        passed: bool,
        metrics: Mapping[str, Any] | None = None,
        reason: str = "",
        approved_by: str | None = None,
    ) -> VersionInfo:
        """Record an operator's gate verdict: candidate -> gated (or rejected).

        A pass is an override of the evaluation gate: its audit row's ``detail``
        starts with :data:`GATE_OVERRIDE` and names the actor and, when a second
        admin approved it, ``approved_by``; the version's metrics keep the same
        record under ``gate_override``."""
        detail, values = "", dict(metrics or {})
        if passed:
            approval = f", approved by {approved_by}" if approved_by else ""
            detail = f"{GATE_OVERRIDE} by {self.actor}{approval}"
            values["gate_override"] = {"actor": self.actor, "approved_by": approved_by}
        return self._write(
            registry.record_gate,
            version_id=version_id,
            passed=passed,
            metrics=values,
            reason=reason,
            detail=detail,
        )

    def gate_refused(self, version_id: str, *, outcome: str, detail: str,
                     reason: str = "") -> None:
        """Audit a manual gate pass refused before it reached the registry (for example
        for want of a second admin's approval)."""
        attempt = Attempt("gate", self.actor, reason, version_id=version_id,
                          to_status="gated", detail=detail)
        with self.sessions() as session:
            with contextlib.suppress(RegistryError):  # an unknown id: audit what was asked
                found = queries.get_version(session, version_id=version_id)
                attempt.version_id, attempt.tenant = found.id, found.tenant
                attempt.from_status = found.status
            audit_refusal(session, attempt, outcome, detail)

    def promote(
        self,
        version_id: str,
        *,
        expected_live: Expected = UNCHECKED,
        expected_revision: int | None = None,
        force: bool = False,
        reason: str = "",
    ) -> Moved:
        """Make a version live for its tenant (the previous live one retires); ``force``
        overrides a pin."""
        return self._move(
            aliases.promote,
            version_id=version_id,
            expected_live=expected_live,
            expected_revision=expected_revision,
            force=force,
            reason=reason,
        )

    def rollback(
        self,
        tenant: str,
        *,
        to_version: str | None = None,
        expected_live: Expected = UNCHECKED,
        reason: str = "",
    ) -> Moved:
        """Put the previous live version (or ``to_version``) back; the current one is
        rolled_back."""
        return self._move(
            aliases.rollback,
            tenant=tenant,
            to_version=to_version,
            expected_live=expected_live,
            reason=reason,
        )

    def start_canary(self, version_id: str, *, fraction: float, reason: str = "") -> AliasInfo:
        """Send ``fraction`` of the tenant's traffic to a version (or change its fraction)."""
        return self._notify(
            aliases.start_canary, version_id=version_id, fraction=fraction, reason=reason
        )

    def stop_canary(self, tenant: str, *, rollback: bool = False, reason: str = "") -> VersionInfo:
        """End the tenant's canary: its version goes back to gated (or rolled_back)."""
        return self._notify(aliases.stop_canary, tenant=tenant, rollback=rollback, reason=reason)

    def pin(
        self, version_id: str, *, expected_live: Expected = UNCHECKED, reason: str = ""
    ) -> AliasInfo:
        """Make a version live and pin it: promotions then need ``force``."""
        return self._notify(
            aliases.pin, version_id=version_id, expected_live=expected_live, reason=reason
        )

    def unpin(self, tenant: str, *, reason: str = "") -> AliasInfo:
        """Release the pin on the tenant's live alias."""
        return self._write(aliases.unpin, tenant=tenant, reason=reason)

    def retire(self, version_id: str, *, reason: str = "") -> VersionInfo:
        """Retire a version that is not live (a canary loses its traffic)."""
        return self._notify(registry.retire, version_id=version_id, reason=reason)

    # -- internals ---------------------------------------------------------------------------
    def _read(self, fn: Callable[..., T], **kwargs: Any) -> T:
        with self.sessions() as session:
            return fn(session, **kwargs)

    def _write(self, fn: Callable[..., T], **kwargs: Any) -> T:
        return self._read(fn, actor=self.actor, **kwargs)

    def _notify(self, fn: Callable[..., T], **kwargs: Any) -> T:
        return self._write(fn, on_alias_change=self.notifier, **kwargs)

    def _move(self, fn: Callable[..., AliasInfo], **kwargs: Any) -> Moved:
        heard: list[AliasChange] = []

        def hear(change: AliasChange) -> None:
            heard.append(change)
            if self.notifier is not None:
                self.notifier(change)

        alias = self._write(fn, on_alias_change=hear, **kwargs)
        previous = next((c.previous_version_id for c in heard if c.alias == LIVE), None)
        return Moved(alias, previous)

