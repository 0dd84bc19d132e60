"""Every registry change is an attempt; every attempt leaves an audit row.

:func:`run_change` runs one change in one write transaction and adds the
``ok`` audit row to that same transaction. When the change is refused (not
found, illegal move, lost race, bad value) the transaction is rolled back and
the refusal is audited in a transaction of its own, then the error is raised.
Alias-change notifications go out only after the commit, best effort.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from storage.db import write_transaction
from storage.errors import Conflict, RegistryError
from storage.models import AuditEvent, utcnow
from storage.views import AliasChange, AuditEntry, utc

log = logging.getLogger(__name__)

T = TypeVar("T")
Notifier = Callable[[AliasChange], None]


@dataclass
class Attempt:
    """What a change is about; the body fills in the details as it learns them."""

    action: str
    actor: str
    reason: str = ""
    tenant: str | None = None
    version_id: str | None = None
    alias: str | None = None
    from_status: str | None = None
    to_status: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    changes: list[AliasChange] = field(default_factory=list)
    #: Status moves of other versions caused by this change (the old live one retiring).
    side_moves: list[tuple[str, str, str]] = field(default_factory=list)

    def row(self, outcome: str, detail: str = "") -> AuditEvent:
        return AuditEvent(
            at=utcnow(),
            actor=self.actor,
            action=self.action,
            outcome=outcome,
            tenant=self.tenant,
            version_id=self.version_id,
            alias=self.alias,
            from_status=self.from_status,
            to_status=self.to_status,
            from_version=self.from_version,
            to_version=self.to_version,
            reason=self.reason or "",
            detail=(detail or self.detail)[:4000],
            metrics=dict(self.metrics),
        )

    def side_rows(self) -> list[AuditEvent]:
        """One ``ok`` row per side move, so that every status move has its audit row."""
        rows = []
        for version_id, from_status, to_status in self.side_moves:
            row = self.row("ok", f"caused by the {self.action} of {self.version_id}")
            row.version_id, row.from_status, row.to_status = version_id, from_status, to_status
            row.metrics = {}
            rows.append(row)
        return rows

    def alias_changed(
        self,
        *,
        alias: str,
        version_id: str | None,
        previous: str | None,
        fraction: float | None = None,
        revision: int | None = None,
    ) -> None:
        """Queue a notification, sent only if the transaction commits."""
        assert self.tenant is not None
        self.changes.append(
            AliasChange(
                tenant=self.tenant,
                alias=alias,
                version_id=version_id,
                previous_version_id=previous,
                fraction=fraction,
                revision=revision,
                action=self.action,
                actor=self.actor,
                at=utcnow(),
            )
        )


def run_change(
    session: Session,
    attempt: Attempt,
    body: Callable[[Attempt], T],
    *,
    on_alias_change: Notifier | None = None,
) -> T:
    """Run ``body`` in one write transaction with its audit row; see the module doc."""
    if session.in_transaction():
        raise RuntimeError(
            "registry functions run their own transaction, but the session already has one "
            "open; commit or roll it back first, or pass a fresh session"
        )
    try:
        with write_transaction(session):
            result = body(attempt)
            session.add(attempt.row("ok"))
            session.add_all(attempt.side_rows())
    except (IntegrityError, StaleDataError) as exc:
        conflict = Conflict(
            f"{attempt.action} of tenant {attempt.tenant!r} lost a race with a concurrent "
            f"change ({type(exc).__name__}); re-read the registry and retry if still wanted"
        )
        _audit_refusal(session, attempt, conflict)
        raise conflict from exc
    except RegistryError as exc:
        _audit_refusal(session, attempt, exc)
        raise
    for change in attempt.changes:
        notify(on_alias_change, change)
    return result


def notify(on_alias_change: Notifier | None, change: AliasChange) -> None:
    """Call the notifier; a failure is logged, never raised (the commit already happened)."""
    if on_alias_change is None:
        return
    try:
        on_alias_change(change)
    except Exception:
        log.exception("alias change notifier failed for %s/%s", change.tenant, change.alias)


def _audit_refusal(session: Session, attempt: Attempt, exc: RegistryError) -> None:
    audit_refusal(session, attempt, exc.outcome, str(exc))


def audit_refusal(session: Session, attempt: Attempt, outcome: str, detail: str) -> None:
    """Audit an attempt refused with ``outcome``, in a transaction of its own (best effort:
    a failure is logged). Also for refusals made before the registry was reached (a
    missing approval at the admin API)."""
    log.info("registry %s refused (%s): %s", attempt.action, outcome, detail)
    try:
        with write_transaction(session):
            session.add(attempt.row(outcome, detail))
    except Exception:
        log.exception("could not audit the refused %s attempt", attempt.action)


def entry(row: AuditEvent) -> AuditEntry:
    """The immutable view of an audit row."""
    return AuditEntry(
        id=row.id,
        at=utc(row.at),
        actor=row.actor,
        action=row.action,
        outcome=row.outcome,
        tenant=row.tenant,
        version_id=row.version_id,
        alias=row.alias,
        from_status=row.from_status,
        to_status=row.to_status,
        from_version=row.from_version,
        to_version=row.to_version,
        reason=row.reason,
        detail=row.detail,
        metrics=dict(row.metrics or {}),
    )
