"""Event schemas, Redis names and clients, interaction logging (the sink), the feedback
store and the learner's stream reader (the source), PII redaction, user deletion and the
embedded Redis.

Only this package imports redis: ``feedback.connections`` builds every Redis client of
loraloop (the registry's alias notifications, ``storage.alias_events``, use it too) and
``feedback.keys`` names every key. See ``feedback.sink`` for the logging contract
(never blocks, bounded, counted), ``feedback.store`` for recording feedback (and
which error means which HTTP status), ``feedback.source`` for the consumer-group
semantics, and ``feedback.interactions`` / ``feedback.rounds`` for the learner's reads.
"""

from feedback.connections import REDIS_ERRORS, async_client, redact_url, sync_client
from feedback.durability import durability_mode
from feedback.errors import (
    DurabilityUnavailable,
    EmbeddedRedisError,
    FeedbackError,
    FeedbackTooLarge,
    FeedbackUnavailable,
    IdempotencyKeyReused,
    InteractionNotFound,
    InvalidEvent,
    InvalidFeedback,
    NotYourInteraction,
    RateLimited,
    RedactorUnavailable,
    SchemaVersionError,
)
from feedback.events import (
    ANONYMOUS_USER,
    BASE_VERSION,
    FEEDBACK_SCHEMA_VERSION,
    INTERACTION_SCHEMA_VERSION,
    Feedback,
    FeedbackEntry,
    Interaction,
    Message,
    Mode,
    Rating,
    hash_user,
    new_interaction_id,
    normalize_rating,
)
from feedback.forget import ForgetSummary, forget_user
from feedback.interactions import get_interaction, join_interactions, read_interactions
from feedback.keys import RedisKeys
from feedback.redact import (
    PresidioRedactor,
    Redactor,
    RegexRedactor,
    make_redactor,
    redact_interaction,
    redact_text,
)
from feedback.redis_server import EmbeddedRedis, redis_server_binary, redis_version, version_tuple
from feedback.rounds import RoundSelection, select_for_round
from feedback.sink import InteractionSink, SinkConfig, SinkStats
from feedback.source import FeedbackSource, SourceConfig, SourceStats
from feedback.store import FeedbackConfig, FeedbackStore

__all__ = [
    "ANONYMOUS_USER",
    "BASE_VERSION",
    "FEEDBACK_SCHEMA_VERSION",
    "INTERACTION_SCHEMA_VERSION",
    "REDIS_ERRORS",
    "DurabilityUnavailable",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "Feedback",
    "FeedbackConfig",
    "FeedbackEntry",
    "FeedbackError",
    "FeedbackSource",
    "FeedbackStore",
    "FeedbackTooLarge",
    "FeedbackUnavailable",
    "ForgetSummary",
    "IdempotencyKeyReused",
    "Interaction",
    "InteractionNotFound",
    "InteractionSink",
    "InvalidEvent",
    "InvalidFeedback",
    "Message",
    "Mode",
    "NotYourInteraction",
    "PresidioRedactor",
    "RateLimited",
    "Rating",
    "Redactor",
    "RedactorUnavailable",
    "RedisKeys",
    "RegexRedactor",
    "RoundSelection",
    "SchemaVersionError",
    "SinkConfig",
    "SinkStats",
    "SourceConfig",
    "SourceStats",
    "async_client",
    "durability_mode",
    "forget_user",
    "get_interaction",
    "hash_user",
    "join_interactions",
    "make_redactor",
    "new_interaction_id",
    "normalize_rating",
    "read_interactions",
    "redact_interaction",
    "redact_text",
    "redact_url",
    "redis_server_binary",
    "redis_version",
    "select_for_round",
    "sync_client",
    "version_tuple",
]
