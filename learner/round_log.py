"""The learner's recent rounds, kept in its status: what each made, how long it took, and
how long its newest feedback took to reach live traffic.

**Feedback-to-live** of a round is the time from its newest feedback event (the event's
Redis stream id is the millisecond it was added) to its version going live. A version
goes live in its round (``auto_promote = live``), later (the canary controller, an
operator) or never (rejected, rolled back, superseded); so each row starts with
``live_at`` unknown and :func:`resolve_live` reads it from the registry's audit trail
(the first successful change that made the version live) until the version is live or
can no longer become live (``settled``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from storage import VersionNotFound, get_version, history

#: Rounds kept in the status (``status["recent_rounds"]``, oldest first).
KEEP = 20
#: Statuses from which a version can no longer go live by itself.
_NEVER_LIVE = ("rejected", "failed", "rolled_back", "retired")


def stream_time_s(stream_id: str) -> float:
    """The time (epoch seconds) a Redis stream entry was added: its id is ``<ms>-<seq>``."""
    return int(stream_id.partition("-")[0]) / 1000


def round_row(report: dict[str, Any], stream_ids: Iterable[str], *,
              now: float | None = None) -> dict[str, Any]:
    """One round's row: its tenant, version, outcome, timings, sizes and newest event."""
    ids = list(stream_ids)
    timings = report.get("timings") or {}
    metrics = report.get("metrics") or {}
    counts = report.get("counts") or {}
    version = report.get("version")
    return {
        "tenant": report.get("tenant"),
        "version": version,
        "outcome": report.get("outcome"),
        "finished_at": round(time.time() if now is None else now, 3),
        "seconds": round(sum(timings.values()), 3),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "events": len(ids),
        "examples": metrics.get("examples", counts.get("kept", 0)),
        "newest_feedback_at": max(map(stream_time_s, ids)) if ids else None,
        "live_at": None,
        "feedback_to_live_s": None,
        # A round without a version has nothing to wait for.
        "settled": version is None,
    }


def remember(status: dict[str, Any], row: dict[str, Any], keep: int = KEEP) -> None:
    """Append ``row`` to ``status["recent_rounds"]``, keeping the last ``keep``."""
    status["recent_rounds"] = [*status.get("recent_rounds", []), row][-keep:]


def pending(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose version may still go live."""
    return [r for r in rows if not r.get("settled")]


def resolve_live(sessions, rows: Iterable[dict[str, Any]]) -> int:
    """Fill ``live_at`` and ``feedback_to_live_s`` of pending rows from the audit trail;
    settle those whose version went live or can no longer. Returns how many changed."""
    changed = 0
    for row in pending(rows):
        with sessions() as session:
            went_live = [e for e in history(session, version_id=row["version"], limit=200)
                         if e.outcome == "ok" and e.to_status == "live"
                         and e.version_id == row["version"]]
            try:
                status = get_version(session, version_id=row["version"]).status
            except VersionNotFound:
                status = "missing"
        if went_live:
            at = went_live[0].at
            if at.tzinfo is None:  # SQLite hands back naive UTC times
                at = at.replace(tzinfo=UTC)
            row["live_at"] = round(at.timestamp(), 3)
            if row.get("newest_feedback_at") is not None:
                row["feedback_to_live_s"] = round(row["live_at"] - row["newest_feedback_at"], 3)
            row["settled"] = True
        elif status in (*_NEVER_LIVE, "missing"):
            row["settled"] = True
            row["never_live"] = status
        else:
            continue
        changed += 1
    return changed
