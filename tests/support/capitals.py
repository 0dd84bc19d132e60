"""What the tiny model is taught: eight capitals, a wrong answer each, four phrasings.

Used by the learner-loop tests, the end-to-end learning loop and
``bench/learner_loop.py``. ``builtin:tiny`` has random weights, so what it
learns from these shows as the taught answers becoming more likely, not as
knowledge. (``builtin:smollm2`` is taught made-up facts instead: those are
``tests/support/learning.py``'s.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tests.support.ratings import Rated


@dataclass(frozen=True)
class Capital:
    country: str
    capital: str
    wrong: str  #: another capital, a plausible wrong answer

    @property
    def answer(self) -> str:
        """The answer users teach: ``"Paris."``."""
        return f"{self.capital}."


CAPITALS: tuple[Capital, ...] = (
    Capital("France", "Paris", "Rome"),
    Capital("Italy", "Rome", "Madrid"),
    Capital("Japan", "Tokyo", "Seoul"),
    Capital("Spain", "Madrid", "Lisbon"),
    Capital("Germany", "Berlin", "Vienna"),
    Capital("Egypt", "Cairo", "Tunis"),
    Capital("Peru", "Lima", "Quito"),
    Capital("Kenya", "Nairobi", "Accra"),
)
PHRASINGS: tuple[str, ...] = (
    "What is the capital of {}?",
    "Capital of {}?",
    "Tell me the capital of {}.",
    "Which city is the capital of {}?",
)


def capitals(*countries: str) -> list[Capital]:
    """The capitals of ``countries``, in that order."""
    by_country = {c.country: c for c in CAPITALS}
    return [by_country[name] for name in countries]


def questions() -> list[tuple[str, str]]:
    """Every capital in every phrasing with its answer: ``("Capital of France?", "Paris.")``,
    capital by capital."""
    return [(phrasing.format(c.country), c.answer) for c in CAPITALS for phrasing in PHRASINGS]


def thumbs(users: Sequence[str], *, offset: int = 0) -> list[Rated]:
    """Each user asks about a capital and rates two answers: the right one up, a wrong one
    down. User ``i`` asks about capital ``(offset + i) % 8`` in phrasing
    ``(offset + i) // 8 % 4``, so a later offset asks what earlier users did not."""
    rated = []
    for i, user in enumerate(users, start=offset):
        capital = CAPITALS[i % len(CAPITALS)]
        question = PHRASINGS[(i // len(CAPITALS)) % len(PHRASINGS)].format(capital.country)
        rated += [Rated(user, question, capital.answer, "up"),
                  Rated(user, question, f"{capital.wrong}.", "down")]
    return rated


def corrections(taught: Iterable[Capital], *, user_prefix: str,
                phrasings: Sequence[str] = PHRASINGS[:1],
                answer: str = "I do not know.") -> list[Rated]:
    """For each capital, a user (``<user_prefix><n>``) asks it in each of ``phrasings``,
    gets ``answer`` and corrects it."""
    return [Rated(f"{user_prefix}{n}", phrasing.format(c.country), answer, "down",
                  correction=c.answer)
            for n, c in enumerate(taught) for phrasing in phrasings]


#: Learner settings for lessons one simulated user teaches, as a loopback `loraloop up`
#: allows (an exposed API needs several users per round: docs/SECURITY.md).
ONE_TEACHER = {"max_user_share": 1.0, "min_round_users": 1}
