"""Feedback posts/s at concurrency 16 through the full HTTP stack, next to the HTTP ceiling.

Every section serves the real ingress app (builtin:tiny engine, interaction sink and
FeedbackStore on an embedded Redis of its own) and drives it from this process with
aiohttp clients, each rating its own answer again and again. Next to the posts, each
measures ``GET /healthz`` served the same way (a route that does no I/O): the HTTP
ceiling, so ``feedback_over_trivial`` is the share of the ceiling the feedback path keeps.
A section's measurements are sent in ``--rounds`` chunks that alternate, so they span
the same stretch of the machine's load (on a shared machine it moves within seconds).

- ``serve``: the application as deployed (Ray Serve's HTTP proxy -> ingress replica ->
  store -> Redis), default durability (``appendfsync everysec``) and strict
  (``appendfsync always``, the store in strict mode), two apps side by side.
- ``serve_haproxy``: the same app with Ray Serve's throughput options
  (``RAY_SERVE_ENABLE_HA_PROXY=1`` and ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: HAProxy in
  place of the Python proxy, the ingress replica serving HTTP itself), in a child
  process, since Ray reads them when it starts.
- ``uvicorn``: the same ingress app (``serving.api.build_api``) under plain uvicorn in a
  child process, no Ray: what the app itself can do on this machine. With
  ``--baseline DIR`` (another checkout, e.g. ``git archive <commit>`` unpacked), that
  checkout's app is served beside it and measured in alternation: before ÷ after.
- ``store``: ``FeedbackStore.record`` called in this process, no HTTP.

The clients are aiohttp: httpx's pool costs about 1.3 ms of CPU a request here (it
peaks at 225-400 requests/s against a trivial server; aiohttp, 0.1 ms), which would be
the bench measuring its own client. The clients share the machine's cores with the
server: on 2 cores, every figure is a ceiling for that machine, not for the server.

    python bench/feedback_throughput.py [--posts 2000] [--concurrency 16] [--rounds 4]
        [--sections serve,serve_haproxy,uvicorn,store] [--baseline DIR] [--json out.json]
"""

