"""The report's PNG plots, drawn with matplotlib's Agg backend (no display needed):

- ``accuracy_compute.png``: accuracy against mean compute tokens per answer, one point
  per test-time compute strategy (``test_time_compute``'s part A);
- ``learning_curve.png``: accuracy per learning round (round 0 is the base model) on the
  taught facts, their paraphrases and the general questions (``learning_efficacy``), and
  the handoff rate per round (``test_time_compute``'s part B) where it ran;
- ``latency.png``: p50 and p99 of each latency the benches measured, next to its baseline;
- ``ratios.png``: every figure's ratio to its baseline, one bar each.

A plot whose bench did not run (or ran without the data) is left out.
"""

from __future__ import annotations

from pathlib import Path

DPI = 90


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from matplotlib.ticker import NullFormatter

    for ax in fig.axes:  # a log axis labels only its decades: minor labels overlap
        ax.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)


def accuracy_compute(ttc: dict, path: Path) -> bool:
    rows = (ttc.get("part_a") or {}).get("rows") or []
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for model, marker in (("base", "o"), ("default", "s")):
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        ax.scatter([r["mean_compute_tokens"] for r in mine], [r["accuracy"] for r in mine],
                   marker=marker, label="base model" if model == "base" else "live adapter")
        for r in mine:
            ax.annotate(r["strategy"], (r["mean_compute_tokens"], r["accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("mean compute tokens per answer (log)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"Test-time compute: accuracy against compute "
                 f"({(ttc.get('part_a') or {}).get('tasks', '?')} tasks, builtin:smollm2)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def learning_curve(efficacy: dict | None, ttc: dict | None, path: Path) -> bool:
    rounds = [r for r in (efficacy or {}).get("rounds", []) if "taught" in r]
    handoff = ((ttc or {}).get("part_b") or {}).get("rounds") or []
    if not rounds and not handoff:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if rounds:
        points = [(0, efficacy["base"])] + [(r["round"], r) for r in rounds]
        for key, label in (("taught", "taught facts"), ("paraphrases", "paraphrases"),
                           ("general", "general questions")):
            ax.plot([x for x, _ in points], [p[key] for _, p in points], marker="o",
                    label=f"{label} (learning_efficacy)")
    if handoff:
        ax.plot([r["round"] for r in handoff], [r["cohort"]["handoff_rate"] for r in handoff],
                marker="^", linestyle="--", label="handoff rate (test_time_compute)")
    ax.set_xlabel("learning round (0: base model)")
    ax.set_ylabel("share")
    ax.set_ylim(-0.05, 1.05)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Learning curve, builtin:smollm2")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def _latencies(results: dict) -> list[tuple[str, float | None, float]]:
    """(label, p50 ms or None, p99 ms) of every latency in the results, baselines first."""
    rows = []
    s = results.get("serving_latency")
    if s:
        for c in ("1", "8"):
            for key, label in (("direct", "engine direct"), ("logging_off", "full, no log"),
                               ("logging_on", "full stack")):
                point = s[key].get(c)
                if point:
                    rows.append((f"serving c{c}: {label}", point["p50_ms"], point["p99_ms"]))
    f = results.get("feedback_throughput")
    if f:
        for key in ("default", "strict"):
            rows.append((f"feedback post: {key}", f[key]["p50_ms"], f[key]["p99_ms"]))
    w = results.get("swap_latency")
    if w:
        rows += [("chat, swap bench: steady", None, w["steady_p99_ms"]),
                 ("chat, swap bench: swapping", None, w["swapping_p99_ms"])]
    learner = results.get("learner_loop")
    if learner:
        rows += [("chat, learner bench: idle", None, learner["serving_p99_idle_ms"]),
                 ("chat, learner bench: training", None, learner["serving_p99_training_ms"])]
    flood = (results.get("abuse") or {}).get("flood")
    if flood:
        rows += [("chat, abuse bench: idle", None, flood["idle_p99_ms"]),
                 ("chat, abuse bench: flood", None, flood["flood_p99_ms"])]
    return rows


def latency(results: dict, path: Path) -> bool:
    try:
        rows = _latencies(results)
    except (KeyError, TypeError):
        rows = []
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.4))
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, [r[2] for r in rows], color="#f4a261", label="p99")
    ax.barh(ys, [r[1] or 0 for r in rows], color="#2a9d8f", label="p50")
    ax.set_yticks(ys, [r[0] for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("ms (log)")
    ax.set_title("Latency p50 / p99 (each next to its baseline, same run)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return True


def ratios(rows: list[dict], path: Path) -> bool:
    rows = [r for r in rows if r.get("ratio")]
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.26 * len(rows) + 1.4))
    ys = list(range(len(rows)))[::-1]
    # Each bar spans from 1 (the baseline) to the ratio, either way.
    ax.barh(ys, [r["ratio"] - 1 for r in rows], left=1,
            color=["#457b9d" if r["ratio"] >= 1 else "#e76f51" for r in rows])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(ys, [f"{r['name']} ({r['bench']})" for r in rows], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("value ÷ baseline (log; 1 = the baseline)")
    ax.set_title("Every figure against its baseline, same run")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return True


def write_plots(results: dict[str, dict], out: Path,
                figure_rows: list[dict] = ()) -> dict[str, str]:
    """Draw what ``results`` (bench name -> JSON result) and ``figure_rows`` (the
    report's figures, as dicts) allow under ``out``; return {title: file name} of the
    plots written."""
    written = {}
    ttc, efficacy = results.get("test_time_compute"), results.get("learning_efficacy")
    for title, name, draw in (
        ("accuracy against compute", "accuracy_compute.png",
         lambda p: accuracy_compute(ttc or {}, p)),
        ("learning curve", "learning_curve.png", lambda p: learning_curve(efficacy, ttc, p)),
        ("latency p50/p99", "latency.png", lambda p: latency(results, p)),
        ("ratios to baselines", "ratios.png", lambda p: ratios(list(figure_rows), p)),
    ):
        path = out / name
        if draw(path):
            written[title] = name
        else:
            path.unlink(missing_ok=True)  # a stale plot of an earlier run would mislead
    return written
