"""Event schemas, Redis names, interaction logging (the sink), the feedback store and the
learner's stream reader (the source), PII redaction, user deletion and the embedded Redis.

Only this package imports redis. See ``feedback.sink`` for the logging contract
(never blocks, bounded, counted), ``feedback.store`` for recording feedback (and
which error means which HTTP status), ``feedback.source`` for the consumer-group
semantics, and ``feedback.keys`` for every Redis name.
"""

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
    Interaction,
    Message,
    Mode,
    Rating,
    hash_user,
    new_interaction_id,
    normalize_rating,
)
from feedback.forget import ForgetSummary, forget_user
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
from feedback.sink import (
    InteractionSink,
    SinkConfig,
    SinkStats,
    async_client,
    get_interaction,
    read_interactions,
)
from feedback.source import (
    FeedbackEntry,
    FeedbackSource,
    RoundSelection,
    SourceConfig,
    SourceStats,
    join_interactions,
    select_for_round,
)
from feedback.store import FeedbackConfig, FeedbackStore, durability_mode

__all__ = [
    "ANONYMOUS_USER",
    "BASE_VERSION",
    "FEEDBACK_SCHEMA_VERSION",
    "INTERACTION_SCHEMA_VERSION",
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
    "redis_server_binary",
    "redis_version",
    "select_for_round",
    "version_tuple",
]
