"""What one chat request produced so far: for the response body, metrics and the log.

The replica's events are taken in order: ``start`` (by the constructor),
``chunks`` (text of each choice) and, for a test-time compute strategy or a
handoff, ``compute`` (its :class:`~feedback.events.ComputeRecord` and the
thinking text of a reasoning budget).
"""

from __future__ import annotations

import time

from feedback.events import ComputeRecord, Interaction, hash_user
from serving.schema import completion_body, compute_summary

#: The interaction's ``mode`` for each strategy (the log's coarse label).
MODES = {"best_of_n": "best_of_n", "refine": "refined", "handoff": "handoff"}


class Answer:
    """What a request produced so far, for the response body, metrics and the log."""

    def __init__(self, interaction_id, request, route, start, started) -> None:
        self.id, self.request, self.route, self.started = interaction_id, request, route, started
        self.version = start["adapter_version"]
        self.prompt_tokens = start["prompt_tokens"]
        self.texts = [""] * request.n
        self.finish: list[str | None] = [None] * request.n
        self.logprobs = [[] if request.logprobs else None for _ in range(request.n)]
        self.completion_tokens = 0
        self.first_token_at: float | None = None
        self.abandoned = False
        self.strategy: str = start.get("strategy", "single")
        self.record: dict | None = None
        self.reasoning: str | None = None

    def take(self, event: dict) -> None:
        """One event of the replica's stream (``chunks`` or ``compute``)."""
        if event.get("type") == "compute":
            self.record = event["record"]
            self.reasoning = event.get("reasoning")
        else:
            self.add_all(event)

    def summary(self) -> dict:
        """The response's ``loraloop`` object."""
        return compute_summary(self.record, self.completion_tokens)

    def add_all(self, event: dict) -> None:
        for index, chunk in event["items"]:
            self.add(index, chunk)

    def add(self, index: int, chunk) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.texts[index] += chunk.text
        self.completion_tokens += len(chunk.token_ids)
        if chunk.finish_reason is not None:
            self.finish[index] = chunk.finish_reason
        if self.logprobs[index] is not None and chunk.logprobs:
            self.logprobs[index].extend(chunk.logprobs)

    def body(self) -> dict:
        return completion_body(
            interaction_id=self.id,
            model=self.request.model,
            choices=list(zip(self.texts, self.finish, self.logprobs, strict=True)),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            loraloop=self.summary(),
            reasoning=self.reasoning,
        )

    def interaction(self, elapsed_s: float) -> Interaction:
        request = self.request
        return Interaction(
            id=self.id,
            tenant=self.route.tenant,
            user=hash_user(request.user),
            model=request.model,
            adapter_version=self.version,
            messages=[m.model_dump(include={"role", "content"}) for m in request.messages],
            completions=self.texts,
            finish_reasons=self.finish,
            sampling=request.model_dump(
                include={
                    "temperature",
                    "top_p",
                    "max_tokens",
                    "max_completion_tokens",
                    "stop",
                    "seed",
                    "n",
                    "logprobs",
                    "top_logprobs",
                    "stream",
                }
            ),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_ms=elapsed_s * 1000.0,
            abandoned=self.abandoned,
            mode=MODES.get(self.strategy, "plain") if self.record is None or not
            self.record.get("handed_off") else "handoff",
            compute=ComputeRecord(**self.record) if self.record is not None else None,
        )
