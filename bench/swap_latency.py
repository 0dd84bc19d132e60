"""Hot swap cost: promote-to-all-replicas time, p99 during swaps ÷ steady, load ÷ copy time.

One run, 2 replicas of the tiny model, requests at concurrency 8 throughout:
steady for a while, then a promotion of a fresh (never loaded) version every
`--every` seconds. The physical floor of a swap is copying the adapter's
bytes; the swap time is fetch + sha256 check + validation + engine load.

    python bench/swap_latency.py [--versions 6] [--every 1.0] [--json out.json]
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import bench_parser, run_script

from tests.support.adapters import ALL_PROJ, save_random_adapter
from tests.support.registry import LocalRegistry
from tests.support.stack import free_port


def _make_adapters(model: str, root: Path, count: int) -> list[Path]:
    return [save_random_adapter(model, root / f"a{i}", r=8, targets=ALL_PROJ, seed=100 + i,
                                base_name="builtin:tiny")
            for i in range(count)]


async def _load(url: str, seconds: float, concurrency: int = 8) -> list[float]:
    import httpx

    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    body = {"model": "acme", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    async with httpx.AsyncClient(timeout=60) as http:

        async def worker():
            while time.monotonic() < deadline:
                start = time.perf_counter()
                r = await http.post(f"{url}/v1/chat/completions", json=body)
                r.raise_for_status()
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.99 * (len(ordered) - 1))]


def main(args) -> dict:
    import ray
    from ray import serve

    from feedback.redis_server import EmbeddedRedis
    from loraloop.tiny_model import ensure_tiny_model
    from serving.api import IngressConfig
    from serving.app import RegistryConfig, ServeConfig, build_app
    from serving.engines.base import EngineConfig
    from storage.alias_events import AliasChangePublisher

    work = Path(tempfile.mkdtemp(prefix="loraloop-bench-"))
    model = str(ensure_tiny_model(work))
    adapters = _make_adapters(model, work, args.versions + 1)
    redis = EmbeddedRedis(work).start()
    publisher = AliasChangePublisher.from_url(redis.url, prefix="bench")
    registry = LocalRegistry.create(work, notifier=publisher, actor="bench")
    ids = [registry.register(path) for path in adapters]
    copy_s = []
    for path in adapters:  # the floor: copying the adapter's bytes
        start = time.perf_counter()
        shutil.copytree(path, work / "copies" / f"{path.name}-{time.time_ns()}")
        copy_s.append(time.perf_counter() - start)

    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        registry.promote(ids[0])
        config = ServeConfig(
            engine_config=EngineConfig(model=model, model_name="builtin:tiny", threads=1),
            ingress=IngressConfig(tenants=["acme"]),
            num_replicas=2,
            redis_url=redis.url,
            redis_prefix="bench",
            registry=RegistryConfig(
                database_url=registry.url,
                artifacts_location=str(registry.artifacts),
                cache_dir=str(work / "cache"),
            ),
        )
        serve.run(build_app(config), name="bench", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        handle = serve.get_deployment_handle("llm", app_name="bench")
        steady = asyncio.run(_load(url, args.every * args.versions))

        promote_to_all: list[float] = []

        async def flips():
            for version in ids[1:]:
                committed = time.time()
                registry.promote(version)
                while True:
                    infos = await handle.broadcast("info").results_async(timeout_s=10)
                    routes = [i["adapter_manager"]["routes"].get("acme", {}) for i in infos]
                    if all(r.get("live") == version for r in routes):
                        changed = max(i["adapter_manager"]["routes_changed_at"] for i in infos)
                        promote_to_all.append(changed - committed)
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(args.every)

        async def during():
            load = asyncio.create_task(_load(url, args.every * args.versions + 2))
            await flips()
            return await load

        swapping = asyncio.run(during())
        infos = handle.broadcast("info").results(timeout_s=10)
        loads = [
            e["seconds"]
            for i in infos
            for e in i["adapter_manager"]["swaps"]
            if e["event"] == "loaded"
        ]
    finally:
        serve.shutdown()
        ray.shutdown()
        redis.stop()
    return {
        "promote_to_all_replicas_s": {
            "median": round(statistics.median(promote_to_all), 4),
            "max": round(max(promote_to_all), 4),
        },
        "steady_p99_ms": round(1000 * _p99(steady), 2),
        "swapping_p99_ms": round(1000 * _p99(swapping), 2),
        "p99_swapping_over_steady": round(_p99(swapping) / _p99(steady), 3),
        "swap_load_s_median": round(statistics.median(loads), 4),
        "copy_bytes_s_median": round(statistics.median(copy_s), 5),
        "swap_over_copy": round(statistics.median(loads) / statistics.median(copy_s), 1),
        "requests_steady": len(steady),
        "requests_swapping": len(swapping),
    }


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    parser.add_argument("--versions", type=int, default=6, help="promotions of fresh versions")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between promotions")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script(main, parse_args)
