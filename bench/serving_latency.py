"""Full-stack latency and the cost of interaction logging.

Measured in one run, on the same model (builtin:tiny unless ``--model``) and engine settings:

- direct: the engine called in-process (the baseline),
- full stack: HTTP -> Ray Serve proxy -> ingress -> LLM replica -> engine -> response,
  with interaction logging on (embedded Redis),
- full stack with logging off,
- the one-hop topology with logging on: HTTP -> proxy -> replica (HTTP app and
  engine in one deployment) -> engine,

at concurrency 1 and 8: p50/p99 latency, full ÷ direct, the added milliseconds,
throughput with logging on ÷ off, and one hop ÷ split. With ``--rounds`` the stack
variants alternate and each figure is the median over the rounds.

    python bench/serving_latency.py [--requests 60] [--tokens 16] [--rounds 1]
        [--model builtin:tiny] [--json out.json]
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import bench_parser, run_script

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _run(call, requests: int, concurrency: int) -> tuple[list[float], float]:
    """Latencies (s) of ``requests`` calls with ``concurrency`` in flight, and the wall time."""
    latencies: list[float] = []
    queue = list(range(requests))

    async def worker():
        while queue:
            queue.pop()
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


def _median_round(rounds: list[dict]) -> dict:
    """Each figure's median over the rounds, and its spread."""
    out = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    out["p50_ms_spread"] = [min(r["p50_ms"] for r in rounds), max(r["p50_ms"] for r in rounds)]
    return out


def _summary(latencies: list[float], wall: float) -> dict:
    return {
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * _percentile(latencies, 0.99), 2),
        "requests_per_s": round(len(latencies) / wall, 2),
    }


async def direct(model_dir: str, args) -> dict:
    from serving.engines import EngineConfig, GenerationRequest, SamplingParams
    from serving.engines.hf import HFEngine

    engine = HFEngine(EngineConfig(model=model_dir, threads=args.threads))
    await engine.start()
    ids = engine.encode_chat(PROMPT)
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0)

    async def call():
        async for _ in engine.generate(GenerationRequest("bench", ids, params)):
            pass

    try:
        await _run(call, 5, 1)  # warm-up
        return {c: _summary(*await _run(call, args.requests, c)) for c in (1, 8)}
    finally:
        await engine.shutdown()


async def full_stack(url: str, args) -> dict:
    import httpx

    body = {"model": "default", "messages": PROMPT, "max_tokens": args.tokens, "temperature": 0}
    async with httpx.AsyncClient(timeout=120) as http:

        async def call():
            response = await http.post(f"{url}/v1/chat/completions", json=body)
            response.raise_for_status()

        await _run(call, 5, 1)  # warm-up
        return {c: _summary(*await _run(call, args.requests, c)) for c in (1, 8)}


def main(args) -> dict:
    import ray
    from ray import serve

    from feedback.redis_server import EmbeddedRedis
    from loraloop.models import resolve_model
    from serving.app import ServeConfig, build_app
    from serving.engines.base import EngineConfig

    work = Path(tempfile.mkdtemp(prefix="loraloop-bench-"))
    model_dir = str(resolve_model(
        args.model, Path(args.data_dir).expanduser() if args.data_dir else work))
    result: dict = {"tokens": args.tokens, "requests": args.requests, "model": args.model}
    result["direct"] = asyncio.run(direct(model_dir, args))
    rounds: dict[str, list[dict]] = {}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = EmbeddedRedis(work).start()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        engine_config = EngineConfig(model=model_dir, threads=args.threads)
        variants = (("logging_on", redis.url, "split"), ("logging_off", "", "split"),
                    ("one_hop", redis.url, "one_hop"))
        for _ in range(args.rounds):  # alternating, so that drift hits every variant
            for name, redis_url, topology in variants:
                config = ServeConfig(engine_config=engine_config, redis_url=redis_url,
                                     topology=topology)
                serve.run(build_app(config), name=name, route_prefix=f"/{name}")
                rounds.setdefault(name, []).append(
                    asyncio.run(full_stack(f"http://127.0.0.1:{port}/{name}", args)))
                serve.delete(name)
    finally:
        serve.shutdown()
        ray.shutdown()
        redis.stop()

    for name, measured in rounds.items():
        result[name] = {c: _median_round([m[c] for m in measured]) for c in (1, 8)}
    for c in (1, 8):
        d, on, off = result["direct"][c], result["logging_on"][c], result["logging_off"][c]
        hop = result["one_hop"][c]
        result[f"c{c}"] = {
            "full_over_direct_p50": round(on["p50_ms"] / d["p50_ms"], 2),
            "full_over_direct_p99": round(on["p99_ms"] / d["p99_ms"], 2),
            "added_p50_ms": round(on["p50_ms"] - d["p50_ms"], 2),
            "added_p99_ms": round(on["p99_ms"] - d["p99_ms"], 2),
            "logging_on_over_off_throughput": round(
                on["requests_per_s"] / off["requests_per_s"], 3
            ),
            "one_hop_added_p50_ms": round(hop["p50_ms"] - d["p50_ms"], 2),
            "one_hop_over_split_p50": round(hop["p50_ms"] / on["p50_ms"], 3),
            "one_hop_over_split_throughput": round(
                hop["requests_per_s"] / on["requests_per_s"], 3),
        }
    return result


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    parser.add_argument("--requests", type=int, default=60, help="requests per measurement")
    parser.add_argument("--tokens", type=int, default=16, help="max tokens per request")
    parser.add_argument("--threads", type=int, default=1, help="engine CPU threads (both sides)")
    parser.add_argument("--model", default="builtin:tiny", help="the base model (both sides)")
    parser.add_argument("--data-dir", default=None, help="where built-in models are built "
                        "(default: a temporary directory; builtin:smollm2 converts once there)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternating rounds of the stack variants (medians reported)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script(main, parse_args)
