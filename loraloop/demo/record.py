"""What the demo saw, in order: measurements of each version, every rating, each round.

The live view and the learning curve are drawn from a :class:`Record`, and
``summary()`` is what ``demo-summary.json`` holds (and what the CI test asserts on).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Plan:
    """How long a story the demo tells."""

    name: str
    facts: int  #: made-up facts the users teach (of loraloop.demo.sets.FACTS)
    general: int  #: general questions measured (of GENERAL): what must not be forgotten
    correctors: int  #: users per fact per wave who hit a wrong answer and correct it
    max_waves: int  #: waves of corrections before the demo gives up
    chat_every_s: float  #: pace of the users who keep chatting between waves
    chat_rate_share: float = 0.3  #: share of their answers they rate (or correct)
    target: float = 0.8  #: accuracy on the taught facts the demo aims for
    max_general_lost: int = 1
    round_timeout_s: float = 2400  #: a round on a busy 2-core machine took 15 min


# The story ends as soon as the target is reached (three waves on an idle machine); the cap
# matters when rounds come out small: on a busy machine a round can start mid-wave and be
# rejected for too few examples, and the users' next waves give the learner the rest.
QUICK = Plan("quick", facts=5, general=12, correctors=2, max_waves=5, chat_every_s=6.0)
FULL = Plan("full", facts=10, general=39, correctors=2, max_waves=6, chat_every_s=3.0)


@dataclass
class Measurement:
    at: float
    taught: list[bool]
    general: list[bool]

    @property
    def taught_accuracy(self) -> float:
        return sum(self.taught) / len(self.taught)

    @property
    def general_accuracy(self) -> float:
        return sum(self.general) / len(self.general)


@dataclass
class Record:
    plan: Plan
    started_at: float = field(default_factory=time.time)
    measured: dict[str, Measurement] = field(default_factory=dict)  #: version -> accuracy
    ratings: list[tuple[float, str, bool]] = field(default_factory=list)  #: (at, version, up)
    requests: Counter = field(default_factory=Counter)  #: version -> answers the users got
    rounds: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)  #: version -> registry status
    audit: list[dict[str, Any]] = field(default_factory=list)
    phase: str = "starting"
    learner: str = ""  #: the learner's own words on what it is doing
    last_feedback_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- written by the users and the story ----------------------------------------------
    def answered(self, version: str) -> None:
        with self._lock:
            self.requests[version] += 1

    def rated(self, version: str, up: bool) -> None:
        with self._lock:
            now = time.time()
            self.ratings.append((now, version, up))
            self.last_feedback_at = now

    def measure(self, version: str, taught: list[bool], general: list[bool]) -> Measurement:
        found = Measurement(time.time(), taught, general)
        self.measured[version] = found
        return found

    # -- read by the view, the curve and the summary ------------------------------------
    def up_rate(self, version: str | None = None) -> tuple[float | None, int]:
        """Thumbs-up share of the ratings of ``version`` (all versions: None), and how many."""
        with self._lock:
            votes = [up for _, v, up in self.ratings if version in (None, v)]
        return (sum(votes) / len(votes) if votes else None), len(votes)

    def elapsed(self, at: float | None = None) -> float:
        return (at or time.time()) - self.started_at

    def events(self) -> list[dict[str, Any]]:
        """Canaries, promotions and rollbacks from the audit trail, as seconds into the demo."""
        marks = {"canary": "canary", "promote": "promoted", "rollback": "rolled back"}
        found = []
        for entry in self.audit:
            action = entry.get("action", "")
            if action == "canary_stop" and entry.get("to_status") == "rolled_back":
                action = "rollback"  # a canary the controller (or an operator) rolled back
            label = marks.get(action)
            if label is None or entry.get("outcome") != "ok":
                continue
            if action == "promote" and entry.get("to_status") not in (None, "live"):
                continue  # the row of the version a promotion displaced
            at = datetime.fromisoformat(entry["at"]).timestamp()
            found.append({"t": round(self.elapsed(at), 1), "label": label,
                          "version": entry.get("version_id") or entry.get("to_version"),
                          "actor": entry.get("actor")})
        return sorted(found, key=lambda e: e["t"])

    def reached(self, version: str) -> bool:
        """Whether ``version`` answers the taught facts well enough and kept the general set."""
        found, base = self.measured.get(version), self.measured.get("base")
        return (found is not None and base is not None
                and found.taught_accuracy >= self.plan.target
                and len(self.general_lost(version)) <= self.plan.max_general_lost)

    def general_lost(self, version: str) -> list[int]:
        base, found = self.measured["base"], self.measured[version]
        return [i for i, (b, a) in enumerate(zip(base.general, found.general, strict=True))
                if b and not a]

    def final_version(self) -> str:
        return max(self.measured, key=lambda v: self.measured[v].at)

    def summary(self) -> dict[str, Any]:
        final = self.final_version()
        versions = []
        for version, found in self.measured.items():
            rate, votes = self.up_rate(version)
            to_live = next((r.get("feedback_to_live_s") for r in self.rounds
                            if r.get("version") == version), None)
            versions.append({
                "version": version, "status": self.statuses.get(version, "base"),
                "taught_accuracy": round(found.taught_accuracy, 3),
                "general_accuracy": round(found.general_accuracy, 3),
                "measured_at_s": round(self.elapsed(found.at), 1),
                "thumbs_up_rate": None if rate is None else round(rate, 3), "ratings": votes,
                "requests": self.requests[version], "feedback_to_live_s": to_live})
        return {
            "plan": self.plan.name, "duration_s": round(self.elapsed(), 1),
            "target": self.plan.target, "reached": self.reached(final),
            "base": self._accuracy("base"), "final": {"version": final, **self._accuracy(final)},
            "general_lost": len(self.general_lost(final)),
            "versions": versions, "rounds": self.rounds, "events": self.events(),
            "requests": sum(self.requests.values()), "ratings": len(self.ratings),
        }

    def _accuracy(self, version: str) -> dict[str, float]:
        found = self.measured[version]
        return {"taught_accuracy": round(found.taught_accuracy, 3),
                "general_accuracy": round(found.general_accuracy, 3)}
