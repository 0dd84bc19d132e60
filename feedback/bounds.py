"""Bounds on what one interaction may store in Redis, applied by the sink at write.

A request can carry megabytes (a 1 MB ``stop`` string, thousands of messages)
and the interaction log keeps up to a million of them for days in a Redis
with a memory limit. So every stored text field is capped here, and each cut
is recorded in the interaction's ``truncated`` list (the learner and an
operator can tell a cut field from a short one). ``stop`` strings are also
redacted: they are user text like the messages. The test-time compute record
(``compute``) keeps at most ``max_candidates`` local candidates (and as many scores
and votes), each cut to ``max_candidate_chars``: a best-of-64 request must not store
64 answers, and a handed-off one copies its candidates into a distillation entry
(feedback.distill). ``compute.chosen`` keeps indexing the candidates as generated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from feedback.events import ComputeRecord, Interaction, Message


class StoredBounds(BaseModel):
    """Caps of the stored copy of an interaction (the served answer is never cut)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_messages: int = Field(64, ge=1, description="Messages kept: the first (often the "
                              "system prompt) and the last ones.")
    max_text_chars: int = Field(16_384, ge=1, description="Characters kept of each message "
                                "and each completion.")
    max_total_chars: int = Field(65_536, ge=1, description="Characters kept of all messages "
                                 "together: the oldest go first (a model's context holds "
                                 "less than this anyway).")
    max_stop: int = Field(4, ge=0, description="Stop strings kept (OpenAI allows 4).")
    max_stop_chars: int = Field(256, ge=1, description="Characters kept of each stop string.")
    max_candidates: int = Field(8, ge=0, description="Local candidate answers kept in the "
                                "compute record (the first ones), with their scores and at "
                                "most as many votes.")
    max_candidate_chars: int = Field(4_096, ge=1, description="Characters kept of each "
                                     "candidate answer and each vote's answer.")


def bound_interaction(interaction: Interaction, bounds: StoredBounds,
                      redact: Callable[[str], str] | None = None) -> Interaction:
    """A copy of ``interaction`` within ``bounds``, its stop strings redacted."""
    cut: list[str] = list(interaction.truncated)
    messages = interaction.messages
    if len(messages) > bounds.max_messages:
        keep = bounds.max_messages - 1
        messages = messages[:1] + (messages[-keep:] if keep else [])
        cut.append("messages")
    if any(len(m.content) > bounds.max_text_chars for m in messages):
        messages = [Message(role=m.role[:64], content=m.content[:bounds.max_text_chars],
                            name=m.name) for m in messages]
        cut.append("messages.content")
    total = sum(len(m.content) for m in messages)
    if total > bounds.max_total_chars:
        kept: list[Message] = []
        room = bounds.max_total_chars
        for m in reversed(messages):  # the newest turns matter most
            if room <= 0:
                break
            kept.append(m if len(m.content) <= room else
                        Message(role=m.role, content=m.content[-room:], name=m.name))
            room -= len(m.content)
        messages = kept[::-1]
        cut.append("messages")
    completions = interaction.completions
    if any(len(c) > bounds.max_text_chars for c in completions):
        completions = [c[:bounds.max_text_chars] for c in completions]
        cut.append("completions")
    sampling = dict(interaction.sampling)
    stop = sampling.get("stop")
    if stop is not None:
        sampling["stop"], stop_cut = _bound_stop(stop, bounds, redact)
        if stop_cut:
            cut.append("sampling.stop")
    compute = interaction.compute
    if compute is not None:
        compute, compute_cut = _bound_compute(compute, bounds)
        cut.extend(compute_cut)
    return interaction.model_copy(update={
        "messages": messages, "completions": completions, "sampling": sampling,
        "compute": compute, "truncated": list(dict.fromkeys(cut)),
    })


def _bound_compute(compute: ComputeRecord,
                   bounds: StoredBounds) -> tuple[ComputeRecord, list[str]]:
    """``compute`` within ``bounds``, and the names of what was cut."""
    keep, chars = bounds.max_candidates, bounds.max_candidate_chars
    cut: list[str] = []
    candidates = compute.candidates
    if len(candidates) > keep or any(len(c) > chars for c in candidates):
        candidates = [c[:chars] for c in candidates[:keep]]
        cut.append("compute.candidates")
    votes = compute.votes
    if len(votes) > keep or any(len(answer) > chars for answer in votes):
        top = sorted(votes.items(), key=lambda kv: -kv[1])[:keep]  # the most voted stay
        votes = {}
        for answer, count in top:
            votes[answer[:chars]] = votes.get(answer[:chars], 0) + count
        cut.append("compute.votes")
    scores = compute.scores[:keep]
    if len(scores) < len(compute.scores):
        cut.append("compute.scores")
    if not cut:
        return compute, cut
    return compute.model_copy(update={"candidates": candidates, "votes": votes,
                                      "scores": scores}), cut


def _bound_stop(stop: Any, bounds: StoredBounds,
                redact: Callable[[str], str] | None) -> tuple[list[str], bool]:
    strings = [stop] if isinstance(stop, str) else [str(s) for s in stop]
    kept = [s[:bounds.max_stop_chars] for s in strings[:bounds.max_stop]]
    cut = len(kept) < len(strings) or any(len(s) > bounds.max_stop_chars for s in strings)
    if redact is not None:
        kept = [redact(s) for s in kept]
    return kept, cut
