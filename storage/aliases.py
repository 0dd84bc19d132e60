"""Alias moves: promote, canary, roll back, pin. The traffic side of the registry.

Keyword-only functions over a session, one transaction each (see
``storage.audit.run_change``): every attempt is audited, refused ones too.
A tenant's writers are serialized (its ``tenants`` row is locked ``FOR
UPDATE`` on PostgreSQL; SQLite write transactions are ``BEGIN IMMEDIATE``),
and the alias row's ``revision`` counter guards every UPDATE as well.

Preconditions: ``expected_live`` (the version id the caller believes is live,
``None`` for "no live version") and ``expected_revision`` (the live alias
row's counter). Of two racing promotions made with the same belief exactly
one wins; the other gets :class:`Conflict`. Without a precondition the last
writer wins (still serialized).

``on_alias_change`` is called after the commit for each alias that moved;
it must not block for long, and its failures are logged, never raised.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.audit import Attempt, Notifier, run_change
from storage.errors import AliasNotFound, Conflict, InvalidArgument
from storage.models import AdapterVersion, Alias, AuditEvent, Tenant
from storage.queries import alias_info, find_version, version_info
from storage.states import Status, check_transition
from storage.views import AliasInfo, VersionInfo

LIVE: Final = "live"
CANARY: Final = "canary"


class _Unchecked:
    def __repr__(self) -> str:
        return "UNCHECKED"


#: Default of ``expected_live``: no precondition (last writer wins, still serialized).
UNCHECKED: Final = _Unchecked()


def promote(
    session: Session,
    *,
    version_id: str,
    actor: str,
    reason: str = "",
    expected_live: str | _Unchecked | None = UNCHECKED,
    expected_revision: int | None = None,
    force: bool = False,
    on_alias_change: Notifier | None = None,
) -> AliasInfo:
    """Point the tenant's ``live`` alias at ``version_id``; the old live version retires.

    Refused with :class:`Conflict` when a precondition fails, the live alias
    is pinned, or the version is a canary that was rolled back (both unless
    ``force``: a canary's rollback is a verdict on it, so undoing it must be
    deliberate, and an operator promoting a canary loses cleanly to the canary
    controller's rollback of it), with ``IllegalTransition`` when the version
    may not go live from its status. A version rolled back from ``live`` may be
    promoted again without ``force`` (a routing flip, not a verdict).
    """
    attempt = Attempt(
        "promote", actor, reason, version_id=version_id, alias=LIVE, to_status=Status.LIVE
    )

    def body(at: Attempt) -> AliasInfo:
        version, live = _lock(session, at, LIVE)
        _check_expected(at, live, expected_live, expected_revision)
        if live is not None and live.pinned and not force:
            raise Conflict(
                f"the live alias of tenant {at.tenant!r} is pinned to "
                f"{live.version_id} by {live.updated_by}; release the pin "
                "(`loraloop adapters pin --release`) or promote with force"
            )
        verdict = _canary_rollback(session, version) if not force else None
        if verdict is not None:
            raise Conflict(
                f"version {version.id} of tenant {at.tenant!r} was rolled back as a canary "
                f"(by {verdict.actor}: {verdict.reason or 'no reason given'}); promote it "
                "with force to put it live anyway"
            )
        return _make_live(session, at, version, live, pinned=False)

    return run_change(session, attempt, body, on_alias_change=on_alias_change)


def start_canary(
    session: Session,
    *,
    version_id: str,
    fraction: float,
    actor: str,
    reason: str = "",
    on_alias_change: Notifier | None = None,
) -> AliasInfo:
    """Route ``fraction`` (0 < f < 1) of the tenant's traffic to ``version_id``.

    Calling it again for the current canary changes its fraction.
    """
    attempt = Attempt(
        "canary", actor, reason, version_id=version_id, alias=CANARY, to_status=Status.CANARY
    )

    def body(at: Attempt) -> AliasInfo:
        version, canary = _lock(session, at, CANARY)
        if not isinstance(fraction, int | float) or not 0.0 < float(fraction) < 1.0:
            raise InvalidArgument(
                f"canary fraction must be strictly between 0 and 1 (the share of requests "
                f"sent to the canary), got {fraction!r}; to send all traffic, promote instead",
                param="fraction",
            )
        at.metrics = {**dict(version.metrics or {}), "canary_fraction": float(fraction)}
        if canary is not None and canary.version_id != version.id:
            raise Conflict(
                f"tenant {at.tenant!r} already has canary {canary.version_id} at "
                f"{canary.fraction}; stop it first (`loraloop adapters canary --stop`)"
            )
        if canary is None:
            check_transition(version.id, version.status, Status.CANARY)
            version.status = Status.CANARY.value
            canary = Alias(
                tenant=version.tenant,
                name=CANARY,
                version_id=version.id,
                pinned=False,
                updated_by=actor,
            )
            session.add(canary)
        canary.fraction, canary.updated_by = float(fraction), actor
        session.flush()
        at.alias_changed(
            alias=CANARY,
            version_id=version.id,
            previous=None,
            fraction=canary.fraction,
            revision=canary.revision,
        )
        return alias_info(canary)

    return run_change(session, attempt, body, on_alias_change=on_alias_change)


def stop_canary(
    session: Session,
    *,
    tenant: str,
    actor: str,
    reason: str = "",
    rollback: bool = False,
    expected_version: str | None = None,
    on_alias_change: Notifier | None = None,
) -> VersionInfo:
    """Remove the tenant's canary; its version goes back to ``gated`` (or ``rolled_back``).

    With ``expected_version`` (the canary the caller decided on) a canary that
    is gone or is another version is a :class:`Conflict`: another change won.
    """
    to = Status.ROLLED_BACK if rollback else Status.GATED
    attempt = Attempt("canary_stop", actor, reason, tenant=tenant, alias=CANARY, to_status=to,
                      version_id=expected_version)

    def body(at: Attempt) -> VersionInfo:
        if expected_version is not None:
            _lock_tenant(session, tenant)
            now = session.get(Alias, (tenant, CANARY), populate_existing=True)
            if now is None or now.version_id != expected_version:
                raise Conflict(
                    f"the canary of tenant {tenant!r} is {now.version_id if now else 'none'}, "
                    f"not the expected {expected_version}: another change won; re-read"
                )
        canary = _locked_alias(session, tenant, CANARY, "canary to stop")
        version = find_version(session, canary.version_id, lock=True)
        _move(at, version, to)
        _drop_alias(session, at, canary)
        session.flush()
        return version_info(session, version)

    return run_change(session, attempt, body, on_alias_change=on_alias_change)


def rollback(
    session: Session,
    *,
    tenant: str,
    actor: str,
    reason: str = "",
    to_version: str | None = None,
    expected_live: str | _Unchecked | None = UNCHECKED,
    on_alias_change: Notifier | None = None,
) -> AliasInfo:
    """Put the previous live version (or ``to_version``) back on ``live``, instantly.

    The current live version becomes ``rolled_back``; nothing is loaded here
    (replicas already hold or fetch the target). A pin on the alias is released.
    """
    attempt = Attempt("rollback", actor, reason, tenant=tenant, alias=LIVE, to_status=Status.LIVE)

    def body(at: Attempt) -> AliasInfo:
        live = _locked_alias(session, tenant, LIVE, "live version to roll back")
        _check_expected(at, live, expected_live, None)
        target_id = to_version or _previous_live(session, tenant, live.version_id)
        if target_id is None:
            raise Conflict(
                f"tenant {tenant!r} has no earlier live version that is retired to "
                "roll back to; pin a specific version instead"
            )
        target = find_version(session, target_id, lock=True)
        at.version_id, at.metrics = target.id, dict(target.metrics or {})
        if target.tenant != tenant:
            raise InvalidArgument(
                f"version {target.id} belongs to tenant {target.tenant!r}, not {tenant!r}",
                param="to_version",
            )
        return _make_live(session, at, target, live, pinned=False, old_to=Status.ROLLED_BACK)

    return run_change(session, attempt, body, on_alias_change=on_alias_change)


def pin(
    session: Session,
    *,
    version_id: str,
    actor: str,
    reason: str = "",
    expected_live: str | _Unchecked | None = UNCHECKED,
    on_alias_change: Notifier | None = None,
) -> AliasInfo:
    """Make ``version_id`` live (if it is not) and pin it.

    While pinned, promotions need ``force``; :func:`unpin` releases the pin.
    """
    attempt = Attempt(
        "pin", actor, reason, version_id=version_id, alias=LIVE, to_status=Status.LIVE
    )

    def body(at: Attempt) -> AliasInfo:
        version, live = _lock(session, at, LIVE)
        _check_expected(at, live, expected_live, None)
        if live is not None and live.version_id == version.id:
            at.from_status = at.to_status = version.status
            live.pinned, live.updated_by = True, actor
            session.flush()
            return alias_info(live)
        return _make_live(session, at, version, live, pinned=True)

    return run_change(session, attempt, body, on_alias_change=on_alias_change)


def unpin(session: Session, *, tenant: str, actor: str, reason: str = "") -> AliasInfo:
    """Release the pin on the tenant's live alias (promotions work again)."""
    attempt = Attempt("unpin", actor, reason, tenant=tenant, alias=LIVE)

    def body(at: Attempt) -> AliasInfo:
        live = _locked_alias(session, tenant, LIVE, "live alias to unpin")
        at.version_id = at.from_version = at.to_version = live.version_id
        live.pinned, live.updated_by = False, actor
        session.flush()
        return alias_info(live)

    return run_change(session, attempt, body)


# -- internals ---------------------------------------------------------------------------


def _lock_tenant(session: Session, tenant: str) -> None:
    """Serialize this tenant's writers (no-op on SQLite, where BEGIN IMMEDIATE did it)."""
    found = session.scalar(select(Tenant.name).where(Tenant.name == tenant).with_for_update())
    if found is None:
        raise AliasNotFound(f"tenant {tenant!r} has no registered versions")


def _locked_alias(session: Session, tenant: str, name: str, what: str) -> Alias:
    """The tenant's alias ``name``, read afresh once its writers are serialized;
    :class:`AliasNotFound` ("tenant ... has no <what>") when it is not set."""
    _lock_tenant(session, tenant)
    row = session.get(Alias, (tenant, name), populate_existing=True)
    if row is None:
        raise AliasNotFound(f"tenant {tenant!r} has no {what}")
    return row


def _lock(session: Session, at: Attempt, alias: str) -> tuple[AdapterVersion, Alias | None]:
    """Resolve the attempt's version, lock its tenant, and read the alias afresh."""
    tenant = find_version(session, at.version_id or "").tenant
    at.tenant = tenant
    _lock_tenant(session, tenant)
    version = find_version(session, at.version_id or "", lock=True)
    at.version_id, at.from_status = version.id, version.status
    at.metrics = dict(version.metrics or {})
    row = session.get(Alias, (tenant, alias), populate_existing=True)
    at.from_version = row.version_id if row is not None else None
    at.to_version = version.id
    return version, row


def _check_expected(at: Attempt, live: Alias | None, expected: Any, revision: int | None) -> None:
    current = live.version_id if live is not None else None
    if expected is not UNCHECKED and expected != current:
        raise Conflict(
            f"the live version of tenant {at.tenant!r} is {current}, not the "
            f"expected {expected}: another change won; re-read and retry"
        )
    seen = live.revision if live is not None else 0
    if revision is not None and revision != seen:
        raise Conflict(
            f"the live alias of tenant {at.tenant!r} is at revision {seen}, not "
            f"the expected {revision}: another change won; re-read and retry"
        )


def _move(at: Attempt, version: AdapterVersion, to: Status) -> None:
    at.version_id, at.from_status, at.to_status = version.id, version.status, to.value
    check_transition(version.id, version.status, to)
    version.status = to.value


def _make_live(
    session: Session,
    at: Attempt,
    version: AdapterVersion,
    live: Alias | None,
    *,
    pinned: bool,
    old_to: Status = Status.RETIRED,
) -> AliasInfo:
    check_transition(version.id, version.status, Status.LIVE)
    at.from_status = version.status
    previous = live.version_id if live is not None else None
    if previous is not None:
        old = find_version(session, previous, lock=True)
        check_transition(old.id, old.status, old_to)
        at.side_moves.append((old.id, old.status, old_to.value))
        old.status = old_to.value
    canary = session.get(Alias, (version.tenant, CANARY), populate_existing=True)
    if canary is not None and canary.version_id == version.id:
        _drop_alias(session, at, canary)
    version.status = Status.LIVE.value
    if live is None:
        live = Alias(tenant=version.tenant, name=LIVE, version_id=version.id, updated_by=at.actor)
        session.add(live)
    live.version_id, live.pinned, live.fraction = version.id, pinned, None
    live.updated_by = at.actor
    session.flush()
    at.from_version, at.to_version = previous, version.id
    at.alias_changed(alias=LIVE, version_id=version.id, previous=previous, revision=live.revision)
    return alias_info(live)


def _drop_alias(session: Session, at: Attempt, row: Alias) -> None:
    at.alias_changed(alias=row.name, version_id=None, previous=row.version_id)
    session.delete(row)
    session.flush()


def _canary_rollback(session: Session, version: AdapterVersion) -> AuditEvent | None:
    """The audit row of the canary stop that rolled ``version`` back (None: it was not)."""
    if version.status != Status.ROLLED_BACK.value:
        return None
    stmt = (
        select(AuditEvent)
        .where(
            AuditEvent.version_id == version.id,
            AuditEvent.outcome == "ok",
            AuditEvent.to_status == Status.ROLLED_BACK.value,
        )
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    row = session.scalar(stmt)
    return row if row is not None and row.action == "canary_stop" else None


def _previous_live(session: Session, tenant: str, current: str) -> str | None:
    """The most recent earlier target of the live alias that is now ``retired``."""
    stmt = (
        select(AuditEvent.to_version)
        .where(
            AuditEvent.tenant == tenant,
            AuditEvent.alias == LIVE,
            AuditEvent.outcome == "ok",
            AuditEvent.to_version.is_not(None),
        )
        .order_by(AuditEvent.id.desc())
    )
    for candidate in dict.fromkeys(session.scalars(stmt)):
        if candidate == current:
            continue
        row = session.get(AdapterVersion, candidate)
        if row is not None and row.status == Status.RETIRED.value:
            return candidate
    return None
