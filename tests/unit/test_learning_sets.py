"""The sets that measure learning stay honest: what the gate checks, what the learner anchors
on and what the benchmark holds out never overlap."""

from __future__ import annotations

import json
import re
from importlib import resources

from learner.anchors import _shipped, retain_prompts
from tests.support.learning import FACTS, GENERAL


def _regression_questions() -> set[str]:
    text = resources.files("loraloop").joinpath("data/regression/smollm2.jsonl").read_text()
    return {json.loads(line)["messages"][-1]["content"] for line in text.splitlines() if line}


def test_the_sets_are_disjoint():
    general = {k.question for k in GENERAL}
    regression = _regression_questions()
    anchors = set(retain_prompts())
    taught = {f.question for f in FACTS} | {p for f in FACTS for p in f.paraphrases}
    assert len(general) >= 30 and len(regression) >= 30
    assert not general & regression
    assert not anchors & (general | regression | taught)


def test_swapped_in_entities_name_nothing_the_benchmark_or_the_gate_asks_about():
    _, names, things = _shipped()
    asked = " ".join({k.question for k in GENERAL} | _regression_questions()).lower()
    clashes = [e for e in (*names, *things) if re.search(rf"\b{re.escape(e.lower())}\b", asked)]
    assert clashes == []


def test_made_up_facts_are_not_anchor_entities():
    _, names, things = _shipped()
    subjects = {w.lower() for f in FACTS for w in re.findall(r"[A-Z][a-z]+", f.question)}
    assert not subjects & {e.lower() for e in (*names, *things)}
