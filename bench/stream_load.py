"""Streamed chat requests against an OpenAI-compatible server, timed as a user sees them.

What ``bench/vs_vllm_serve.py`` sends to each side alike: greedy requests with
``stream_options.include_usage``; time to first token is to the first non-empty content
delta (the whole request if none came), end to end is to ``[DONE]``, and output tokens
are the ones the server's ``usage`` reports.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    ttft_s: float
    e2e_s: float
    tokens: int
    prompt_tokens: int


async def stream_once(http, url: str, model: str, prompt: str, max_tokens: int, *,
                      user: str) -> Reply:
    """One greedy streamed chat request: its time to first content, to ``[DONE]``, and
    the tokens its ``usage`` reports."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, "user": user, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, usage = None, None
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:500]}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(f"{url} failed mid-stream: {chunk['error']}")
            usage = chunk.get("usage") or usage
            if first is None and any(c.get("delta", {}).get("content")
                                     for c in chunk.get("choices") or ()):
                first = time.perf_counter()
    end = time.perf_counter()
    if usage is None:
        raise RuntimeError(f"{url} sent no usage although include_usage was asked for")
    return Reply((first or end) - start, end - start, usage["completion_tokens"],
                 usage["prompt_tokens"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def cell(url: str, model: str, prompts: list[str], *, requests: int, concurrency: int,
               tokens: int, user: str) -> dict:
    """``requests`` streamed requests (``prompts`` in turn) with ``concurrency`` in flight:
    output tokens/s, time to first token and end to end (p50, p99, in ms)."""
    import httpx

    replies: list[Reply] = []
    numbers = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=900, limits=limits) as http:

        async def worker():
            for i in numbers:
                replies.append(await stream_once(http, url, model, prompts[i % len(prompts)],
                                                 tokens, user=user))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ttft = [r.ttft_s for r in replies]
    e2e = [r.e2e_s for r in replies]
    return {
        "tokens_per_s": sum(r.tokens for r in replies) / wall,
        "ttft_p50_ms": 1000 * statistics.median(ttft),
        "ttft_p99_ms": 1000 * percentile(ttft, 0.99),
        "e2e_p50_ms": 1000 * statistics.median(e2e),
        "e2e_p99_ms": 1000 * percentile(e2e, 0.99),
        "tokens_per_request": sum(r.tokens for r in replies) / len(replies),
        "prompt_tokens_per_request": sum(r.prompt_tokens for r in replies) / len(replies),
    }
