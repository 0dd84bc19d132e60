"""The report of `loraloop bench` (bench/figures.py, bench/summary.py, bench/plots.py), written
from results the bench scripts really printed.

``tests/support/bench_results.json`` holds one result per bench of the suite, each the
JSON its script wrote with ``--json`` (the short options ``loraloop bench`` runs).
Refresh it from a run: ``bench/results/latest.json`` keeps every raw result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import figures  # noqa: E402
import suite  # noqa: E402
import summary  # noqa: E402

RESULTS = json.loads((ROOT / "tests/support/bench_results.json").read_text())
MACHINE = {"cpu": "test", "cores": 2, "date": "2026-12-04 20:00 UTC"}


def _outcome(name: str, result: dict | None, status: str = "ok", tail: str = "") -> dict:
    return {"name": name, "about": "", "status": status, "seconds": 1.0,
            "command": ["python", f"bench/{name}.py"], "result": result,
            "returncode": 0 if status == "ok" else 1, "tail": tail}


def test_the_samples_cover_every_bench_of_the_suite_and_each_has_an_extractor():
    names = {bench.name for bench in suite.SUITE}
    assert set(RESULTS) == names
    assert set(figures.EXTRACTORS) == names


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_each_bench_result_gives_figures_with_their_baselines(name):
    rows = figures.EXTRACTORS[name](RESULTS[name])  # its own extractor, not the fallback
    assert rows
    for row in rows:
        assert row.bench == name and row.name
        assert row.value is not None
        if row.baseline_name:
            assert row.baseline is not None and row.ratio is not None
            assert row.ratio == pytest.approx(row.value / row.baseline, rel=0.01)


def test_latencies_come_with_their_p50_or_p99():
    rows = figures.figures("serving_latency", RESULTS["serving_latency"])
    full = [r for r in rows if r.unit == "ms"]
    assert full and all(r.p50 is not None and r.p99 is not None for r in full)
    assert all(r.baseline_name == "engine direct" for r in full)


def test_a_result_of_a_changed_shape_falls_back_to_the_ratios_it_names():
    rows = figures.figures("serving_latency", {"c1": {"full_over_direct_p50": 2.5, "ms": 3}})
    assert [(r.name, r.ratio) for r in rows] == [("c1.full_over_direct_p50", 2.5)]


def test_the_report_has_every_figure_the_machine_the_plots_and_what_failed(tmp_path):
    outcomes = [_outcome(name, result) for name, result in RESULTS.items()]
    outcomes.append(_outcome("swap_latency", None, "timed out",
                             "Traceback ...\nstuck here\n(stopped after its limit of 420 s)"))
    paths = summary.write_report(outcomes, tmp_path, full=False, seconds=600.0,
                                 machine_info=MACHINE)

    report = json.loads(paths["json"].read_text())
    assert report["machine"] == MACHINE
    assert [b["name"] for b in report["benches"]] == [o["name"] for o in outcomes]
    assert report["benches"][0]["result"] == outcomes[0]["result"]  # the raw result is kept
    assert report["benches"][-1]["status"] == "timed out"
    assert report["benches"][-1]["figures"] == []

    text = paths["markdown"].read_text()
    rows = [f for b in report["benches"] for f in b["figures"]]
    table = [line for line in text.splitlines()
             if line.startswith("| ") and line.rstrip().endswith(" |")
             and line.split("|")[-2].strip() in RESULTS]
    assert len(table) == len(rows)
    assert "| cores | 2 |" in text
    assert "### swap_latency: timed out" in text and "stuck here" in text

    learned = any("taught" in r for r in RESULTS["learning_efficacy"]["rounds"])
    assert set(report["plots"].values()) == {"accuracy_compute.png", "latency.png",
                                             "ratios.png"} | ({"learning_curve.png"}
                                                              if learned else set())
    for name in report["plots"].values():
        assert f"]({name})" in text
        png = (tmp_path / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) < 200_000


def test_a_plot_without_its_bench_is_left_out_and_a_stale_one_removed(tmp_path):
    (tmp_path / "learning_curve.png").write_bytes(b"stale")
    outcomes = [_outcome("detokenize", RESULTS["detokenize"])]
    paths = summary.write_report(outcomes, tmp_path, full=False, seconds=1.0,
                                 machine_info=MACHINE)
    assert json.loads(paths["json"].read_text())["plots"] == {
        "ratios to baselines": "ratios.png"}
    assert not (tmp_path / "learning_curve.png").exists()


def test_select_narrows_the_suite_and_names_the_benches_when_one_is_unknown():
    assert [b.name for b in suite.select(only=["abuse", "detokenize"])] == [
        "detokenize", "abuse"]  # the suite's order
    assert "abuse" not in [b.name for b in suite.select(skip=["abuse"])]
    with pytest.raises(ValueError, match=r"unknown bench nope.*detokenize"):
        suite.select(only=["nope"])
