"""What forgetting a user does to the registry's SQL rows, and what the learner reads back.

The only rows that hold a user's data are the dataset ledger's
(:class:`~storage.models.DatasetMember`: a feedback stream id and the hashed user).
:func:`forget_dataset_user` anonymizes them in one transaction (the stream ids stay:
they keep a crash from training an entry twice) and records the forgotten feedback
stream ids in an audit row of action :data:`FORGET_ACTION`, without the user. Replay
and carry-over read those ids back with :func:`forgotten_stream_ids` and leave the
examples out: every trained example came from an entry of some dataset, so its
stream id names it wherever it is replayed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.db import read_transaction, write_transaction
from storage.models import AuditEvent, DatasetMember, utcnow

FORGET_ACTION = "forget_user"


@dataclass(frozen=True)
class ForgottenRows:
    """What :func:`forget_dataset_user` changed."""

    anonymized: int  #: dataset rows whose user was cleared
    stream_ids: list[str]  #: the forgotten feedback stream ids (ledger's and given)


def forget_dataset_user(session: Session, *, user: str, stream_ids: Iterable[str] = (),
                        actor: str, reason: str = "") -> ForgottenRows:
    """Anonymize ``user``'s (the stored hash) dataset rows and record their stream ids,
    with ``stream_ids`` (e.g. entries deleted from Redis that a round may hold), as
    forgotten; one transaction."""
    if not user:
        raise ValueError("user must be the stored (hashed) user, got an empty value")
    with write_transaction(session):
        ids = set(stream_ids) | set(session.scalars(
            select(DatasetMember.stream_id).where(DatasetMember.user == user)))
        anonymized = session.execute(
            update(DatasetMember).where(DatasetMember.user == user).values(user=None)
        ).rowcount or 0
        session.add(AuditEvent(
            at=utcnow(), actor=actor, action=FORGET_ACTION, outcome="ok",
            reason=reason or "a user's data was forgotten",
            detail=f"{anonymized} dataset row(s) anonymized; {len(ids)} feedback event(s) "
                   "left out of replay from now on",
            metrics={"forgotten_stream_ids": sorted(ids)}))
    return ForgottenRows(anonymized, sorted(ids))


def forgotten_stream_ids(session: Session) -> set[str]:
    """Every feedback stream id a forget has recorded (replay must leave them out)."""
    with read_transaction(session):
        rows = session.scalars(select(AuditEvent.metrics).where(
            AuditEvent.action == FORGET_ACTION, AuditEvent.outcome == "ok"))
        return {sid for metrics in rows for sid in (metrics or {}).get("forgotten_stream_ids", [])}
