"""The task set of ``bench/test_time_compute.py``: questions with answers a script can check.

Each line of ``bench/data/ttc_tasks.jsonl`` is one :class:`Task`: arithmetic ("What is
26 + 29? Answer with the number only.") or a simple fact ("Which planet is closest to
the Sun? Answer in a few words."), the way it is checked, a reference answer (the
training target of the scorer's adapter), how ``builtin:smollm2`` did on it when the set
was chosen (``bench/ttc_select.py``: its greedy answer and sampled answers at the
temperature strategies sample at) and its split: ``test`` items are measured, ``train``
items only teach the adapter whose implicit reward the ``scorer`` aggregator uses.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

TASKS_PATH = Path(__file__).resolve().parent / "data" / "ttc_tasks.jsonl"
_NUMBER = re.compile(r"-?\d+")
_ARITHMETIC = re.compile(r"What is (\d+) (\+|-|times) (\d+)\?")


@dataclass(frozen=True)
class Task:
    """One question and how to tell a right answer."""

    id: str
    kind: Literal["arithmetic", "fact"]
    question: str
    answer: str  #: a right answer, as a sentence (what the scorer's adapter is taught)
    pattern: str = ""  #: fact: ``re.search`` on the answer; arithmetic: the result
    split: Literal["test", "train"] = "test"
    base: dict = field(default_factory=dict, compare=False)  #: how the base model did

    def operands(self) -> tuple[int, ...]:
        found = _ARITHMETIC.search(self.question)
        return (int(found.group(1)), int(found.group(3))) if found else ()

    def is_right(self, text: str) -> bool:
        """Arithmetic: the first number the answer states that is not an operand is the
        result ("26 + 29 = 55" and "The answer is 55." are right, "The answer is 52. To
        calculate 26 + 29 ..." is not). Facts: the pattern occurs in the answer."""
        if self.kind == "fact":
            return re.search(self.pattern, text) is not None
        operands = set(self.operands())
        stated = [int(n) for n in _NUMBER.findall(text.replace(",", ""))]
        # "26 + 29 = 55": the operands, in the question's order, may be restated first.
        for number in stated:
            if number in operands:
                continue
            return number == int(self.pattern)
        return False

    def row(self) -> dict:
        return asdict(self)


def arithmetic(a: int, op: str, b: int) -> Task:
    result = {"+": a + b, "-": a - b, "times": a * b}[op]
    shown = {"+": "+", "-": "-", "times": "×"}[op]
    return Task(id=f"{a}{'plus' if op == '+' else 'minus' if op == '-' else 'times'}{b}",
                kind="arithmetic", question=f"What is {a} {op} {b}? Answer with the number only.",
                answer=f"{a} {shown} {b} = {result}", pattern=str(result))


def fact(id_: str, question: str, answer: str, pattern: str) -> Task:
    return Task(id=id_, kind="fact", question=f"{question} Answer in a few words.",
                answer=answer, pattern=pattern)


def load_tasks(path: Path = TASKS_PATH, split: str | None = None) -> list[Task]:
    """The tasks in ``path`` (all, or those of ``split``), in file order."""
    tasks = [Task(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return [t for t in tasks if split is None or t.split == split]


def write_tasks(tasks: list[Task], path: Path = TASKS_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(t.row()) + "\n" for t in tasks))
