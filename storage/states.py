"""The adapter version status machine: the one table of legal moves.

::

    candidate ─► gated ─► canary ─► live ─► retired
        │          │        │  │      │        │
        └► rejected│        │  └► gated (canary stopped, no verdict)
        └► failed  ├► live  ├► rolled_back ◄┘  └► live (rollback / pin restores it)
                   └► retired

``rejected`` and ``failed`` are final. A ``retired`` version (superseded by a
promotion) can become ``live`` again through a rollback or a pin; so can a
``rolled_back`` one, by an explicit pin or promotion from an operator (a canary
rolled back by its verdict needs a forced promotion: ``storage.aliases.promote``).
"""

from __future__ import annotations

from enum import StrEnum

from storage.errors import IllegalTransition, InvalidArgument


class Status(StrEnum):
    """Status of an adapter version."""

    CANDIDATE = "candidate"
    GATED = "gated"
    CANARY = "canary"
    LIVE = "live"
    RETIRED = "retired"
    REJECTED = "rejected"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


S = Status

#: status -> statuses it may move to. Nothing else is legal.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.CANDIDATE: frozenset({S.GATED, S.REJECTED, S.FAILED}),
    S.GATED: frozenset({S.CANARY, S.LIVE, S.REJECTED, S.FAILED, S.RETIRED}),
    S.CANARY: frozenset({S.LIVE, S.GATED, S.ROLLED_BACK, S.FAILED, S.RETIRED}),
    S.LIVE: frozenset({S.RETIRED, S.ROLLED_BACK, S.FAILED}),
    S.RETIRED: frozenset({S.LIVE}),
    S.ROLLED_BACK: frozenset({S.LIVE, S.RETIRED}),
    S.REJECTED: frozenset(),
    S.FAILED: frozenset(),
}

STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


def parse_status(value: str) -> Status:
    """``value`` as a :class:`Status`; :class:`InvalidArgument` (a ``ValueError``) naming
    the bad value and the valid ones otherwise."""
    try:
        return Status(value)
    except ValueError:
        raise InvalidArgument(
            f"unknown adapter status {value!r}; valid statuses: {', '.join(STATUSES)}",
            param="status",
        ) from None


def allowed_next(current: str) -> frozenset[Status]:
    """The statuses ``current`` may move to."""
    return TRANSITIONS[parse_status(current)]


def check_transition(version_id: str, current: str, requested: str) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> requested`` is legal."""
    target = parse_status(requested)
    allowed = allowed_next(current)
    if target not in allowed:
        raise IllegalTransition(
            version_id=version_id,
            current=str(current),
            requested=target.value,
            allowed=[s.value for s in allowed],
        )
