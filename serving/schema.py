"""The OpenAI chat-completions wire format: requests validated here, responses built here.

Validation errors name the parameter, the bad value and what is allowed, and
the ingress turns them into OpenAI-style 400 bodies.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.compute.spec import ComputeSpec
from serving.engines.base import Chunk, SamplingParams, TokenLogprob

ROLES = ("system", "user", "assistant", "developer", "tool")
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 256
MAX_N = 8
#: No model this serves has a longer context; the replica also caps at what is left of it.
MAX_TOKENS = 131_072


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str = Field(description="The message text (multi-part content is not supported).")
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's request that loraloop honours; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    user: str | None = Field(default=None, max_length=256)
    n: int = Field(default=1, ge=1, le=MAX_N)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    stream: bool = False
    stream_options: StreamOptions | None = None
    reasoning_effort: str | None = Field(
        default=None, max_length=32, description="OpenAI's effort level (none, low, medium, "
        "high): the tenant's configured test-time compute for it.")
    loraloop: ComputeSpec | None = Field(
        default=None, description="Exact test-time compute control (the `openai` client sends "
        "it with extra_body): strategy, n, aggregator, rounds, thinking budgets.")

    @field_validator("stop")
    @classmethod
    def _stop_sequences(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, "
                             f"got {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        longest = max((len(s) for s in stops), default=0)
        if longest > MAX_STOP_CHARS:
            raise ValueError(f"a stop sequence is at most {MAX_STOP_CHARS} characters, "
                             f"got one of {longest}")
        return stops

    def sampling(self, default_max_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stop or ()),
            seed=self.seed,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs or 0,
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _logprobs_body(entries: list[TokenLogprob]) -> dict:
    return {
        "content": [
            {
                "token": e.token,
                "logprob": e.logprob,
                "bytes": list(e.token.encode("utf-8")),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))} for t, lp in e.top
                ],
            }
            for e in entries
        ]
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _envelope(kind: str, interaction_id: str, model: str, choices: list, **extra) -> dict:
    """The fields every response body and stream chunk starts with."""
    return {
        "id": interaction_id,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        **extra,
    }


def completion_body(
    *,
    interaction_id: str,
    model: str,
    choices: list[tuple[str, str, list[TokenLogprob] | None]],
    prompt_tokens: int,
    completion_tokens: int,
    loraloop: dict | None = None,
    reasoning: str | None = None,
) -> dict:
    """A non-streamed response; ``choices`` are (text, finish_reason, logprobs or None).

    ``loraloop``: how the answer was produced (:func:`compute_summary`); ``reasoning``: the
    thinking of a reasoning budget, as the message's ``reasoning_content``.
    """
    bodies = [
        {
            "index": i,
            "message": {"role": "assistant", "content": text,
                        **({"reasoning_content": reasoning} if reasoning else {})},
            "finish_reason": finish,
            "logprobs": _logprobs_body(lps) if lps is not None else None,
        }
        for i, (text, finish, lps) in enumerate(choices)
    ]
    extra = {"loraloop": loraloop} if loraloop is not None else {}
    return _envelope(
        "chat.completion",
        interaction_id,
        model,
        bodies,
        usage=usage(prompt_tokens, completion_tokens),
        **extra,
    )


def compute_summary(record: dict | None, completion_tokens: int) -> dict:
    """The response's ``loraloop`` object from a ComputeRecord dict (None: a single answer)."""
    record = record or {}
    return {
        "strategy": record.get("strategy", "single"),
        "samples": record.get("samples", 1),
        "handed_off": record.get("handed_off", False),
        "upstream_model": record.get("upstream_model") if record.get("handed_off") else None,
        "compute_tokens": record.get("compute_tokens", completion_tokens),
        "decision": record.get("decision"),
        "fallback": record.get("fallback"),
    }


def compute_chunk_body(*, interaction_id: str, model: str, loraloop: dict,
                       reasoning: str | None = None) -> dict:
    """The streamed chunk that says how the answer was produced (no choices)."""
    extra = {"reasoning_content": reasoning} if reasoning else {}
    return _envelope("chat.completion.chunk", interaction_id, model, [], loraloop=loraloop,
                     **extra)


def chunk_body(
    *, interaction_id: str, model: str, index: int, chunk: Chunk | None, role: bool = False
) -> dict:
    """One streamed ``chat.completion.chunk`` for choice ``index``."""
    delta: dict = {"role": "assistant", "content": ""} if role else {}
    if chunk is not None and chunk.text:
        delta["content"] = chunk.text
    logprobs = chunk.logprobs if chunk is not None else None
    choice = {
        "index": index,
        "delta": delta,
        "finish_reason": chunk.finish_reason if chunk is not None else None,
        "logprobs": _logprobs_body(logprobs) if logprobs else None,
    }
    return _envelope("chat.completion.chunk", interaction_id, model, [choice])


def usage_chunk_body(
    *, interaction_id: str, model: str, prompt_tokens: int, completion_tokens: int
) -> dict:
    """The last streamed chunk when ``stream_options.include_usage`` is set: no choices."""
    usage_ = usage(prompt_tokens, completion_tokens)
    return _envelope("chat.completion.chunk", interaction_id, model, [], usage=usage_)


def error_body(
    message: str, *, type_: str, param: str | None = None, code: str | None = None
) -> dict:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
