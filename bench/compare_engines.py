"""Engine against engine: vllm ÷ hf throughput at concurrency 1 and N, adapter ÷ base on each.

All engines are started side by side and measured in alternating rounds
(engine A, engine B, engine A, ...), so a machine whose load drifts during
the run (CI, a shared box) skews every engine alike; each figure is the
median over the rounds:

    python bench/compare_engines.py [--engines hf vllm] [--concurrency 16] [--rounds 5]

The vllm engine starts its core in child processes, so this must run as a
script (everything that creates an engine sits under ``__main__``).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine_throughput as bench  # the bench directory is on sys.path, not a package
from report import add_engine_options, bench_parser, run_script

from serving.engines import EngineConfig, engine_class


async def _round(engine, concurrency: int, tokens: int) -> dict[str, float]:
    rate = bench.tokens_per_second
    return {
        "c1": await rate(engine, bench.PROMPTS, 1, tokens, rounds=1),
        "cn": await rate(engine, bench.PROMPTS, concurrency, tokens, rounds=1),
        "adapter": await rate(
            engine, bench.PROMPTS, concurrency, tokens, adapter="bench-adapter", rounds=1
        ),
    }


async def compare(args) -> dict:
    model = args.model
    if model is None:
        from loraloop.tiny_model import ensure_tiny_model

        model = str(ensure_tiny_model(Path(args.data_dir or tempfile.mkdtemp())))
    adapter = bench._make_adapter(model, Path(tempfile.mkdtemp()) / "adapter", args.rank)
    config = EngineConfig(
        model=model, model_name=model, max_lora_rank=args.rank, max_batch_size=args.concurrency
    )
    engines = {name: engine_class(name)(config) for name in args.engines}
    try:
        for engine in engines.values():
            await engine.start()
            await engine.load_adapter("bench-adapter", adapter)
            await bench.tokens_per_second(engine, bench.PROMPTS, 2, 8, rounds=1)  # warm-up
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in engines}
        for _ in range(args.rounds):
            for name, engine in engines.items():
                samples[name].append(await _round(engine, args.concurrency, args.tokens))
    finally:
        for engine in engines.values():
            await engine.shutdown()
    n = args.concurrency
    runs = {}
    for name, rows in samples.items():
        median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        runs[name] = {
            "tokens_per_s_c1": round(median["c1"], 1),
            f"tokens_per_s_c{n}": round(median["cn"], 1),
            f"tokens_per_s_adapter_c{n}": round(median["adapter"], 1),
            "ratio_adapter_over_base": round(median["adapter"] / median["cn"], 2),
        }
    summary: dict = {"model": model, "rounds": args.rounds, "max_tokens": args.tokens, "runs": runs}
    first, *others = args.engines
    for other in others:
        for key, label in (("tokens_per_s_c1", "c1"), (f"tokens_per_s_c{n}", f"c{n}")):
            summary[f"{other}_over_{first}_{label}"] = round(runs[other][key] / runs[first][key], 2)
    for name in args.engines:
        summary[f"{name}_adapter_over_base_c{n}"] = runs[name]["ratio_adapter_over_base"]
    return summary


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    add_engine_options(parser, concurrency=16)
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per engine")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script(compare, parse_args)
