"""Part A of ``bench/test_time_compute.py``: accuracy against compute, per strategy.

Every strategy answers every ``test`` task of the task set through a running stack's
HTTP API (the request's ``loraloop`` object picks it), greedy as a user asking for the
best answer would (``temperature`` 0: the strategies that sample draw at the sampler's
own temperature), with a seed per task so a rerun asks the same. Per strategy: accuracy
and the mean compute tokens per answer (``loraloop.compute_tokens``), each as a ratio to
``single`` on the same model in the same run.

Two blocks: the base model (``model: base``: single, best-of-n with a vote, refine, the
reasoning budget, adaptive) and the tenant's live adapter (``model: default``), where
the ``scorer`` aggregator has the implicit reward it needs, with single and a vote of
the same n on that adapter as its own baseline.
"""

from __future__ import annotations

import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ttc_client import Ask, Reply, ask, ask_all, confidences, spread
from ttc_tasks import Task


@dataclass(frozen=True)
class Strategy:
    name: str
    model: str  #: ``base`` or a tenant (its live adapter)
    loraloop: dict | None  #: None: a plain greedy answer

    @property
    def block(self) -> str:
        return "base" if self.model == "base" else "live"


def strategies() -> list[Strategy]:
    """What Part A compares (``adaptive`` on the stack's settings: see the report)."""
    bon = {"strategy": "best_of_n"}
    return [
        Strategy("single", "base", None),
        Strategy("best_of_n_4_vote", "base", {**bon, "n": 4, "aggregator": "vote"}),
        Strategy("best_of_n_8_vote", "base", {**bon, "n": 8, "aggregator": "vote"}),
        Strategy("refine_1", "base", {"strategy": "refine", "rounds": 1}),
        Strategy("budget_32_128", "base", {"strategy": "budget", "min_thinking_tokens": 32,
                                           "max_thinking_tokens": 128}),
        Strategy("adaptive", "base", {"strategy": "adaptive"}),
        Strategy("live_single", "default", None),
        Strategy("live_best_of_n_4_vote", "default", {**bon, "n": 4, "aggregator": "vote"}),
        Strategy("live_best_of_n_4_scorer", "default", {**bon, "n": 4, "aggregator": "scorer"}),
    ]


def seed_of(task: Task) -> int:
    return zlib.crc32(task.id.encode()) & 0x7FFFFFFF


def rated(client, jobs: list[Ask], tasks: list[Task], concurrency: int) -> list[Reply]:
    """Each job's reply, rated as its user would rate it: up when right, down when wrong
    (the thumbs ``adaptive``'s bandit learns which escalation pays from)."""
    def one(pair: tuple[Ask, Task]) -> Reply:
        job, task = pair
        reply = ask(client, job)
        feedback = client.http.post("/v1/feedback", json={
            "interaction_id": reply.id, "user": job.user,
            "rating": "up" if task.is_right(reply.text) else "down"})
        if feedback.status_code != 202:
            raise RuntimeError(f"feedback: HTTP {feedback.status_code} {feedback.text[:300]}")
        return reply

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(one, zip(jobs, tasks, strict=True)))


def warm_up(client, strategy: Strategy, tasks: list[Task], *, concurrency: int,
            max_tokens: int, passes: int) -> dict:
    """``passes`` rated passes over ``tasks`` (another split than the measured one), so the
    tenant's bandit has the thumbs a deployment's users would have given, and the
    threshold its calibration."""
    jobs = [Ask(t.question, user=f"bench-rater-{p}-{t.id}", model=strategy.model,
                loraloop=strategy.loraloop, seed=seed_of(t) + 1_000 * (p + 1),
                max_tokens=max_tokens) for p in range(passes) for t in tasks]
    replies = rated(client, jobs, tasks * passes, concurrency)
    return {"requests": len(replies),
            "right": sum(t.is_right(r.text) for t, r in zip(tasks * passes, replies,
                                                           strict=True)),
            "decisions": {d: [r.decision for r in replies].count(d)
                          for d in sorted({r.decision for r in replies if r.decision})}}


