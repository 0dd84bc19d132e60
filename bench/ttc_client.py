"""Chat requests with a test-time compute strategy, over a running stack's public HTTP API.

:func:`ask` sends one question with the request's ``loraloop`` object (``None``: a plain
answer) and reads back the answer, the compute it cost (``loraloop.compute_tokens``; for a
plain answer its completion tokens) and what the strategy did. :func:`ask_all` sends many
at a fixed concurrency, so the engine batches them as it would a real load; answers come
back in the order asked.

The response says what a strategy decided but not how confident ``adaptive`` was;
:func:`confidences` reads that from the interactions the stack logged (its Redis, as an
operator would), to explain a decision.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Reply:
    id: str
    text: str
    compute_tokens: int
    version: str
    seconds: float
    summary: dict = field(default_factory=dict)  #: the response's ``loraloop`` object

    @property
    def decision(self) -> str | None:
        return self.summary.get("decision")

    @property
    def handed_off(self) -> bool:
        return bool(self.summary.get("handed_off"))


@dataclass(frozen=True)
class Ask:
    question: str
    user: str
    model: str = "default"
    loraloop: dict | None = None
    seed: int | None = None
    max_tokens: int = 32


def ask(client, job: Ask) -> Reply:
    """One chat completion; raises on an HTTP error (a bench must not count it as wrong)."""
    body = {"model": job.model, "messages": [{"role": "user", "content": job.question}],
            "max_tokens": job.max_tokens, "temperature": 0, "user": job.user}
    if job.seed is not None:
        body["seed"] = job.seed
    if job.loraloop is not None:
        body["loraloop"] = job.loraloop
    started = time.monotonic()
    reply = client.http.post("/v1/chat/completions", json=body)
    if reply.status_code != 200:
        raise RuntimeError(f"{job.loraloop} on {job.question!r}: HTTP {reply.status_code} "
                           f"{reply.text[:500]}")
    answer = reply.json()
    summary = answer.get("loraloop") or {}
    tokens = summary.get("compute_tokens", answer["usage"]["completion_tokens"])
    return Reply(answer["id"], answer["choices"][0]["message"]["content"] or "", int(tokens),
                 reply.headers.get("x-adapter-version", ""), time.monotonic() - started,
                 summary)


def ask_all(client, jobs: list[Ask], concurrency: int) -> list[Reply]:
    """Every job, ``concurrency`` at a time; replies in the jobs' order."""
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(lambda job: ask(client, job), jobs))


def confidences(data_dir: Path, replies: list[Reply], *, timeout_s: float = 60) -> list[float]:
    """The confidence ``adaptive`` computed for each reply (from the logged interaction's
    ComputeRecord; logging is off the request path, so it waits for them)."""
    from feedback.connections import sync_client
    from feedback.events import Interaction
    from feedback.keys import RedisKeys
    from loraloop.stack_state import StackState

    state = StackState.load(data_dir)
    if state is None:
        raise RuntimeError(f"no running stack on {data_dir}")
    keys, client = RedisKeys(), sync_client(state.redis_url)
    found: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < len(replies) and time.monotonic() < deadline:
            for reply in replies:
                raw = None if reply.id in found else client.get(keys.interaction(reply.id))
                if raw is not None:
                    compute = Interaction.from_json(raw).compute
                    found[reply.id] = compute.confidence if compute else None
            time.sleep(0.2)
    finally:
        client.close()
    return [found.get(r.id) for r in replies]


def spread(values: list[float | None], threshold: float | None = None) -> dict:
    """min / median / mean / max of ``values`` (and how many are below ``threshold``)."""
    known = [v for v in values if v is not None]
    if not known:
        return {"known": 0}
    out = {"known": len(known), "min": round(min(known), 3),
           "median": round(statistics.median(known), 3),
           "mean": round(statistics.fmean(known), 3), "max": round(max(known), 3)}
    if threshold is not None:
        out["below_threshold"] = sum(v < threshold for v in known)
    return out
