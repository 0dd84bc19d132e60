"""Errors of the feedback package: events, the sink, the feedback store, the embedded Redis.

One base class, :class:`FeedbackError`; each subclass also inherits the
built-in an ordinary caller would catch (``ValueError`` for a malformed or
foreign event, ``RuntimeError`` for a server that would not start). The sink
itself never raises into the request path: its failures are counters.
"""

from __future__ import annotations


class FeedbackError(Exception):
    """Base class of every error raised by ``feedback``."""


class InvalidEvent(FeedbackError, ValueError):
    """An event's JSON is malformed or does not match its schema (a poison entry)."""


class SchemaVersionError(InvalidEvent):
    """An event was written with a schema version this code does not read.

    Raised by ``from_json`` before any field is validated, so an old reader
    never half-parses a newer event. Upgrade the reader, or route the entry to
    the dead-letter stream.
    """

    def __init__(self, kind: str, found: object, supported: int) -> None:
        self.kind = kind
        self.found = found
        self.supported = supported
        super().__init__(
            f"{kind} event has schema_version {found!r}, but this loraloop reads only "
            f"version {supported}: upgrade the reader (or dead-letter the entry)"
        )


class EmbeddedRedisError(FeedbackError, RuntimeError):
    """The embedded ``redis-server`` could not be found, started or stopped."""


# -- feedback recording (``feedback.store``); the HTTP edge maps these to statuses ---------
class InvalidFeedback(FeedbackError, ValueError):
    """A feedback request is malformed (an unknown rating, for example): HTTP 400."""


class IdempotencyKeyReused(InvalidFeedback):
    """An ``Idempotency-Key`` already recorded a different feedback: HTTP 422."""


class FeedbackTooLarge(InvalidFeedback):
    """A correction or comment is longer than its configured limit: HTTP 413."""

    def __init__(self, field: str, size: int, limit: int, setting: str) -> None:
        self.field = field
        self.size = size
        self.limit = limit
        super().__init__(
            f"{field} is {size} characters long; the limit is {limit} characters "
            f"(FeedbackConfig.{setting}): shorten it"
        )


class InteractionNotFound(FeedbackError, LookupError):
    """No interaction with this id: it never existed, or it expired: HTTP 404."""

    def __init__(self, interaction_id: str) -> None:
        self.interaction_id = interaction_id
        super().__init__(
            f"interaction {interaction_id!r} is unknown or expired: feedback must name the "
            "`id` of a recent chat completion response"
        )


class NotYourInteraction(FeedbackError, PermissionError):
    """The caller is not the user (or tenant) the interaction was served to: HTTP 403."""


class RateLimited(FeedbackError):
    """Too much feedback from one user or tenant in the current window: HTTP 429.

    ``retry_after_s`` (whole seconds, at least 1) goes into the ``Retry-After`` header.
    """

    def __init__(self, scope: str, limit: int, window_s: int, retry_after_s: int) -> None:
        self.scope = scope
        self.limit = limit
        self.window_s = window_s
        self.retry_after_s = retry_after_s
        super().__init__(
            f"{scope} rate limit reached: at most {limit} feedback events per {window_s} s "
            f"(FeedbackConfig.{scope}_limit); retry after {retry_after_s} s"
        )


class FeedbackUnavailable(FeedbackError, ConnectionError):
    """Redis did not answer in time (down, unreachable, loading, out of memory): HTTP 503.

    Raised fast (short timeouts, no retries). The feedback was not accepted and
    the client should retry. After a timeout (or an unconfirmed WAITAOF) the event
    may still be in the stream; the retry then adds a second event for the same
    rating, which is harmless: the newest rating of an interaction wins.
    """


class DurabilityUnavailable(FeedbackError, RuntimeError):
    """Strict durability was asked for but this Redis cannot provide it (a setup error)."""


class RedactorUnavailable(FeedbackError, ImportError):
    """A redactor's optional dependency (for example ``presidio_analyzer``) is missing."""
