"""Final answers compared as answers, not as strings: normalising and voting.

Two samples "agree" when their normalised final answers are equal: the text
after a final-answer cue if there is one, the last number if the answer is
numeric, otherwise the first line, lowercased, without punctuation, articles or
surrounding whitespace. :class:`Vote` counts them and says when the outcome is
settled (Adaptive-Consistency: the leader cannot be caught by the samples still
running), so the rest can be stopped early.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

_CUE = re.compile(r"(?:final answer|answer)\s*(?:is)?\s*[:=]\s*", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")
_PUNCT = re.compile(r"[^\w\s-]")
_ARTICLES = re.compile(r"\b(?:the|a|an)\b")
_SPACE = re.compile(r"\s+")


def final_answer(text: str) -> str:
    """The part of ``text`` that is the answer (after the last answer cue, if any)."""
    cues = list(_CUE.finditer(text))
    return text[cues[-1].end():] if cues else text


def normalise(text: str) -> str:
    """The comparable form of an answer: its last number, or its first line's words."""
    answer = final_answer(text).strip()
    numbers = _NUMBER.findall(answer)
    if numbers and len(answer) <= 80:
        return numbers[-1].replace(",", "").rstrip(".")
    first = answer.splitlines()[0] if answer else ""
    words = _ARTICLES.sub(" ", _PUNCT.sub(" ", first.lower()))
    return _SPACE.sub(" ", words).strip()


@dataclass
class Vote:
    """A majority vote over ``expected`` samples, fed as they finish."""

    expected: int
    counts: Counter = field(default_factory=Counter)
    first_of: dict[str, int] = field(default_factory=dict)

    def add(self, index: int, text: str) -> None:
        key = normalise(text)
        self.counts[key] += 1
        self.first_of.setdefault(key, index)

    @property
    def seen(self) -> int:
        return sum(self.counts.values())

    @property
    def settled(self) -> bool:
        """No sample still running can change the winner."""
        if not self.counts:
            return False
        ranked = self.counts.most_common(2)
        lead = ranked[0][1] - (ranked[1][1] if len(ranked) > 1 else 0)
        return lead > self.expected - self.seen

    def winner(self) -> tuple[str, int]:
        """The winning normalised answer and the index of its first sample (ties: earliest)."""
        top = max(self.counts.values())
        key = min((k for k, c in self.counts.items() if c == top), key=self.first_of.get)
        return key, self.first_of[key]

    @property
    def margin(self) -> float:
        """The winner's share of the samples counted (1.0: unanimous)."""
        return max(self.counts.values()) / self.seen if self.seen else 0.0
