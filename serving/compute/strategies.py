"""The fixed strategies: best-of-n (vote, scorer, judge), refine, and the reasoning budget.

Each takes a :class:`~serving.compute.sampler.Sampler` and the request's
messages and returns an :class:`Outcome`: the answer to serve and what it cost.
Candidates are never ranked by raw log-probability (it tracks quality poorly):
``vote`` counts normalised answers, ``scorer`` uses the live adapter's implicit
reward against the base model, ``judge`` asks the model itself.

The reasoning budget follows s1's budget forcing: the assistant turn opens a
thinking section; when the model closes it before ``min_thinking_tokens`` the
close is replaced by the wait word and it goes on thinking; at
``max_thinking_tokens`` the close marker and a final-answer cue are appended
(never a raw cut), and the answer follows. Each continuation re-tokenizes the
text so far rather than feeding ids back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from serving.compute.answers import Vote, normalise
from serving.compute.sampler import Sample, Sampler
from serving.compute.spec import ComputeConfig, Plan

JUDGE_PROMPT = (
    "Here is a question and {count} candidate answers.\n\nQuestion: {question}\n\n"
    "{listing}\n\nWhich candidate answers the question correctly? "
    "Reply with the candidate's number only."
)
CRITIQUE_PROMPT = (
    "Check your answer above for mistakes. If it is correct and complete, reply with the "
    "single word CORRECT. Otherwise say briefly what is wrong."
)
REVISE_PROMPT = "Here is a review of your answer:\n{critique}\n\nWrite the corrected answer only."
THINK_HINT = "Think step by step inside {open} ... {close}, then give the final answer."


@dataclass
class Outcome:
    """The answer a strategy chose, and the record of what it did."""

    answer: Sample
    record: dict[str, Any] = field(default_factory=dict)
    reasoning: str | None = None


def _question(messages: list[dict[str, str]]) -> str:
    users = [m["content"] for m in messages if m.get("role") == "user"]
    return users[-1] if users else messages[-1]["content"]


async def best_of_n(sampler: Sampler, messages: list[dict[str, str]], plan: Plan,
                    **overrides) -> Outcome:
    """``plan.n`` samples of one prompt, aggregated by ``plan.aggregator``."""
    vote = Vote(plan.n)
    early = plan.aggregator == "vote"

    def counted(index: int, sample: Sample) -> bool:
        vote.add(index, sample.text)
        return early and vote.settled

    found = await sampler.run(messages, n=plan.n, on_finish=counted, **overrides)
    candidates = [s for s in found if s is not None]
    record: dict[str, Any] = {"samples": len(candidates), "votes": dict(vote.counts),
                              "candidates": [c.text for c in candidates]}
    winner_key, _ = vote.winner()
    chosen = next(i for i, c in enumerate(candidates) if normalise(c.text) == winner_key)
    if plan.aggregator == "scorer":
        if sampler.adapter is None:
            record["fallback"] = "scorer_needs_adapter"
        else:
            scores = [await sampler.reward(messages, c) for c in candidates]
            record["scores"] = scores
            chosen = max(range(len(candidates)), key=lambda i: (scores[i], -i))
    elif plan.aggregator == "judge":
        picked = await _judge(sampler, messages, candidates)
        if picked is None:
            record["fallback"] = "judge_unparsed"
        else:
            chosen = picked
            record["scores"] = [1.0 if i == picked else 0.0 for i in range(len(candidates))]
    record["chosen"] = chosen
    return Outcome(candidates[chosen], record)


async def _judge(sampler: Sampler, messages: list[dict[str, str]],
                 candidates: list[Sample]) -> int | None:
    listing = "\n".join(f"Candidate {i + 1}: {c.text.strip()}" for i, c in enumerate(candidates))
    prompt = JUDGE_PROMPT.format(count=len(candidates), question=_question(messages),
                                 listing=listing)
    verdict = await sampler.one([{"role": "user", "content": prompt}], max_tokens=8,
                                temperature=0.0, stop=())
    found = re.search(r"\d+", verdict.text)
    if found is None or not 1 <= int(found.group()) <= len(candidates):
        return None
    return int(found.group()) - 1


async def refine(sampler: Sampler, messages: list[dict[str, str]], plan: Plan,
                 **overrides) -> Outcome:
    """Answer, then up to ``plan.rounds`` times: critique it, and revise unless it is correct."""
    answer = await sampler.one(messages, **overrides)
    drafts = [answer.text]
    for _ in range(plan.rounds):
        shown = [*messages, {"role": "assistant", "content": answer.text}]
        critique = await sampler.one([*shown, {"role": "user", "content": CRITIQUE_PROMPT}],
                                     max_tokens=96, temperature=0.0, stop=())
        if "CORRECT" in critique.text.upper()[:40]:
            break
        revision = REVISE_PROMPT.format(critique=critique.text.strip())
        answer = await sampler.one([*shown, {"role": "user", "content": revision}], **overrides)
        drafts.append(answer.text)
    return Outcome(answer, {"samples": len(drafts), "candidates": drafts,
                            "chosen": len(drafts) - 1})


async def budget(sampler: Sampler, messages: list[dict[str, str]], plan: Plan,
                 config: ComputeConfig, **overrides) -> Outcome:
    """Think between the markers for ``min..max`` thinking tokens, then answer."""
    hint = THINK_HINT.format(open=config.think_open, close=config.think_close)
    prompt = [{"role": "system", "content": hint}, *messages] if messages[0]["role"] != "system" \
        else [{"role": "system", "content": messages[0]["content"] + "\n" + hint}, *messages[1:]]
    opening = config.think_open + "\n"
    thinking, spent, waits = "", 0, 0
    while True:
        left = plan.max_thinking_tokens - spent
        part = await sampler.one(prompt, prefix=opening + thinking, max_tokens=max(left, 1),
                                 stop=(config.think_close,), temperature=overrides.get(
                                     "temperature", sampler.sampling.temperature))
        thinking += part.text
        spent += len(part.token_ids)
        ended = part.finish == "stop"  # closed the section (or ended the turn) itself
        if spent >= plan.max_thinking_tokens or not ended:
            break  # the maximum: cut here, close the section properly below
        if spent >= plan.min_thinking_tokens or waits >= config.max_waits:
            break
        wait = f"\n{config.wait_word}"
        thinking = thinking.rstrip() + wait
        spent += len(sampler.engine.encode_text(wait))
        waits += 1
    closed = opening + thinking.rstrip() + f"\n{config.think_close}{config.answer_cue}"
    answer = await sampler.one(prompt, prefix=closed, **overrides)
    record = {"samples": 1, "thinking_tokens": spent, "candidates": [answer.text],
              "chosen": 0}
    return Outcome(answer, record, reasoning=thinking.strip())
