"""The short table ``bench/test_time_compute.py`` prints after its JSON."""

from __future__ import annotations


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def table(result: dict) -> str:
    lines = []
    a = result.get("part_a")
    if a:
        lines += [f"Part A: accuracy against compute ({a['tasks']} test tasks; ratios to "
                  "single on the same model)",
                  f"{'strategy':<26} {'model':<8} {'right':>7} {'acc':>5} {'x acc':>6} "
                  f"{'tokens':>7} {'x tokens':>8}"]
        for r in a["rows"]:
            ratio = "-" if r["accuracy_ratio"] is None else f"{r['accuracy_ratio']:.2f}"
            lines.append(f"{r['strategy']:<26} {r['model']:<8} {r['right']:>3}/{r['n']:<3} "
                         f"{_pct(r['accuracy']):>5} {ratio:>6} {r['mean_compute_tokens']:>7.1f} "
                         f"{r['compute_ratio']:>8.2f}")
        v = a.get("adaptive_vs_best_fixed")
        if v:
            lines.append(f"adaptive vs best fixed ({v['best_fixed']}): accuracy "
                         f"{_pct(v['adaptive_accuracy'])} vs {_pct(v['best_fixed_accuracy'])}, "
                         f"compute {v['compute_share_of_best']:.2f} of it -> "
                         f"{'met' if v['met'] else 'not met'}")
    b = result.get("part_b")
    if b:
        lines += ["", f"Part B: handoff and distillation (threshold {b['threshold']}, "
                  f"upstream knows {_pct(b['upstream']['questions'])} of the facts)",
                  f"{'round':>5} {'version':<13} {'cohort ho':>9} {'served':>6} "
                  f"{'para ho':>7} {'greedy cohort':>13} {'greedy para':>11} {'general':>7} "
                  f"{'learning':<20}"]
        for r in b["rounds"]:
            learning = r.get("learning", {})
            note = learning.get("outcome", "")
            if "seconds" in learning:
                note += f" {learning['seconds']:.0f} s"
            lines.append(f"{r['round']:>5} {r['version']:<13} "
                         f"{_pct(r['cohort']['handoff_rate']):>9} "
                         f"{_pct(r['cohort']['served_accuracy']):>6} "
                         f"{_pct(r['paraphrases_adaptive']['handoff_rate']):>7} "
                         f"{_pct(r['greedy']['cohort']):>13} "
                         f"{_pct(r['greedy']['paraphrases']):>11} "
                         f"{_pct(r['greedy']['general']):>7} {note:<20}")
    lines.append(f"total {result.get('seconds', 0) / 60:.1f} min")
    return "\n".join(lines)
