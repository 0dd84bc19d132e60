"""`loraloop bench` run as a user runs it, on a fast bench (the tiny model's throughput),
and how the suite reports a bench that fails or runs out of time."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from tests.support.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import suite  # noqa: E402


def test_bench_runs_a_script_and_writes_the_report(data_dir, tmp_path):
    done = run_cli("bench", "--only", "engine_throughput", "--out", str(tmp_path),
                   data_dir=data_dir, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "[1/1] engine_throughput: ok" in done.stdout  # plain progress lines: not a terminal

    report = json.loads((tmp_path / "latest.json").read_text())
    [bench] = report["benches"]
    assert bench["status"] == "ok"
    assert bench["command"] == ["python", "bench/engine_throughput.py", "--engine", "hf"]
    assert bench["result"]["engine"] == "hf" and "tiny" in bench["result"]["model"]
    assert bench["figures"] and report["machine"]["cores"] and report["machine"]["torch"]
    text = (tmp_path / "latest.md").read_text()
    assert "| hf tokens/s with an adapter, c8 |" in text
    assert (tmp_path / "ratios.png").read_bytes().startswith(b"\x89PNG")


def test_an_unknown_bench_is_a_usage_error_that_lists_the_benches(data_dir, tmp_path):
    done = run_cli("bench", "--only", "nope", "--out", str(tmp_path), data_dir=data_dir)
    assert done.returncode == 2
    assert "unknown bench nope" in done.stderr and "learning_efficacy" in done.stderr
    assert not (tmp_path / "latest.json").exists()


def test_a_failing_bench_is_reported_with_the_end_of_its_output(tmp_path):
    broken = suite.Bench("feedback_ops", "", ("--events", "many"))
    outcome = suite.run_bench(broken, work=tmp_path)
    assert outcome.status == "failed" and outcome.returncode != 0
    assert outcome.result is None and "invalid int value: 'many'" in outcome.tail


def test_a_bench_past_its_limit_is_stopped_and_reported(tmp_path):
    # Importing transformers alone takes longer than a tenth of a second.
    slow = dataclasses.replace(suite.select(only=["detokenize"])[0], timeout_s=0.1)
    outcome = suite.run_bench(slow, work=tmp_path)
    assert outcome.status == "timed out" and outcome.result is None
    assert "stopped after its limit" in outcome.tail
