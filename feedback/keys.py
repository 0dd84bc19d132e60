"""Every Redis key, stream, group and channel name loraloop uses: one module, one prefix.

Nothing else in the code base spells a Redis name. Build one
:class:`RedisKeys` from ``Settings.redis_prefix`` and pass it around; two
installations (or two tests) with different prefixes never see each other's
data on a shared server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+$")
_PART = re.compile(r"^[^\s:{}]+$")


def _part(kind: str, value: str) -> str:
    if not value or not _PART.match(value):
        raise ValueError(
            f"{kind} {value!r} cannot be part of a Redis key: it must be non-empty "
            "and free of whitespace, ':' and braces"
        )
    return value


@dataclass(frozen=True)
class RedisKeys:
    """Names under ``prefix`` (``loraloop`` by default). All names are ``<prefix>:...``."""

    prefix: str = "loraloop"

    #: Consumer group of the learner on the feedback and interaction streams.
    LEARNER_GROUP = "learner"
    #: Rate-limit scopes of feedback (see :meth:`rate_limit`): per user, per tenant, per
    #: client address (hashed: the key holds no address).
    USER_FEEDBACK = "feedback-user"
    TENANT_FEEDBACK = "feedback-tenant"
    ADDRESS_FEEDBACK = "feedback-address"

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ValueError(
                f"Redis prefix {self.prefix!r} is invalid: use letters, digits "
                "and _ . - only (Settings.redis_prefix / LORALOOP_REDIS_PREFIX)"
            )

    # -- streams -------------------------------------------------------------------------
    @property
    def interactions_stream(self) -> str:
        """Stream of served answers (one entry per interaction), written by the replicas."""
        return f"{self.prefix}:stream:interactions"

    @property
    def feedback_stream(self) -> str:
        """Stream of users' ratings and corrections, read by the learner's consumer group."""
        return f"{self.prefix}:stream:feedback"

    @property
    def dead_letter_stream(self) -> str:
        """Stream of feedback entries that failed processing too many times."""
        return f"{self.prefix}:stream:dead-letter"

    # -- keys ----------------------------------------------------------------------------
    def interaction(self, interaction_id: str) -> str:
        """Hash of one interaction by its id (the handle feedback refers to); it expires."""
        return f"{self.prefix}:interaction:{_part('interaction id', interaction_id)}"

    def feedback_current(self, interaction_id: str, user: str) -> str:
        """JSON of ``user``'s current (latest) feedback on one interaction; it expires.

        A re-rating overwrites it; the feedback stream keeps every event."""
        return (f"{self.prefix}:feedback:current:{_part('interaction id', interaction_id)}:"
                f"{_part('user', user)}")

    def feedback_current_pattern(self, user: str) -> str:
        """SCAN pattern matching every :meth:`feedback_current` key of ``user`` (a hash)."""
        return f"{self.prefix}:feedback:current:*:{_part('user', user)}"

    def feedback_request(self, user: str, key_digest: str) -> str:
        """The feedback ``user`` recorded under an ``Idempotency-Key`` (by its digest); it
        expires. A retry with the same key finds it instead of adding a second event."""
        return (f"{self.prefix}:feedback:request:{_part('user', user)}:"
                f"{_part('idempotency key digest', key_digest)}")

    def feedback_request_pattern(self, user: str) -> str:
        """SCAN pattern matching every :meth:`feedback_request` key of ``user``."""
        return f"{self.prefix}:feedback:request:{_part('user', user)}:*"

    def interaction_pattern(self) -> str:
        """SCAN pattern matching every :meth:`interaction` key."""
        return f"{self.prefix}:interaction:*"

    def rate_limit(self, scope: str, subject: str, window: int | str) -> str:
        """Counter of ``subject``'s (a hashed user, an API key id) events in ``scope`` during
        ``window`` (for example the epoch minute); set an expiry of one window."""
        return (
            f"{self.prefix}:ratelimit:{_part('scope', scope)}:"
            f"{_part('subject', subject)}:{_part('window', str(window))}"
        )

    def rate_limit_pattern(self, scope: str, subject: str) -> str:
        """SCAN pattern matching every window of :meth:`rate_limit` ``(scope, subject)``."""
        return f"{self.prefix}:ratelimit:{_part('scope', scope)}:{_part('subject', subject)}:*"

    @property
    def learner_status(self) -> str:
        """JSON of the learner's latest status (backlog, last round, canaries); it expires."""
        return f"{self.prefix}:learner:status"

    # -- test-time compute -------------------------------------------------------------
    def compute_stats(self, tenant: str) -> str:
        """Hash of ``<version>|<strategy>|<stat>`` counters of ``tenant``'s answers
        (requests, compute and upstream tokens, handoffs, fallbacks, ups, downs)."""
        return f"{self.prefix}:compute:{_part('tenant', tenant)}"

    def compute_answer(self, interaction_id: str) -> str:
        """``tenant|version|strategy`` of one answer, until its first rating credits it."""
        return f"{self.prefix}:compute:answer:{_part('interaction id', interaction_id)}"

    def bandit(self, tenant: str) -> str:
        """Hash of ``<arm>:pulls|ups|downs|cost`` of ``tenant``'s adaptive escalations."""
        return f"{self.prefix}:bandit:{_part('tenant', tenant)}"

    def bandit_arm(self, interaction_id: str) -> str:
        """``tenant|arm`` of one adaptive escalation, until its first rating rewards it."""
        return f"{self.prefix}:bandit:arm:{_part('interaction id', interaction_id)}"

    def upstream_budget(self, tenant: str, window: int) -> str:
        """Counter of upstream tokens ``tenant`` spent in budget window ``window``; it expires."""
        return (f"{self.prefix}:upstream:budget:{_part('tenant', tenant)}:"
                f"{_part('window', str(window))}")

    # -- pub/sub -------------------------------------------------------------------------
    @property
    def alias_changes_channel(self) -> str:
        """Pub/sub channel of committed alias changes (JSON ``AliasChange``)."""
        return f"{self.prefix}:channel:alias-changes"

    def all_streams(self) -> tuple[str, ...]:
        """Every stream name, for tooling that trims or inspects them."""
        return (self.interactions_stream, self.feedback_stream, self.dead_letter_stream)
