"""Engine throughput: tokens/s at concurrency 1 and N, and adapter ÷ base.

Every figure is a ratio against a baseline measured in the same run, so it
means the same thing on a laptop, on CI and on a GPU machine:

    python bench/engine_throughput.py --engine hf [--concurrency 8] [--engine-config JSON]
        [--json out.json]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import add_engine_options, bench_parser, run_script

from serving.engines import EngineConfig, GenerationRequest, SamplingParams, engine_class
from tests.support.adapters import ALL_PROJ, save_random_adapter

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain LoRA adapters in one paragraph.",
    "List three colours of the rainbow.",
]


async def _one(engine, ids, tokens, adapter):
    params = SamplingParams(max_tokens=tokens, temperature=0.0)
    count = 0
    async for chunk in engine.generate(GenerationRequest("bench", ids, params, adapter=adapter)):
        count += len(chunk.token_ids)
    return count


async def tokens_per_second(engine, prompts, concurrency, tokens, adapter=None, rounds=3,
                            mixed=False):
    """Median tokens/s over ``rounds`` runs of ``concurrency`` simultaneous requests;
    ``mixed``: every other request uses ``adapter``, the rest the base model."""
    encoded = [engine.encode_chat([{"role": "user", "content": p}]) for p in prompts]
    rates = []
    for _ in range(rounds):
        jobs = [encoded[i % len(encoded)] for i in range(concurrency)]
        names = [None if mixed and i % 2 else adapter for i in range(concurrency)]
        start = time.perf_counter()
        counts = await asyncio.gather(*(_one(engine, ids, tokens, name)
                                        for ids, name in zip(jobs, names, strict=True)))
        rates.append(sum(counts) / (time.perf_counter() - start))
    return statistics.median(rates)


def _make_adapter(model_dir: str, out: Path, rank: int, same_lengths: bool = False) -> Path:
    """A random (not a no-op) LoRA of ``rank`` on every projection of the model.

    ``same_lengths``: its scaling is tiny (alpha 1e-4), so every LoRA product is still
    computed but greedy answers stay the base model's, token for token: adapter and base
    rounds then generate the same number of tokens with the same batch occupancy (a
    random adapter changes where answers end, and a batch whose rows end early runs
    fewer rows per step, which skews tokens/s either way)."""
    return save_random_adapter(model_dir, out, r=rank, targets=ALL_PROJ, seed=0,
                               base_name=model_dir, alpha=1e-4 if same_lengths else None)


async def main(args) -> dict:
    model = args.model
    if model is None:
        from loraloop.tiny_model import ensure_tiny_model

        model = str(ensure_tiny_model(Path(args.data_dir or tempfile.mkdtemp())))
    config = EngineConfig(**{
        "model": model, "model_name": model, "max_lora_rank": args.rank,
        "max_batch_size": args.concurrency, **json.loads(args.engine_config)})
    engine = engine_class(args.engine)(config)
    await engine.start()
    try:
        adapter_dir = _make_adapter(model, Path(tempfile.mkdtemp()) / "adapter", args.rank,
                                    args.same_lengths)
        await engine.load_adapter("bench-adapter", adapter_dir)
        await tokens_per_second(engine, PROMPTS, 2, 8, rounds=1)  # warm-up
        c1 = await tokens_per_second(engine, PROMPTS, 1, args.tokens)
        # Base, adapter and mixed batches alternate round by round, so that a change in the
        # machine's load between them does not show up as a ratio.
        kinds = {"base": {}, "adapter": {"adapter": "bench-adapter"},
                 "mixed": {"adapter": "bench-adapter", "mixed": True}}
        rates: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.rounds):
            for kind, options in kinds.items():
                rates[kind].append(await tokens_per_second(
                    engine, PROMPTS, args.concurrency, args.tokens, rounds=1, **options))
        base, adapter, mixed = (statistics.median(rates[kind]) for kind in kinds)
        cn = base
    finally:
        await engine.shutdown()
    return {
        "engine": args.engine,
        "model": model,
        "engine_config": json.loads(args.engine_config),
        "same_lengths": args.same_lengths,
        "max_tokens": args.tokens,
        "concurrency": args.concurrency,
        "tokens_per_s_c1": round(c1, 1),
        f"tokens_per_s_c{args.concurrency}": round(cn, 1),
        f"ratio_c{args.concurrency}_over_c1": round(cn / c1, 2),
        f"tokens_per_s_adapter_c{args.concurrency}": round(adapter, 1),
        "ratio_adapter_over_base": round(adapter / base, 3),
        f"tokens_per_s_mixed_c{args.concurrency}": round(mixed, 1),
        "ratio_mixed_over_base": round(mixed / base, 3),
        # Each round's own ratio (its base, adapter and mixed runs back to back): the spread.
        "ratio_adapter_over_base_rounds": [round(a / b, 3) for a, b in
                                           zip(rates["adapter"], rates["base"], strict=True)],
        "ratio_mixed_over_base_rounds": [round(m / b, 3) for m, b in
                                         zip(rates["mixed"], rates["base"], strict=True)],
    }


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    add_engine_options(parser, concurrency=8)
    parser.add_argument("--engine", default="hf", help="engine name (hf, vllm)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating base / adapter / mixed rounds (medians reported)")
    parser.add_argument("--same-lengths", action="store_true", help="an adapter whose "
                        "answers keep the base model's lengths (see _make_adapter)")
    parser.add_argument("--engine-config", default="{}", help="EngineConfig fields as JSON, "
                        'over the bench\'s own (e.g. \'{"max_loras": 1, "vllm_args": '
                        '{"fully_sharded_loras": true}}\')')
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script(main, parse_args)
