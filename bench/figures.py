"""The headline figures of each bench's JSON result, each next to its baseline.

:func:`figures` turns one script's result (what it printed with ``--json``) into
:class:`Figure` rows: a value, the baseline it is compared with (measured in the same
run, or the bound it is held to), their ratio ``value ÷ baseline`` and, for a latency,
its p50 and p99. One function per bench in ``EXTRACTORS``; a bench without one gets
every ratio its JSON names (keys with ``ratio`` or ``_over_``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass
class Figure:
    """One row of the report's table."""

    bench: str
    name: str
    value: float | None
    unit: str = ""
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None  # value ÷ baseline
    p50: float | None = None
    p99: float | None = None

    def __post_init__(self) -> None:
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = float(f"{self.value / self.baseline:.4g}")

    def as_dict(self) -> dict:
        return asdict(self)


def _detokenize(r: dict) -> list[Figure]:
    return [Figure("detokenize", f"incremental detokenize, {n} tokens",
                   row["incremental_us_per_token"], "µs/token",
                   row["full_redecode_us_per_token"], "full re-decode")
            for n, row in r["tokens"].items()]


def _feedback_ops(r: dict) -> list[Figure]:
    rows = [Figure("feedback_ops", "log submit, Redis down", r["submit_us"].get("redis_down"),
                   "µs", r["submit_us"]["redis_up"], "Redis up")]
    # The bounds the clients are configured with: the socket timeout (0.3 s) for a store
    # call, the close timeout (0.5 s) for the sink.
    for case, ms in r.get("store_fail_ms", {}).items():
        rows.append(Figure("feedback_ops", f"store says unavailable, {case}", ms,
                           "ms", 300.0, "socket timeout"))
    if "close_down_s" in r:
        rows.append(Figure("feedback_ops", "sink close, Redis down", r["close_down_s"], "s",
                           0.5, "close timeout"))
    if "wake_ms" in r:
        rows.append(Figure("feedback_ops", "stream wake-up (XADD to read)", r["wake_ms"], "ms"))
    return rows


def _engine_throughput(r: dict) -> list[Figure]:
    n = r["concurrency"]
    return [
        Figure("engine_throughput", f"{r['engine']} tokens/s, c{n}", r[f"tokens_per_s_c{n}"],
               "tokens/s", r["tokens_per_s_c1"], "c1"),
        Figure("engine_throughput", f"{r['engine']} tokens/s with an adapter, c{n}",
               r[f"tokens_per_s_adapter_c{n}"], "tokens/s", r[f"tokens_per_s_c{n}"], "base"),
    ]


def _compare_engines(r: dict) -> list[Figure]:
    runs = r["runs"]
    first, *others = list(runs)
    rows = []
    for other in others:
        for key in runs[other]:
            if key.startswith("tokens_per_s") and "adapter" not in key:
                rows.append(Figure("compare_engines",
                                   f"{other} tokens/s, {key.rpartition('_')[2]}",
                                   runs[other][key], "tokens/s", runs[first][key], first))
    for name, run in runs.items():
        adapter = next(k for k in run if k.startswith("tokens_per_s_adapter"))
        base = adapter.replace("adapter_", "")
        rows.append(Figure("compare_engines", f"{name} with an adapter, {base[-3:].strip('_')}",
                           run[adapter], "tokens/s", run[base], "base"))
    return rows


def _serving_latency(r: dict) -> list[Figure]:
    rows = []
    for c in ("1", "8"):
        d, on, off = (r[k].get(c) or r[k].get(int(c)) for k in
                      ("direct", "logging_on", "logging_off"))
        for stat in ("p50", "p99"):
            rows.append(Figure("serving_latency", f"full stack {stat}, c{c}", on[f"{stat}_ms"],
                               "ms", d[f"{stat}_ms"], "engine direct",
                               p50=on["p50_ms"], p99=on["p99_ms"]))
        rows.append(Figure("serving_latency", f"requests/s with logging, c{c}",
                           on["requests_per_s"], "req/s", off["requests_per_s"], "logging off"))
        hop = r.get("one_hop", {}).get(c) or r.get("one_hop", {}).get(int(c))
        if hop:  # results from before the one-hop topology have none
            rows.append(Figure("serving_latency", f"one hop p50, c{c}", hop["p50_ms"], "ms",
                               on["p50_ms"], "split", p50=hop["p50_ms"], p99=hop["p99_ms"]))
    return rows