from __future__ import annotations

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
class _Tally:
    """One kind of request's latencies, failures and wall time, over the chunks sent."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.failures = 0
        self.wall_s = 0.0

    def figures(self) -> dict:
        ordered = sorted(self.latencies)
        return {"requests": len(ordered), "failures": self.failures,
                "per_s": round(len(ordered) / self.wall_s, 1),
                "p50_ms": round(1000 * statistics.median(ordered), 2),
                "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 2)}


async def _drive(send: Callable[[int, int], Awaitable[bool]], requests: int, concurrency: int,
                 tally: _Tally | None = None) -> _Tally:
    """``requests`` calls of ``send(client, n)`` (true: answered as expected), split over
    ``concurrency`` clients that each send their next one when the last is answered."""
    tally = tally or _Tally()
    first = len(tally.latencies)

    async def client(i: int) -> None:
        for n in range(requests // concurrency):
            start = time.perf_counter()
            ok = await send(i, first // concurrency + n)
            tally.latencies.append(time.perf_counter() - start)
            tally.failures += not ok

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    tally.wall_s += time.perf_counter() - start
    return tally


async def _measure_apps(targets: dict[str, tuple[str, str]], posts: int, concurrency: int,
                        rounds: int) -> dict[str, dict]:
    """Each target's (name -> app URL, its Redis URL) trivial route and feedback posts at
    ``concurrency``: ``posts`` of each, in ``rounds`` chunks that alternate (trivial, then
    feedback, target after target), so that every figure spans the same stretch of the
    machine's load; a load that changes mid-run moves them together."""
    import aiohttp

    loads = {}
    connector = aiohttp.TCPConnector(limit=concurrency * len(targets))
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        for name, (url, redis_url) in targets.items():
            loads[name] = await _load(session, url, redis_url, concurrency)
        tallies = {name: (_Tally(), _Tally()) for name in targets}
        for _ in range(rounds):
            for name, (trivial, rate) in loads.items():
                await _drive(trivial, posts // rounds, concurrency, tallies[name][0])
                await _drive(rate, posts // rounds, concurrency, tallies[name][1])
    result = {}
    for name, (trivial, feedback) in tallies.items():
        ceiling, posted = trivial.figures(), feedback.figures()
        result[name] = {"trivial": ceiling, "feedback": _as_posts(posted),
                        "feedback_over_trivial": round(posted["per_s"] / ceiling["per_s"], 3)}
    return result


async def _load(session, url: str, redis_url: str, concurrency: int):
    """The two requests a target is measured with, warmed up: ``GET /healthz`` and a
    feedback post (each client rates its own answer: down, up, down, ... each a change)."""
    import httpx

    users = [f"user-{i}" for i in range(concurrency)]
    async with httpx.AsyncClient(timeout=120) as http:
        ids = await answer_each(http, url, users)  # one answer per user, rated many times
    await logged(redis_url, PREFIX, ids)

    async def trivial(i: int, n: int) -> bool:
        async with session.get(f"{url}/healthz") as response:
            await response.read()
            return response.status == 200

    async def rate(i: int, n: int) -> bool:
        body = {"interaction_id": ids[i], "user": users[i], "rating": "up" if n % 2 else "down"}
        async with session.post(f"{url}/v1/feedback", json=body) as response:
            await response.read()
            return response.status == 202

    for send in (trivial, rate):  # connections open, code paths warm
        await _drive(send, 4 * concurrency, concurrency)
    return trivial, rate


def _as_posts(figures: dict) -> dict:
    """Feedback figures under the names the report reads (posts, posts_per_s)."""
    return {"posts": figures["requests"], "failures": figures["failures"],
            "posts_per_s": figures["per_s"], "p50_ms": figures["p50_ms"],
            "p99_ms": figures["p99_ms"]}


# -- sections -------------------------------------------------------------------------------
def serve_section(args, modes=(("default", "everysec", False), ("strict", "always", True))
                  ) -> dict:
    """The app on Ray Serve once per durability mode, the modes measured in alternation."""
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
    servers: list[EmbeddedRedis] = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        targets = {}
        for name, fsync, strict in modes:
            servers.append(redis := EmbeddedRedis(work / name, appendfsync=fsync).start())
            config = ServeConfig(
                engine_config=EngineConfig(model=model, threads=1),
                ingress=IngressConfig(feedback=_feedback_config(strict)),
                redis_url=redis.url, redis_prefix=PREFIX)
            serve.run(build_app(config), name=name, route_prefix=f"/{name}")
            targets[name] = (f"http://127.0.0.1:{port}/{name}", redis.url)
        return asyncio.run(_measure_apps(targets, args.posts, args.concurrency, args.rounds))
    finally:
        serve.shutdown()
        ray.shutdown()
        for redis in servers:
            redis.stop()


def serve_haproxy_section(args) -> dict:
    """:func:`serve_section` (default durability) in a child process with Ray Serve's
    throughput options set."""
    out = Path(tempfile.mkdtemp(prefix="loraloop-bench-")) / "haproxy.json"
    subprocess.run(
        [sys.executable, __file__, "--sections", "serve_default", "--posts", str(args.posts),
         "--concurrency", str(args.concurrency), "--rounds", str(args.rounds),
         "--json", str(out)],
        env={**os.environ, **SERVE_THROUGHPUT_ENV, "PYTHONPATH": str(ROOT)},
        check=True, timeout=600, stdout=subprocess.DEVNULL)
    return {**json.loads(out.read_text())["serve_default"]["default"],
            "env": SERVE_THROUGHPUT_ENV}


#: The uvicorn server of a checkout (run with that checkout as its working directory and
#: first on sys.path, so that a --baseline checkout serves its own code).
_UVICORN_SERVER = """
import asyncio, signal, sys
from feedback.keys import RedisKeys
from feedback.store import FeedbackConfig
from tests.support.served import chat_stack, served_app

async def serve(port, model, redis_url):
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    limits = FeedbackConfig(user_limit=10**6, tenant_limit=10**7, address_limit=10**7)
    async with chat_stack(model, redis_url, RedisKeys(sys.argv[4]), tenants=("default",),
                          feedback=limits) as stack, served_app(stack.app, port=port):
        await stop.wait()

asyncio.run(serve(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
"""


def uvicorn_section(args) -> dict:
    """The ingress app under plain uvicorn in a child process (no Ray); with
    ``--baseline``, that checkout's app too, the two measured in alternation."""
    from feedback.redis_server import EmbeddedRedis
    from loraloop.tiny_model import ensure_tiny_model

    work = Path(tempfile.mkdtemp(prefix="loraloop-bench-"))
    model = str(ensure_tiny_model(work))
    roots = {"uvicorn": ROOT}
    if args.baseline:
        roots["uvicorn_baseline"] = Path(args.baseline).resolve()
    servers, children, targets = [], [], {}
    try:
        for name, root in roots.items():
            servers.append(redis := EmbeddedRedis(work / name).start())
            port = free_port()
            children.append(subprocess.Popen(
                [sys.executable, "-c", _UVICORN_SERVER, str(port), model, redis.url, PREFIX],
                cwd=root, env={**os.environ, "PYTHONPATH": str(root)}))
            targets[name] = (f"http://127.0.0.1:{port}", redis.url)
        for child, (url, _) in zip(children, targets.values(), strict=True):
            _wait_for(url, child)
        result = asyncio.run(_measure_apps(targets, args.posts, args.concurrency, args.rounds))
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
            child.wait(60)
        for redis in servers:
            redis.stop()
    this = result["uvicorn"]
    if args.baseline:
        this["baseline"] = {"checkout": str(roots["uvicorn_baseline"]),
                            **result["uvicorn_baseline"]}
        this["feedback_over_baseline"] = round(
            this["feedback"]["posts_per_s"] / this["baseline"]["feedback"]["posts_per_s"], 3)
        this["feedback_p99_over_baseline"] = round(
            this["feedback"]["p99_ms"] / this["baseline"]["feedback"]["p99_ms"], 3)
    return this


def _wait_for(url: str, child: subprocess.Popen, timeout_s: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if child.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the uvicorn server at {url} did not start")
        time.sleep(0.2)


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
        return (await _drive(rate, posts, concurrency)).figures()


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
    parser.add_argument("--rounds", type=int, default=4, help="Chunks each measurement is "
                        "sent in, alternating with the others of its section.")
    parser.add_argument("--sections", default="serve,serve_haproxy,uvicorn,store")
    parser.add_argument("--baseline", default=None, help="Another checkout (e.g. `git "
                        "archive <commit>` unpacked) whose app the uvicorn section also "
                        "serves and measures in alternation: before ÷ after on one machine.")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script(main, parse_args)
