"""The demo's learning curve as a PNG: accuracy and thumbs-up rate over time, with the
canaries, promotions and rollbacks of the audit trail marked."""

from __future__ import annotations

from pathlib import Path

from loraloop.demo.record import Record

#: Ratings the thumbs-up line averages over.
WINDOW = 20
MARK_COLORS = {"canary": "tab:orange", "promoted": "tab:green", "rolled back": "tab:red"}


def steps(record: Record, accuracy) -> tuple[list[float], list[float]]:
    """``accuracy(measurement)`` of each measured version from when it was measured,
    as minutes, held until the next one."""
    ordered = sorted(record.measured.values(), key=lambda m: m.at)
    xs = [record.elapsed(m.at) / 60 for m in ordered] + [record.elapsed() / 60]
    ys = [accuracy(m) for m in ordered]
    return xs, ys + ys[-1:]


def thumbs(record: Record) -> tuple[list[float], list[float]]:
    """The thumbs-up share of the last :data:`WINDOW` ratings, at each rating."""
    xs, ys, window = [], [], []
    for at, _, up in record.ratings:
        window = [*window[-(WINDOW - 1):], up]
        xs.append(record.elapsed(at) / 60)
        ys.append(sum(window) / len(window))
    return xs, ys


def write_curve(record: Record, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    ax.step(*steps(record, lambda m: m.taught_accuracy), where="post", linewidth=2,
            color="tab:blue", label=f"taught facts ({record.plan.facts})")
    ax.step(*steps(record, lambda m: m.general_accuracy), where="post", linewidth=2,
            color="tab:purple", label=f"general questions ({record.plan.general})")
    ax.plot(*thumbs(record), linewidth=1, alpha=0.8, color="tab:gray",
            label=f"thumbs-up rate (last {WINDOW} ratings)")
    labelled = set()
    for event in record.events():
        label = event["label"] if event["label"] not in labelled else None
        labelled.add(event["label"])
        ax.axvline(event["t"] / 60, color=MARK_COLORS[event["label"]], linestyle="--",
                   linewidth=1, label=label)
    ax.axhline(record.plan.target, color="grey", linewidth=0.5, linestyle=":")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("minutes since the demo started")
    ax.set_ylabel("share right / thumbs up")
    ax.set_title("loraloop demo: a model learning from its users")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