def _feedback_throughput(r: dict) -> list[Figure]:
    d, s = r["default"], r["strict"]
    return [
        Figure("feedback_throughput", f"strict durability posts/s, c{r['concurrency']}",
               s["posts_per_s"], "posts/s", d["posts_per_s"], "default (everysec)"),
        Figure("feedback_throughput", "strict durability post latency p99", s["p99_ms"], "ms",
               d["p99_ms"], "default (everysec)", p50=s["p50_ms"], p99=s["p99_ms"]),
    ]


def _swap_latency(r: dict) -> list[Figure]:
    return [
        Figure("swap_latency", "chat p99 while swapping", r["swapping_p99_ms"], "ms",
               r["steady_p99_ms"], "steady", p99=r["swapping_p99_ms"]),
        Figure("swap_latency", "swap load (fetch, check, load), median",
               r["swap_load_s_median"], "s", r["copy_bytes_s_median"], "copying the bytes"),
        Figure("swap_latency", "promote to all replicas, median",
               r["promote_to_all_replicas_s"]["median"], "s", r["swap_load_s_median"],
               "one swap load"),
    ]


def _learner_loop(r: dict) -> list[Figure]:
    return [
        Figure("learner_loop", "learner round tokens/s", r["learner_tokens_per_s"], "tokens/s",
               r["bare_loop_tokens_per_s"], "bare training loop"),
        Figure("learner_loop", "feedback to live", r["feedback_to_live_s"], "s",
               r["bare_train_s"], "bare training"),
        Figure("learner_loop", "serving p99 while training", r["serving_p99_training_ms"],
               "ms", r["serving_p99_idle_ms"], "idle", p99=r["serving_p99_training_ms"]),
    ]


def _abuse(r: dict) -> list[Figure]:
    rows = []
    if "flood" in r:
        f = r["flood"]
        rows.append(Figure("abuse", "chat p99 under a flood (one address)", f["flood_p99_ms"],
                           "ms", f["idle_p99_ms"], "idle", p99=f["flood_p99_ms"]))
        if "many_addresses_flood_p99_ms" in f:
            rows.append(Figure("abuse", f"chat p99 under a flood ({f['attacker_addresses']} "
                               "addresses)", f["many_addresses_flood_p99_ms"], "ms",
                               f["idle_p99_ms"], "idle", p99=f["many_addresses_flood_p99_ms"]))
        if "neighbour_flood_p99_ms" in f:  # the same flood on another server of the machine
            rows.append(Figure("abuse", "chat p99, a neighbouring server flooded",
                               f["neighbour_flood_p99_ms"], "ms", f["idle_p99_ms"], "idle",
                               p99=f["neighbour_flood_p99_ms"]))
    if "sybil" in r:
        s = r["sybil"]
        one = s.get("one_identity_with_honest", {}).get("attacker_share")
        rows.append(Figure("abuse", "invented users' largest share of a round",
                           s.get("largest_share_invented_users"), "share", one,
                           "one identity (auth on)"))
    if "durability" in r:
        d = r["durability"]
        rows.append(Figure("abuse", "feedback on disk after a Redis kill",
                           d["accepted_on_disk"], "posts", d["accepted"], "accepted (202)"))
    return rows


def _learning_efficacy(r: dict) -> list[Figure]:
    base, final = r["base"], r.get("final")
    if not final:  # what the base model answered, and the rounds' outcomes
        outcomes = ", ".join(str(x.get("outcome", "live")) for x in r["rounds"]) or "none"
        return [Figure("learning_efficacy", f"{what} accuracy, base model (no round went "
                       f"live: {outcomes})", base[what], "share")
                for what in ("taught", "paraphrases", "general")]
    rows = [Figure("learning_efficacy", f"{what} accuracy after learning", final[what],
                   "share", base[what], "base model")
            for what in ("taught", "paraphrases", "general")]
    rows.append(Figure("learning_efficacy", "feedback to live (last round)",
                       final["feedback_to_live_s"], "s"))
    return rows


