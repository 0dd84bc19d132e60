"""Feedback through the full HTTP stack: posts/s at concurrency 16, and what strict durability adds.

Two apps in one run, each with its own embedded Redis: the default
(`appendfsync everysec`) and strict (`appendfsync always`, the feedback store
in strict mode). Same requests, same machine.

    python bench/feedback_throughput.py [--posts 2000] [--concurrency 16] [--json out.json]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import bench_parser, run_script

from tests.support.feedback_traffic import answer_each, logged, rate
from tests.support.stack import free_port

PREFIX = "bench"


async def _measure(url: str, redis_url: str, posts: int, concurrency: int) -> dict:
    import httpx

    users = [f"user-{i}" for i in range(concurrency)]
    async with httpx.AsyncClient(timeout=60) as http:
        ids = await answer_each(http, url, users)  # one answer per user, rated many times
        await logged(redis_url, PREFIX, ids)
        latencies: list[float] = []
        failures = 0

        async def client(i: int, count: int):
            nonlocal failures
            for n in range(count):
                start = time.perf_counter()
                r = await rate(http, url, ids[i], users[i], n)
                latencies.append(time.perf_counter() - start)
                failures += r.status_code != 202

        start = time.perf_counter()
        await asyncio.gather(*(client(i, posts // concurrency) for i in range(concurrency)))
        wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "posts": len(latencies),
        "failures": failures,
        "posts_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 2),
    }


def main(args) -> dict:
    import ray
    from ray import serve

    from feedback.redis_server import EmbeddedRedis
    from feedback.store import FeedbackConfig
    from loraloop.tiny_model import ensure_tiny_model
    from serving.api import IngressConfig
    from serving.app import ServeConfig, build_app
    from serving.engines.base import EngineConfig

    work = Path(tempfile.mkdtemp(prefix="loraloop-bench-"))
    model = str(ensure_tiny_model(work))
    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    result: dict = {"concurrency": args.concurrency}
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for name, fsync, strict in (("default", "everysec", False), ("strict", "always", True)):
            redis = EmbeddedRedis(work / name, appendfsync=fsync).start()
            try:
                feedback = FeedbackConfig(
                    strict_durability=strict, user_limit=10**6, tenant_limit=10**7,
                    address_limit=10**7,  # every post comes from this one address
                )
                config = ServeConfig(
                    engine_config=EngineConfig(model=model, threads=1),
                    ingress=IngressConfig(feedback=feedback),
                    redis_url=redis.url,
                    redis_prefix=PREFIX,
                )
                serve.run(build_app(config), name=name, route_prefix=f"/{name}")
                url = f"http://127.0.0.1:{port}/{name}"
                result[name] = asyncio.run(_measure(url, redis.url, args.posts, args.concurrency))
                serve.delete(name)
            finally:
                redis.stop()
    finally:
        serve.shutdown()
        ray.shutdown()
    result["strict_added_p99_ms"] = round(
        result["strict"]["p99_ms"] - result["default"]["p99_ms"], 2
    )
    result["strict_over_default_throughput"] = round(
        result["strict"]["posts_per_s"] / result["default"]["posts_per_s"], 3
    )
    return result


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script(main, parse_args)
