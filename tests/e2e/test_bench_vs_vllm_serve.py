"""``bench/vs_vllm_serve.py`` run as a user runs it, on builtin:tiny with tiny numbers.

Each pair (loraloop up against its baseline) is a test of its own: the hf pair always,
the vllm pair where vLLM is installed (vllm serve starts in about 30 s on 2 cores). No
figure is held to a bound: what is checked is that every figure is there, positive, next
to its baseline from the same run, and that both sides were sent the same prompts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import figures  # noqa: E402

METRICS = ("tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "e2e_p50_ms", "e2e_p99_ms")
CONCURRENCY = (1, 2)


def run_bench(tmp_path: Path, models: Path, engine: str) -> dict:
    out = tmp_path / "vs_vllm_serve.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    done = subprocess.run(
        [sys.executable, "bench/vs_vllm_serve.py", "--model", "builtin:tiny",
         "--models", str(models), "--engines", engine, "--rounds", "1", "--requests", "4",
         "--tokens", "8", "--concurrency", ",".join(map(str, CONCURRENCY)), "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


def check_pair(result: dict, engine: str, baseline: str) -> None:
    run = result["engines"][engine]
    assert run["baseline"] == baseline and run["startup"]["loraloop_s"] > 0
    for c in CONCURRENCY:
        for kind in ("base", "adapter"):
            cell = run[f"c{c}"][kind]
            for metric in METRICS:
                ours, theirs = cell[metric]["loraloop"], cell[metric][baseline]
                assert ours["median"] > 0 and theirs["median"] > 0, (c, kind, metric)
                assert ours["min"] <= ours["median"] <= ours["max"]
                assert cell[metric]["ratio"] > 0
                assert result["loraloop_over_baseline"][f"{engine}_c{c}_{kind}_{metric}"] > 0
            assert cell["tokens_per_request"]["loraloop"] > 0
            assert cell["tokens_per_request"][baseline] > 0
            prompts = cell["prompt_tokens_per_request"]
            assert prompts["loraloop"] == prompts[baseline] > 0  # the same rendered prompts
    rows = figures.EXTRACTORS["vs_vllm_serve"](result)
    assert len(rows) == 3 * 2 * len(CONCURRENCY)
    assert all(r.baseline_name == baseline and r.ratio and r.ratio > 0 for r in rows)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_hf_pair_against_bare_transformers(tmp_path, data_dir, tiny_model_dir):
    result = run_bench(tmp_path, data_dir / "models", "hf")
    check_pair(result, "hf", "bare transformers")
    assert result["goals"]["checked"] == {}  # the goals are held against vllm serve only


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_vllm_pair_against_vllm_serve(tmp_path, data_dir, tiny_model_dir):
    pytest.importorskip("vllm")
    result = run_bench(tmp_path, data_dir / "models", "vllm")
    check_pair(result, "vllm", "vllm serve")
    command = result["engines"]["vllm"]["baseline_command"]
    assert "vllm.entrypoints.openai.api_server" in command and "--enable-lora" in command
    checked = result["goals"]["checked"]
    assert set(checked) == {f"vllm_c{c}_{kind}_{metric}" for c in CONCURRENCY
                            for kind in ("base", "adapter")
                            for metric in ("tokens_per_s", "ttft_p50_ms", "ttft_p99_ms")}
    assert all(isinstance(v["met"], bool) for v in checked.values())
