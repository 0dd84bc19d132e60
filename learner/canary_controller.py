"""Acting on canaries: read each canary's thumbs, decide, promote or roll back, audited."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from feedback.events import BASE_VERSION
from feedback.keys import RedisKeys
from feedback.ratings import feedback_since
from learner.canary import CanaryPolicy, decide, fast_track, tally_ratings
from storage import (
    Conflict,
    dataset_users,
    get_alias,
    get_version,
    list_aliases,
    promote,
    stop_canary,
)

logger = logging.getLogger(__name__)


class CanaryController:
    """One pass over every tenant's canary per :meth:`evaluate` call."""

    def __init__(self, *, redis_client, keys: RedisKeys, sessions, policy: CanaryPolicy,
                 actor: str = "canary-controller", notifier=None) -> None:
        self.redis = redis_client
        self.keys = keys
        self.sessions = sessions
        self.policy = policy
        self.actor = actor
        self.notifier = notifier

    def evaluate(self) -> list[dict]:
        """Decide on each canary now; returns what was seen and done, per tenant."""
        with self.sessions() as session:
            canaries = [a for a in list_aliases(session) if a.name == "canary"]
        return [self._evaluate(canary) for canary in canaries]

    def _evaluate(self, canary) -> dict:
        with self.sessions() as session:
            live = get_alias(session, tenant=canary.tenant, alias="live")
            evidence = float((get_version(session, version_id=canary.version_id).metrics
                              or {}).get("evidence") or 0.0)
            # Users the canary learned from do not judge it (docs/SECURITY.md, Sybil).
            trainers = dataset_users(session, version_id=canary.version_id)
        # Without a live version the canary is compared with the base model's answers.
        live_id = live.version_id if live else BASE_VERSION
        since_ms = int(canary.updated_at.timestamp() * 1000)
        events = feedback_since(self.redis, self.keys, since_ms)
        tallies = tally_ratings(events, {canary.version_id, live_id}, exclude_users=trainers)
        canary_tally, live_tally = tallies[canary.version_id], tallies[live_id]
        report = {"tenant": canary.tenant, "canary": canary.version_id,
                  "live": live.version_id if live else None,
                  "canary_up": canary_tally.up, "canary_down": canary_tally.down,
                  "live_up": live_tally.up, "live_down": live_tally.down,
                  "gate_evidence": evidence}
        verdict, p = decide(canary_tally, live_tally, self.policy)
        report.update(verdict=verdict, p_canary_better=round(p, 6))
        thumbs = (f"canary thumbs-up {canary_tally.up}/{canary_tally.n} vs live "
                  f"{live_tally.up}/{live_tally.n}: P(canary better) = {p:.4f}")
        reason = f"{thumbs} (threshold {self.policy.confidence})"
        if verdict == "wait":
            started = canary.updated_at
            if started.tzinfo is None:  # SQLite hands back naive UTC times
                started = started.replace(tzinfo=UTC)
            age_s = (datetime.now(UTC) - started).total_seconds()
            go, why = fast_track(evidence, age_s, canary_tally, live_tally, self.policy)
            report["fast_track"] = why
            if not go:
                return report
            verdict, reason = "promote", f"fast track: {why}; {thumbs}"
            report["verdict"] = verdict
        try:
            with self.sessions() as session:
                if verdict == "promote":
                    promote(session, version_id=canary.version_id, actor=self.actor,
                            reason=reason, expected_live=live.version_id if live else None,
                            on_alias_change=self.notifier)
                else:
                    stop_canary(session, tenant=canary.tenant, actor=self.actor, reason=reason,
                                rollback=True, expected_version=canary.version_id,
                                on_alias_change=self.notifier)
        except Conflict as exc:  # an operator moved first (audited); the next pass re-reads
            report.update(verdict="wait", conflict=str(exc))
        logger.info("canary %s of %s: %s (%s)", canary.version_id[:12], canary.tenant,
                    verdict, reason)
        return report
