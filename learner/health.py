"""How the learner's rounds are faring: failures counted, surfaced and backed off.

A step that raises (Redis or the registry unreachable, an artifact that cannot be
loaded, a training crash) leaves its feedback pending, so the next step runs the
same round again. :class:`StepHealth` makes that visible and bounded: it counts
consecutive and total failures, keeps the last error, and says how long to wait
before the next try (exponential backoff up to ``max_delay_s``). Its
:meth:`StepHealth.report` goes into the learner's status, which `loraloop learner
status` shows (and exits 1 on while failures continue).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Longest an error message kept in the status gets (a traceback is in the log).
ERROR_CHARS = 500


@dataclass
class StepHealth:
    """Consecutive and total step failures with exponential backoff."""

    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    consecutive: int = 0
    total: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    failing_since: float | None = None
    retry_in_s: float = 0.0

    def __post_init__(self) -> None:
        if self.base_delay_s <= 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError(
                f"backoff needs 0 < base_delay_s <= max_delay_s, got base_delay_s="
                f"{self.base_delay_s} and max_delay_s={self.max_delay_s}")

    def failed(self, exc: BaseException) -> float:
        """Record a failed step; returns the seconds to wait before the next one."""
        now = time.time()
        self.consecutive += 1
        self.total += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
        self.last_error_at = now
        if self.failing_since is None:
            self.failing_since = now
        self.retry_in_s = min(self.max_delay_s, self.base_delay_s * 2 ** (self.consecutive - 1))
        log.error("learner step failed (%d in a row, %d in all); next try in %.0f s: %s",
                  self.consecutive, self.total, self.retry_in_s, self.last_error,
                  exc_info=exc)
        return self.retry_in_s

    def succeeded(self) -> None:
        """A step went through: the failure streak (not the total) ends."""
        if self.consecutive:
            log.info("learner steps succeed again after %d failure(s)", self.consecutive)
        self.consecutive = 0
        self.failing_since = None
        self.retry_in_s = 0.0

    def report(self) -> dict:
        """The status fields: ``step_failures_total`` always (a counter), and ``failing``
        (consecutive failures, last error, since when, next try) while failures go on."""
        report: dict = {"step_failures_total": self.total, "last_error": self.last_error,
                        "last_error_at": self.last_error_at}
        report["failing"] = None if not self.consecutive else {
            "consecutive": self.consecutive,
            "since": self.failing_since,
            "last_error": self.last_error,
            "retry_in_s": self.retry_in_s,
        }
        return report
