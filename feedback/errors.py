"""Errors of the feedback package: events, the sink, the feedback store, the embedded Redis.

One base class, :class:`FeedbackError`; each subclass also inherits the
built-in an ordinary caller would catch (``ValueError`` for a malformed or
foreign event, ``RuntimeError`` for a server that would not start). The sink
itself never raises into the request path: its failures are counters. The HTTP
edge answers them through the table of ``serving.http_errors``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FeedbackError(Exception):
    """Base class of every error raised by ``feedback``.

    Most take a message. A subclass that declares ``fields`` takes those values
    instead (positionally or by name), keeps each as an attribute, and formats
    its message from ``template``.
    """

    fields: ClassVar[tuple[str, ...]] = ()
    template: ClassVar[str] = ""

    def __init__(self, *args: Any, **values: Any) -> None:
        if not self.fields:
            super().__init__(*args, **values)
            return
        values.update(zip(self.fields, args, strict=False))
        missing = [name for name in self.fields if name not in values]
        if missing or len(args) > len(self.fields):
            raise TypeError(f"{type(self).__name__} takes {self.fields}, got {args} {values}")
        self.__dict__.update(values)
        super().__init__(self.template.format(**values))


class InvalidEvent(FeedbackError, ValueError):
    """An event's JSON is malformed or does not match its schema (a poison entry)."""


class SchemaVersionError(InvalidEvent):
    """An event was written with a schema version this code does not read.

    Raised by ``from_json`` before any field is validated, so an old reader
    never half-parses a newer event. Upgrade the reader, or route the entry to
    the dead-letter stream.
    """

    fields = ("kind", "found", "supported")
    template = (
        "{kind} event has schema_version {found!r}, but this loraloop reads only "
        "version {supported}: upgrade the reader (or dead-letter the entry)"
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

    fields = ("field", "size", "limit", "setting")
    template = (
        "{field} is {size} characters long; the limit is {limit} characters "
        "(FeedbackConfig.{setting}): shorten it"
    )

    @property
    def param(self) -> str:
        """The request field to blame."""
        return self.field


class InteractionNotFound(FeedbackError, LookupError):
    """No interaction with this id: it never existed, or it expired: HTTP 404."""

    fields = ("interaction_id",)
    template = (
        "interaction {interaction_id!r} is unknown or expired: feedback must name the "
        "`id` of a recent chat completion response"
    )


class FeedbackNotFound(FeedbackError, LookupError):
    """The caller has not rated this interaction (or the rating was deleted): HTTP 404."""

    fields = ("interaction_id",)
    template = "no feedback from you for interaction {interaction_id!r}"


class NotYourInteraction(FeedbackError, PermissionError):
    """The caller is not the user (or tenant) the interaction was served to: HTTP 403."""


class RateLimited(FeedbackError):
    """Too much feedback from one user or tenant in the current window: HTTP 429.

    ``retry_after_s`` (whole seconds, at least 1) goes into the ``Retry-After`` header.
    """

    fields = ("scope", "limit", "window_s", "retry_after_s")
    template = (
        "{scope} rate limit reached: at most {limit} feedback events per {window_s} s "
        "(FeedbackConfig.{scope}_limit); retry after {retry_after_s} s"
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
