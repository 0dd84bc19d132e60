"""Anchors: prompts on which a round must keep answering as the base model does.

Fine-tuning a small model on a few corrections teaches the *relation* as much
as the fact: after "What is the currency of Pellandia? -> the marlet" the
model also says the marlet is Japan's currency. Knowledge-editing work (ROME,
MEMIT) measures this on *neighbourhood* prompts and prevents it with a KL term
that keeps the model's answers there unchanged. A round does the same:

* **neighbours** — each taught prompt with its subject swapped for other
  entities (:func:`neighbour_prompts`): "What is the currency of Ghana?". The
  subject is the prompt's capitalised span that does not start it (a name), or
  else its rarest-looking word (the one the tokenizer splits into most pieces);
* **retain prompts** — a shipped list of everyday questions and instructions
  (``learner/data/anchor_prompts.txt``), a random few per round.

The base model answers each anchor greedily once (:func:`answer`); training
then adds ``KL(base || model)`` over those answer tokens
(:mod:`learner.objective`). Anchors carry the base model's own answers, right or
wrong: they preserve behaviour, they do not teach. They never include the
gate's regression set or anything users sent.
"""

from __future__ import annotations

import json
import random
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

#: Words that never name a prompt's subject.
_STOPWORDS = frozenset(" ".join((
    "a an the of in on at to for from by with about as is are was were be been what which who",
    "whom whose where when why how does do did can could would should will shall may might",
    "name tell give me my your you i it its this that these those and or not please",
)).split(" "))
_NAME = re.compile(r"(?<=\s)[A-Z][\w'-]*(?:\s+(?:of\s+|the\s+)?[A-Z][\w'-]*)*")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")


@dataclass(frozen=True)
class Anchor:
    """A chat prompt and the base model's greedy answer to it (token ids, no padding)."""

    prompt: list[dict[str, str]]
    prompt_ids: list[int]
    answer_ids: list[int]


@cache
def _shipped() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    data = resources.files("learner").joinpath("data")
    prompts = tuple(line.strip() for line in data.joinpath("anchor_prompts.txt")
                    .read_text("utf-8").splitlines() if line.strip() and not line.startswith("#"))
    entities = json.loads(data.joinpath("anchor_entities.json").read_text("utf-8"))
    return prompts, tuple(entities["names"]), tuple(entities["things"])


def retain_prompts() -> tuple[str, ...]:
    """The shipped everyday prompts (one user message each)."""
    return _shipped()[0]


def subject_of(text: str, tokenizer: Any = None) -> tuple[str, bool] | None:
    """The span of ``text`` that names its subject, and whether it is a proper name.

    A capitalised span not at the start ("Veltrania", "The Glass Orchard") is a
    name. Failing that, the content word the tokenizer splits into the most
    pieces (3 or more: a rare word such as "glimmerphone"); ``None`` if there
    is neither.
    """
    for match in _NAME.finditer(text):
        span = match.group(0)
        if span.lower() not in _STOPWORDS:
            return span, True
    if tokenizer is None:
        return None
    words = [w for w in _WORD.findall(text) if w.lower() not in _STOPWORDS]
    pieces = [(len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]), w) for w in words]
    best = max(pieces, default=(0, ""))
    return (best[1], False) if best[0] >= 3 else None


def neighbour_prompts(text: str, k: int, *, tokenizer: Any = None, seed: int = 0) -> list[str]:
    """Up to ``k`` copies of ``text`` with its subject replaced by other shipped entities."""
    found = subject_of(text, tokenizer)
    if found is None or k <= 0:
        return []
    span, is_name = found
    _, names, things = _shipped()
    pool = [e for e in (names if is_name else things) if e.lower() != span.lower()]
    picked = random.Random(f"{seed}:{text}").sample(pool, min(k, len(pool)))
    return [text.replace(span, entity, 1) for entity in picked]


def anchor_prompts(taught: Sequence[Sequence[dict[str, str]]], *, per_prompt: int,
                   retain: int, tokenizer: Any = None, seed: int = 0) -> list[list[dict]]:
    """The chats a round anchors: neighbours of each taught chat, then ``retain`` shipped ones.

    A neighbour keeps the taught chat's earlier messages and swaps the subject of
    its last user message. Duplicates, and anything equal to a taught prompt,
    are left out.
    """
    seen = {_key(messages) for messages in taught}
    chats: list[list[dict]] = []

    def add(messages: list[dict]) -> None:
        if _key(messages) not in seen:
            seen.add(_key(messages))
            chats.append(messages)

    for messages in taught:
        last = messages[-1]
        if last.get("role") != "user":
            continue
        for text in neighbour_prompts(last["content"], per_prompt, tokenizer=tokenizer,
                                      seed=seed):
            add([*messages[:-1], {"role": "user", "content": text}])
    pool = list(retain_prompts())
    random.Random(f"retain:{seed}").shuffle(pool)
    for text in pool[:retain]:
        add([{"role": "user", "content": text}])
    return chats


#: The base model's answers do not change: a learner process answers each anchor once.
_ANSWERED: OrderedDict[tuple[str, int, str], Anchor] = OrderedDict()
_ANSWERED_MAX = 8192


def forget_answers() -> None:
    """Drop the remembered answers (they depend on how they were batched, in the last bits)."""
    _ANSWERED.clear()


def answer(model: Any, tokenizer: Any, chats: Sequence[list[dict]], *,
           max_new_tokens: int, batch_size: int = 16) -> list[Anchor]:
    """The base model's greedy answers to ``chats`` (call it with adapters disabled).

    Answers are remembered per model and chat, so carried and retained prompts are
    answered once per learner process, not once per round.
    """
    from learner.scoring import greedy_generate_ids, prompt_text

    name = str(getattr(model.config, "_name_or_path", ""))
    keys = [(name, max_new_tokens, _key(c)) for c in chats]
    missing = [c for c, k in zip(chats, keys, strict=True) if k not in _ANSWERED]
    for i in range(0, len(missing), batch_size):
        batch = missing[i:i + batch_size]
        prompts = [tokenizer(prompt_text(tokenizer, c), add_special_tokens=False)["input_ids"]
                   for c in batch]
        answers = greedy_generate_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
        for chat, prompt, ids in zip(batch, prompts, answers, strict=True):
            _ANSWERED[(name, max_new_tokens, _key(chat))] = Anchor(list(chat), prompt, ids)
    while len(_ANSWERED) > _ANSWERED_MAX:
        _ANSWERED.popitem(last=False)
    found = [_ANSWERED.get(k) for k in keys]
    return [a for a in found if a is not None and a.answer_ids]


def _key(messages: Sequence[dict[str, str]]) -> str:
    return json.dumps([[m.get("role"), m.get("content")] for m in messages])
