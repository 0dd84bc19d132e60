"""Event schemas written to Redis: :class:`Interaction` (one per served answer) and
:class:`Feedback` (one per rating a user gives).

An interaction is serialised as one JSON object (``Interaction.to_json``) and
stored twice by the sink: under ``RedisKeys.interaction(id)`` with a TTL (the
handle feedback joins on) and as the ``event`` field of one entry in the
interactions stream (what the learner reads). Every event carries
``schema_version``; :meth:`Interaction.from_json` refuses a version it does not
know *before* validating any field, so a reader never half-parses a newer
event, and it raises :class:`~feedback.errors.InvalidEvent` (a ``ValueError``)
for anything malformed, so a consumer can dead-letter poison entries.
:class:`FeedbackEntry` is a Feedback as the learner's reader delivers it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from feedback.errors import InvalidEvent, InvalidFeedback, SchemaVersionError

#: Schema version written into every new :class:`Interaction`.
INTERACTION_SCHEMA_VERSION = 1
#: Schema version written into every new :class:`Feedback`.
FEEDBACK_SCHEMA_VERSION = 1
#: Hard caps of the Feedback schema; the configured limits (FeedbackConfig) are lower.
MAX_CORRECTION_CHARS = 65_536
MAX_COMMENT_CHARS = 8_192
#: ``adapter_version`` of an answer produced by the base model, without an adapter.
BASE_VERSION = "base"
#: What :func:`hash_user` returns for a request that named no user.
ANONYMOUS_USER = "anonymous"

Mode = Literal["plain", "best_of_n", "refined", "handoff"]
Strategy = Literal["single", "best_of_n", "refine", "budget", "adaptive", "handoff"]
Rating = Literal[1, -1]
_E = TypeVar("_E", bound="_Event")
_HEX128 = r"^[0-9a-f]{32}$"
_RATINGS: dict[str, Rating] = {"up": 1, "down": -1, "1": 1, "+1": 1, "-1": -1}


def new_interaction_id() -> str:
    """A fresh 128-bit random id as 32 lowercase hex digits (the response ``id``)."""
    return secrets.token_hex(16)


def normalize_rating(value: object) -> Rating:
    """``"up"`` / ``1`` → ``1`` and ``"down"`` / ``-1`` → ``-1`` (also ``"1"``, ``"+1"``, ``"-1"``).

    Raises :class:`~feedback.errors.InvalidFeedback` (a ``ValueError``) naming the
    value and the accepted ones for anything else (``True``, ``0``, ``"meh"``).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value in (1, -1):
        return 1 if value == 1 else -1
    if isinstance(value, str) and value.strip().lower() in _RATINGS:
        return _RATINGS[value.strip().lower()]
    raise InvalidFeedback(f"rating {value!r} is invalid: use 'up' or 'down' (or 1 / -1)")


def hash_user(user: str | None) -> str:
    """The stored form of a user name: a sha256 hex prefix (128 bits), never the raw name.

    ``None`` or ``""`` gives :data:`ANONYMOUS_USER`. The hash is unsalted for now,
    so the same user always maps to the same value across replicas and restarts
    (feedback must match the user who got the answer).
    """
    if not user:
        return ANONYMOUS_USER
    return hashlib.sha256(user.encode("utf-8")).hexdigest()[:32]


