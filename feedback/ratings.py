"""Reading ratings back from the feedback stream for a time window (the canary controller)."""

from __future__ import annotations

import logging

import redis

from feedback.connections import field, stream_id
from feedback.distill import is_distill
from feedback.errors import InvalidEvent
from feedback.events import Feedback
from feedback.keys import RedisKeys

logger = logging.getLogger(__name__)


def feedback_since(
    client: redis.Redis, keys: RedisKeys, since_ms: int, *, page: int = 1000
) -> list[Feedback]:
    """Feedback events recorded at or after ``since_ms`` (unix ms), oldest first.

    Stream ids start with their time in ms, so this is a range read; malformed
    entries are skipped (the learner's reader dead-letters them), and so are the
    distillation entries of handed-off answers (they rate nothing).
    """
    events: list[Feedback] = []
    start = f"{max(0, since_ms)}-0"
    while True:
        entries = client.xrange(keys.feedback_stream, min=start, max="+", count=page)
        for entry_id, fields in entries:
            if is_distill(fields):
                continue
            raw = field(fields, "event")
            try:
                events.append(Feedback.from_json(raw))
            except (InvalidEvent, TypeError):
                logger.debug("skipping malformed feedback entry %s", entry_id)
        if len(entries) < page:
            return events
        ms, seq = stream_id(entries[-1][0])
        start = f"{ms}-{seq + 1}"