def run_strategy(client, strategy: Strategy, tasks: list[Task], *, concurrency: int,
                 max_tokens: int, warm_up_tasks: list[Task] | None = None,
                 passes: int = 3) -> dict:
    """One strategy on ``tasks``; ``adaptive`` after a rated warm-up on ``warm_up_tasks``,
    and rated as it answers (users keep rating; each rating comes after its answer)."""
    learns = bool(warm_up_tasks) and (strategy.loraloop or {}).get("strategy") == "adaptive"
    warmed = warm_up(client, strategy, warm_up_tasks, concurrency=concurrency,
                     max_tokens=max_tokens, passes=passes) if learns else None
    jobs = [Ask(t.question, user=f"bench-rater-{t.id}" if learns else "bench-ttc",
                model=strategy.model, loraloop=strategy.loraloop, seed=seed_of(t),
                max_tokens=max_tokens) for t in tasks]
    started = time.monotonic()
    replies: list[Reply] = rated(client, jobs, tasks, concurrency) if learns else \
        ask_all(client, jobs, concurrency)
    seconds = time.monotonic() - started
    right = [t.is_right(r.text) for t, r in zip(tasks, replies, strict=True)]
    count = lambda values: {v: values.count(v) for v in sorted(set(values), key=str)}  # noqa: E731
    row = {
        "strategy": strategy.name, "model": strategy.model, "request": strategy.loraloop,
        "n": len(tasks), "right": sum(right), "accuracy": round(sum(right) / len(tasks), 4),
        "mean_compute_tokens": round(sum(r.compute_tokens for r in replies) / len(tasks), 1),
        "seconds": round(seconds, 1),
        "fallbacks": count([r.summary.get("fallback") for r in replies
                            if r.summary.get("fallback")]),
        "decisions": count([r.decision for r in replies if r.decision]),
        "versions": sorted({r.version for r in replies}),
        "wrong": [t.id for t, ok in zip(tasks, right, strict=True) if not ok],
        "answers": {t.id: r.text.strip()[:80] for t, r in zip(tasks, replies, strict=True)},
    }
    if strategy.loraloop and strategy.loraloop.get("strategy") == "adaptive":
        row["confidence"] = spread(confidences(client.data_dir, replies))
    if warmed is not None:
        row["warm_up"] = warmed
    return row


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's accuracy and compute as ratios to ``single`` on the same model."""
    baseline = {r["model"]: r for r in rows if r["strategy"] in ("single", "live_single")}
    for row in rows:
        base = baseline[row["model"]]
        row["accuracy_ratio"] = round(row["accuracy"] / base["accuracy"], 3) \
            if base["accuracy"] else None
        row["accuracy_gain"] = round(row["accuracy"] - base["accuracy"], 4)
        row["compute_ratio"] = round(row["mean_compute_tokens"] / base["mean_compute_tokens"], 2)
    return rows


def adaptive_verdict(rows: list[dict]) -> dict:
    """Does adaptive reach the best fixed strategy's accuracy at no more than half its
    compute (on the base model)? The best fixed: most accurate, then cheapest."""
    base = [r for r in rows if r["model"] == "base"]
    adaptive = next(r for r in base if r["strategy"] == "adaptive")
    fixed = [r for r in base if r["strategy"] != "adaptive"]
    best = max(fixed, key=lambda r: (r["accuracy"], -r["mean_compute_tokens"]))
    compute_share = adaptive["mean_compute_tokens"] / best["mean_compute_tokens"]
    return {
        "best_fixed": best["strategy"], "best_fixed_accuracy": best["accuracy"],
        "best_fixed_compute_tokens": best["mean_compute_tokens"],
        "adaptive_accuracy": adaptive["accuracy"],
        "adaptive_compute_tokens": adaptive["mean_compute_tokens"],
        "accuracy_gap": round(adaptive["accuracy"] - best["accuracy"], 4),
        "compute_share_of_best": round(compute_share, 3),
        "met": adaptive["accuracy"] >= best["accuracy"] and compute_share <= 0.5,
    }


def part_a(client, tasks: list[Task], *, concurrency: int, max_tokens: int,
           only: list[str] | None = None, warm_up_tasks: list[Task] | None = None) -> dict:
    started = time.monotonic()
    rows = []
    for strategy in strategies():
        if only and strategy.name not in only and strategy.name not in ("single", "live_single"):
            continue
        rows.append(run_strategy(client, strategy, tasks, concurrency=concurrency,
                                 max_tokens=max_tokens, warm_up_tasks=warm_up_tasks))
        row = rows[-1]
        print(f"  A {row['strategy']:<26} {row['right']:>3}/{row['n']} right, "
              f"{row['mean_compute_tokens']:>6.1f} tokens/answer, {row['seconds']:.0f} s",
              flush=True)
    rows = with_ratios(rows)
    verdict = adaptive_verdict(rows) if any(r["strategy"] == "adaptive" for r in rows) else None
    return {"driven": "HTTP, a running `loraloop up` (running_stack)",
            "baseline": "single (greedy) on the same model, this run",
            "tasks": len(tasks), "max_tokens": max_tokens, "concurrency": concurrency,
            "rows": rows, "adaptive_vs_best_fixed": verdict,
            "seconds": round(time.monotonic() - started, 1)}
