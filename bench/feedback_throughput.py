"""Feedback posts/s at concurrency 16 through the full HTTP stack, next to the HTTP ceiling.

Every section serves the real ingress app (builtin:tiny engine, interaction sink and
FeedbackStore on an embedded Redis of its own) and drives it from this process with
aiohttp clients, each rating its own answer again and again. Next to the posts, each
measures ``GET /healthz`` served the same way (a route that does no I/O): the HTTP
ceiling, so ``feedback_over_trivial`` is the share of the ceiling the feedback path keeps.

- ``serve``: the application as deployed (Ray Serve's HTTP proxy -> ingress replica ->
  store -> Redis), default durability (``appendfsync everysec``) and strict
  (``appendfsync always``, the store in strict mode).
- ``serve_haproxy``: the same app with Ray Serve's throughput options
  (``RAY_SERVE_ENABLE_HA_PROXY=1`` and ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: HAProxy in
  place of the Python proxy, the ingress replica serving HTTP itself), in a child
  process, since Ray reads them when it starts.
- ``uvicorn``: the same ingress app (``serving.api.build_api``) under plain uvicorn in a
  child process, no Ray: what the app itself can do on this machine.
- ``store``: ``FeedbackStore.record`` called in this process, no HTTP.

The clients are aiohttp: httpx's pool costs about 1.3 ms of CPU a request here (it
peaks at 225-400 requests/s against a trivial server; aiohttp, 0.1 ms), which would be
the bench measuring its own client. The clients share the machine's cores with the
server: on 2 cores, every figure is a ceiling for that machine, not for the server.

    python bench/feedback_throughput.py [--posts 2000] [--concurrency 16]
        [--sections serve,serve_haproxy,uvicorn,store] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import bench_parser, run_script

from tests.support.feedback_traffic import answer_each, logged
from tests.support.stack import free_port

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bench"
#: Ray Serve's own throughput options (read when Ray starts), for ``serve_haproxy``.
SERVE_THROUGHPUT_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def _feedback_config(strict: bool = False):
    from feedback.store import FeedbackConfig

    # Every post comes from this one address, and 16 users rate thousands of times.
    return FeedbackConfig(strict_durability=strict, user_limit=10**6, tenant_limit=10**7,
                          address_limit=10**7)


# -- load -----------------------------------------------------------------------------------
async def _drive(send: Callable[[int, int], Awaitable[bool]], requests: int,
                 concurrency: int) -> dict:
    """``requests`` calls of ``send(client, n)`` (true: answered as expected), split over
    ``concurrency`` clients that each send their next one when the last is answered."""
    latencies: list[float] = []
    failures = 0

    async def client(i: int) -> None:
        nonlocal failures
        for n in range(requests // concurrency):
            start = time.perf_counter()
            ok = await send(i, n)
            latencies.append(time.perf_counter() - start)
            failures += not ok

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"requests": len(ordered), "failures": failures,
            "per_s": round(len(ordered) / wall, 1),
            "p50_ms": round(1000 * statistics.median(ordered), 2),
            "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 2)}


async def _measure_app(url: str, redis_url: str, posts: int, concurrency: int) -> dict:
    """The trivial route, then feedback posts, at ``concurrency``; each after a warm-up."""
    import aiohttp
    import httpx

    users = [f"user-{i}" for i in range(concurrency)]
    async with httpx.AsyncClient(timeout=120) as http:
        ids = await answer_each(http, url, users)  # one answer per user, rated many times
    await logged(redis_url, PREFIX, ids)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def trivial(i: int, n: int) -> bool:
            async with session.get(f"{url}/healthz") as response:
                await response.read()
                return response.status == 200

        async def rate(i: int, n: int) -> bool:  # down, up, down, ...: each a real change
            body = {"interaction_id": ids[i], "user": users[i], "rating": "up" if n % 2 else "down"}
            async with session.post(f"{url}/v1/feedback", json=body) as response:
                await response.read()
                return response.status == 202

        await _drive(trivial, 4 * concurrency, concurrency)  # connections open, code warm
        ceiling = await _drive(trivial, posts, concurrency)
        await _drive(rate, 4 * concurrency, concurrency)
        feedback = await _drive(rate, posts, concurrency)
    return {"trivial": ceiling, "feedback": _as_posts(feedback),
            "feedback_over_trivial": round(feedback["per_s"] / ceiling["per_s"], 3)}


def _as_posts(figures: dict) -> dict:
    """Feedback figures under the names the report reads (posts, posts_per_s)."""
    return {"posts": figures["requests"], "failures": figures["failures"],
            "posts_per_s": figures["per_s"], "p50_ms": figures["p50_ms"],
            "p99_ms": figures["p99_ms"]}


# -- sections -------------------------------------------------------------------------------
def serve_section(args, modes=(("default", "everysec", False), ("strict", "always", True))
                  ) -> dict:
    """The app on Ray Serve, once per durability mode."""
    import ray
    from ray import serve

    from feedback.redis_server import EmbeddedRedis
    from loraloop.tiny_model import ensure_tiny_model
    from serving.api import IngressConfig
    from serving.app import ServeConfig, build_app
    from serving.engines.base import EngineConfig

    work = Path(tempfile.mkdtemp(prefix="loraloop-bench-"))
    model = str(ensure_tiny_model(work))
    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    result: dict = {}
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for name, fsync, strict in modes:
            redis = EmbeddedRedis(work / name, appendfsync=fsync).start()
            try:
                config = ServeConfig(
                    engine_config=EngineConfig(model=model, threads=1),
                    ingress=IngressConfig(feedback=_feedback_config(strict)),
                    redis_url=redis.url, redis_prefix=PREFIX)
                serve.run(build_app(config), name=name, route_prefix=f"/{name}")
                url = f"http://127.0.0.1:{port}/{name}"
                result[name] = asyncio.run(_measure_app(url, redis.url, args.posts,
                                                        args.concurrency))
                serve.delete(name)
            finally:
                redis.stop()
    finally:
        serve.shutdown()
        ray.shutdown()
    return result


def serve_haproxy_section(args) -> dict:
    """:func:`serve_section` (default durability) in a child process with Ray Serve's
    throughput options set."""
    out = Path(tempfile.mkdtemp(prefix="loraloop-bench-")) / "haproxy.json"
    subprocess.run(
        [sys.executable, __file__, "--sections", "serve_default", "--posts", str(args.posts),
         "--concurrency", str(args.concurrency), "--json", str(out)],
        env={**os.environ, **SERVE_THROUGHPUT_ENV, "PYTHONPATH": str(ROOT)},
        check=True, timeout=600, stdout=subprocess.DEVNULL)
    return {**json.loads(out.read_text())["serve_default"]["default"],
            "env": SERVE_THROUGHPUT_ENV}


def uvicorn_section(args) -> dict:
    """The ingress app under plain uvicorn in a child process (no Ray)."""
    import httpx

    from feedback.redis_server import EmbeddedRedis
    from loraloop.tiny_model import ensure_tiny_model

    work = Path(tempfile.mkdtemp(prefix="loraloop-bench-"))
    model = str(ensure_tiny_model(work))
    redis = EmbeddedRedis(work / "redis").start()
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-uvicorn", str(port), "--model", model,
         "--redis-url", redis.url], env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the uvicorn server did not start")
            time.sleep(0.2)
        return asyncio.run(_measure_app(url, redis.url, args.posts, args.concurrency))
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(60)
        redis.stop()


async def _serve_uvicorn(model: str, redis_url: str, port: int) -> None:
    from feedback.keys import RedisKeys
    from tests.support.served import chat_stack, served_app

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with chat_stack(model, redis_url, RedisKeys(PREFIX), tenants=("default",),
                          feedback=_feedback_config()) as stack, \
            served_app(stack.app, port=port):
        await stop.wait()


def store_section(args) -> dict:
    """``FeedbackStore.record`` at ``concurrency`` in this process: no HTTP, no Ray."""
    from feedback.redis_server import EmbeddedRedis

    work = Path(tempfile.mkdtemp(prefix="loraloop-bench-"))
    with EmbeddedRedis(work / "redis") as redis:
        return _as_posts(asyncio.run(_store_posts(redis.url, args.posts, args.concurrency)))


async def _store_posts(redis_url: str, posts: int, concurrency: int) -> dict:
    from feedback.connections import async_client
    from feedback.events import Interaction, hash_user
    from feedback.keys import RedisKeys
    from feedback.store import FeedbackStore

    keys, users = RedisKeys(PREFIX), [f"user-{i}" for i in range(concurrency)]
    answers = [Interaction(tenant="default", user=hash_user(u), model="default",
                           messages=[{"role": "user", "content": "Hi"}], completion="Hello")
               for u in users]
    client = async_client(redis_url)
    for answer in answers:
        await client.set(keys.interaction(answer.id), answer.to_json(), ex=3600)
    await client.aclose()
    async with FeedbackStore(redis_url, keys, _feedback_config()) as store:

        async def rate(i: int, n: int) -> bool:
            await store.record(interaction_id=answers[i].id, user=users[i],
                               rating="up" if n % 2 else "down", address="127.0.0.1")
            return True

        await _drive(rate, 4 * concurrency, concurrency)
        return await _drive(rate, posts, concurrency)


def _serve_default(args) -> dict:
    return serve_section(args, modes=(("default", "everysec", False),))


SECTIONS = {"serve": serve_section, "serve_haproxy": serve_haproxy_section,
            "uvicorn": uvicorn_section, "store": store_section,
            "serve_default": _serve_default}  # the last: serve_haproxy's child


def main(args) -> dict:
    result: dict = {"concurrency": args.concurrency, "cores": os.cpu_count(),
                    "load_average_at_start": round(os.getloadavg()[0], 2),
                    "client": "aiohttp, in the bench process"}
    for name in args.sections.split(","):
        result[name] = SECTIONS[name](args)
    serve = result.get("serve")
    if serve:  # the names the report has always read
        result["default"], result["strict"] = (serve[m]["feedback"] for m in ("default", "strict"))
        result["default_over_http_ceiling"] = serve["default"]["feedback_over_trivial"]
        result["strict_added_p99_ms"] = round(
            result["strict"]["p99_ms"] - result["default"]["p99_ms"], 2)
        result["strict_over_default_throughput"] = round(
            result["strict"]["posts_per_s"] / result["default"]["posts_per_s"], 3)
    for other in ("serve_haproxy", "uvicorn"):
        if serve and result.get(other):
            result[f"{other}_trivial_over_serve_trivial"] = round(
                result[other]["trivial"]["per_s"] / serve["default"]["trivial"]["per_s"], 3)
            result[f"{other}_feedback_over_serve_feedback"] = round(
                result[other]["feedback"]["posts_per_s"] / result["default"]["posts_per_s"], 3)
    return result


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    parser.add_argument("--posts", type=int, default=2000,
                        help="Requests per measurement (feedback posts, and trivial requests).")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sections", default="serve,serve_haproxy,uvicorn,store")
    parser.add_argument("--serve-uvicorn", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve_uvicorn is not None:
        asyncio.run(_serve_uvicorn(arguments.model, arguments.redis_url, arguments.serve_uvicorn))
    else:
        run_script(main, lambda: arguments)