def _test_time_compute(r: dict) -> list[Figure]:
    rows = []
    a = r.get("part_a") or {}
    for row in a.get("rows", []):
        if row["strategy"] in ("single", "live_single"):
            continue
        label = f"{row['strategy']} ({row['model']})"
        base_acc = row["accuracy"] / row["accuracy_ratio"] if row.get("accuracy_ratio") else None
        rows.append(Figure("test_time_compute", f"{label} accuracy", row["accuracy"], "share",
                           base_acc, "single", row.get("accuracy_ratio")))
        rows.append(Figure("test_time_compute", f"{label} compute",
                           row["mean_compute_tokens"], "tokens/answer",
                           round(row["mean_compute_tokens"] / row["compute_ratio"], 1)
                           if row.get("compute_ratio") else None, "single",
                           row.get("compute_ratio")))
    b = r.get("part_b") or {}
    history = b.get("rounds", [])
    if len(history) > 1:
        first, last = history[0]["cohort"], history[-1]["cohort"]
        rows.append(Figure("test_time_compute", f"handoff rate after {len(history) - 1} "
                           "round(s)", last["handoff_rate"], "share", first["handoff_rate"],
                           "round 0"))
    return rows


def _vs_vllm_serve(r: dict) -> list[Figure]:
    rows = []
    for engine, run in r["engines"].items():
        if "skipped" in run:
            continue
        label = run["baseline"]
        for c in r["concurrency"]:
            for kind in ("base", "adapter"):
                cell = {metric: (sides["loraloop"]["median"], sides[label]["median"])
                        for metric, sides in run[f"c{c}"][kind].items() if "ratio" in sides}
                where = f"loraloop {engine}, {kind}, c{c}"
                ours, theirs = cell["tokens_per_s"]
                rows.append(Figure("vs_vllm_serve", f"{where}: tokens/s", ours, "tokens/s",
                                   theirs, label))
                for what, title in (("ttft", "first token"), ("e2e", "end to end")):
                    (p50, theirs), (p99, _) = cell[f"{what}_p50_ms"], cell[f"{what}_p99_ms"]
                    rows.append(Figure("vs_vllm_serve", f"{where}: {title} p50", p50, "ms",
                                       theirs, label, p50=p50, p99=p99))
    return rows


EXTRACTORS: dict[str, Callable[[dict], list[Figure]]] = {
    "detokenize": _detokenize, "feedback_ops": _feedback_ops,
    "engine_throughput": _engine_throughput, "compare_engines": _compare_engines,
    "serving_latency": _serving_latency, "feedback_throughput": _feedback_throughput,
    "swap_latency": _swap_latency, "learner_loop": _learner_loop, "abuse": _abuse,
    "learning_efficacy": _learning_efficacy, "test_time_compute": _test_time_compute,
    "vs_vllm_serve": _vs_vllm_serve,
}


def _ratios(bench: str, result: dict, prefix: str = "") -> list[Figure]:
    rows = []
    for key, value in result.items():
        if isinstance(value, dict):
            rows += _ratios(bench, value, f"{prefix}{key}.")
        elif isinstance(value, int | float) and ("ratio" in key or "_over_" in key):
            rows.append(Figure(bench, prefix + key, None, "", None, "", float(value)))
    return rows


def figures(bench: str, result: dict) -> list[Figure]:
    """``bench``'s figures from its JSON ``result``. A result whose shape an extractor does
    not know (a changed script) falls back to the ratios it names, never an error."""
    extract = EXTRACTORS.get(bench)
    if extract is not None:
        try:
            return extract(result)
        except (KeyError, TypeError, ValueError, StopIteration, ZeroDivisionError):
            pass
    return _ratios(bench, result)