class Message(BaseModel):
    """One chat message as it was served (after redaction, once redaction exists)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    role: str = Field(min_length=1, description="system, user, assistant, tool, ...")
    content: str = Field(description="The message text.")
    name: str | None = Field(default=None, description="Optional participant name.")


class _Event(BaseModel):
    """What every event shares: a random id, and a schema version checked on read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The event's name in error messages, and the schema version this code reads and writes.
    KIND: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]

    schema_version: int = Field(
        default=0,  # each event type sets its current version as the default
        description="Version of this schema; readers refuse versions they do not know.",
    )
    id: str = Field(
        default_factory=new_interaction_id,
        pattern=_HEX128,
        description="128-bit random id (32 hex digits). An interaction's is the response id "
        "and the feedback handle; a feedback's is returned to the client.",
    )

    @model_validator(mode="after")
    def _check_version(self) -> Self:
        if self.schema_version != self.SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not the current "
                             f"version {self.SCHEMA_VERSION}")
        return self

    def to_json(self) -> str:
        """The event as compact JSON (what is stored in Redis)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes | bytearray) -> Self:
        """Parse :meth:`to_json` output.

        Raises :class:`~feedback.errors.SchemaVersionError` for another schema
        version and :class:`~feedback.errors.InvalidEvent` for anything else
        malformed (both are ``ValueError``).
        """
        return _parse(cls, data)


class ComputeRecord(BaseModel):
    """How an answer was produced at inference time (test-time compute and handoff).

    Written by the replica that ran the strategy (``serving.compute``), returned to
    the client as the ``loraloop`` object of the response, and stored with the
    interaction: the learner distils handed-off answers from it, the adaptive
    policy learns which strategy earns thumbs-up.
    """

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Field(default="single", description="The strategy the request ran.")
    decision: str | None = Field(default=None, description="adaptive: the path it took "
                                 "(`stop`, `more`, `handoff`); otherwise None.")
    samples: int = Field(default=1, ge=0, description="Local candidate answers generated.")
    candidates: list[str] = Field(default_factory=list, description="The local candidate "
                                  "answers (those not served are undesirable examples).")
    votes: dict[str, int] = Field(default_factory=dict, description="vote: normalised "
                                  "answer -> count.")
    scores: list[float] = Field(default_factory=list, description="scorer/judge: one per "
                                "candidate, in candidate order.")
    chosen: int | None = Field(default=None, description="Index of the served candidate.")
    thinking_tokens: int = Field(default=0, ge=0, description="Tokens inside the thinking "
                                 "section (reasoning budget).")
    compute_tokens: int = Field(default=0, ge=0, description="Every token generated or "
                                "scored locally for this answer.")
    handed_off: bool = Field(default=False, description="The served answer is the upstream's.")
    upstream_model: str | None = Field(default=None, description="The upstream that answered.")
    upstream_tokens: int = Field(default=0, ge=0, description="Tokens the upstream spent.")
    disagreement: float | None = Field(default=None, ge=0, le=1, description="Share of the "
                                       "local candidates whose answer differs from the "
                                       "upstream's (handoff only).")
    fallback: str | None = Field(default=None, description="Why a handoff fell back to the "
                                 "local answer: timeout, error, budget, breaker_open, "
                                 "not_configured.")
    confidence: float | None = Field(default=None, description="adaptive: the confidence "
                                     "signal its decision compared with the threshold.")
    pseudo_label: bool = Field(default=False, description="The served answer is a settled "
                               "majority of the samples of a tenant that opted in: the "
                               "learner distils it like a handed-off answer.")


class Interaction(_Event):
    """One served answer: what was asked, which exact version answered, and how.

    For ``n > 1`` every choice is in ``completions`` (index = choice index) with
    its finish reason at the same index of ``finish_reasons``; the convenience
    properties :attr:`completion` and :attr:`finish_reason` give choice 0. The
    constructor also accepts ``completion=`` / ``finish_reason=`` for a single
    choice. Instances are frozen; do not mutate their lists after
    :meth:`~feedback.sink.InteractionSink.submit`.
    """

    KIND: ClassVar[str] = "interaction"
    SCHEMA_VERSION: ClassVar[int] = INTERACTION_SCHEMA_VERSION

    schema_version: int = INTERACTION_SCHEMA_VERSION
    tenant: str = Field(min_length=1, description="Tenant the request was served for.")
    user: str = Field(
        default=ANONYMOUS_USER,
        min_length=1,
        max_length=128,
        description="Hashed user (hash_user), never the raw name.",
    )
    model: str = Field(min_length=1, description="The request's `model` (tenant or alias).")
    adapter_version: str = Field(
        default=BASE_VERSION,
        min_length=1,
        description="Adapter version id that produced the answer, or `base`.",
    )
    messages: list[Message] = Field(description="The prompt messages, in order.")
    completions: list[str] = Field(
        min_length=1, description="The answer text of each choice (index = choice index)."
    )
    finish_reasons: list[str | None] = Field(
        default_factory=list,
        description="Finish reason per choice (stop, length, ...); empty or one per choice.",
    )
    sampling: dict[str, Any] = Field(
        default_factory=dict, description="Sampling parameters as served (temperature, ...)."
    )
    prompt_tokens: int = Field(default=0, ge=0, description="Tokens in the prompt.")
    completion_tokens: int = Field(default=0, ge=0, description="Tokens generated, all choices.")
    latency_ms: float = Field(default=0.0, ge=0, description="Request start to last token.")
    mode: Mode = Field(default="plain", description="How the answer was produced.")
    compute: ComputeRecord | None = Field(default=None, description="Test-time compute and "
                                          "handoff details; None for a plain single answer.")
    abandoned: bool = Field(
        default=False, description="The client went away before the answer was complete."
    )
    created_at: float = Field(
        default_factory=time.time, ge=0, description="Unix time the request arrived."
    )
    truncated: list[str] = Field(
        default_factory=list,
        description="Fields cut to the stored bounds (feedback.bounds), e.g. `sampling.stop`; "
        "empty when everything was stored whole.",
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_single_choice(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for single, plural in (("completion", "completions"), ("finish_reason", "finish_reasons")):
            if single in data:
                if plural in data:
                    raise ValueError(f"give either `{single}` or `{plural}`, not both")
                data[plural] = [data.pop(single)]
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> Interaction:
        if self.finish_reasons and len(self.finish_reasons) != len(self.completions):
            raise ValueError(
                f"finish_reasons has {len(self.finish_reasons)} entries but completions has "
                f"{len(self.completions)}: give one finish reason per choice, or none"
            )
        return self

    # -- convenience ------------------------------------------------------------------
    @property
    def completion(self) -> str:
        """The text of choice 0."""
        return self.completions[0]

    @property
    def finish_reason(self) -> str | None:
        """The finish reason of choice 0 (``None`` if not recorded)."""
        return self.finish_reasons[0] if self.finish_reasons else None


class Feedback(_Event):
    """One rating of one interaction by the user who got it (``+1`` up, ``-1`` down).

    ``user``, ``tenant`` and ``adapter_version`` are copied from the interaction
    by the store, so the learner knows which version earned the rating without a
    join. ``correction`` (the answer the user wanted) and ``comment`` are stored
    redacted. A later rating of the same interaction by the same user supersedes
    this one (``created_at`` orders them; both stay in the stream).
    """

    KIND: ClassVar[str] = "feedback"
    SCHEMA_VERSION: ClassVar[int] = FEEDBACK_SCHEMA_VERSION

    schema_version: int = FEEDBACK_SCHEMA_VERSION
    interaction_id: str = Field(pattern=_HEX128, description="The rated interaction's id.")
    rating: Rating = Field(description="+1 (thumbs up) or -1 (thumbs down); "
                           "'up' / 'down' are accepted on input.")
    correction: str | None = Field(
        default=None, max_length=MAX_CORRECTION_CHARS,
        description="The answer the user wanted (redacted), if given.",
    )
    comment: str | None = Field(
        default=None, max_length=MAX_COMMENT_CHARS, description="Free text (redacted), if given."
    )
    user: str = Field(min_length=1, max_length=128,
                      description="Hashed user (hash_user), equal to the interaction's.")
    tenant: str = Field(min_length=1, description="The interaction's tenant.")
    adapter_version: str = Field(
        default=BASE_VERSION, min_length=1,
        description="Adapter version that produced the rated answer (from the interaction).",
    )
    created_at: float = Field(default_factory=time.time, ge=0,
                              description="Unix time the feedback was accepted.")

    @field_validator("rating", mode="before")
    @classmethod
    def _normalize_rating(cls, value: object) -> Rating:
        return normalize_rating(value)


@dataclass(frozen=True)
class FeedbackEntry:
    """One parsed feedback stream entry, as delivered to a consumer (``feedback.source``)."""

    stream_id: str
    feedback: Feedback
    deliveries: int  #: times delivered so far, this one included


def _parse(cls: type[_E], data: str | bytes | bytearray) -> _E:
    """Refuse another schema version *before* validating any field, then validate."""
    kind, version = cls.KIND, cls.SCHEMA_VERSION
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"{kind} event is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidEvent(f"{kind} event must be a JSON object, got {type(raw).__name__}")
    found = raw.get("schema_version")
    if found != version or isinstance(found, bool):
        raise SchemaVersionError(kind, found, version)
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise InvalidEvent(f"{kind} event does not match the schema: {exc}") from exc
