"""Abuse: does chat keep answering under a flood of hostile bodies, and how much of a round
can one attacker with invented users own?

Each section is one entry of ``SECTIONS`` (a name and a function of the parsed
arguments that returns its figures); add a section by adding an entry.

- ``flood``: the ingress app (``serving.api.build_api``) on a real engine (builtin:tiny)
  and the real feedback store and sink on an embedded Redis, served by uvicorn in a
  child process (no Ray: the flood hits the app itself, not a proxy in front of it).
  Chat p99 at concurrency 1 while idle, then while ``--flood-workers`` clients send
  huge bodies (with and without Content-Length), 900 kB prompts, corrections built to
  be slow to redact, invalid UTF-8 and 2,000-entry stop lists; the attacker is a process
  of its own at the lowest CPU priority, from other loopback addresses than the
  measuring client's (127.0.0.2 on), as if on another machine. Three floods: from one
  address (the refusal throttle, ``serving.refusals``, slows it down after its first
  refusals: flood p99 ÷ idle p99, target <= 1.5), from ``--attacker-addresses``
  addresses (each with its own allowance), and that one aimed at a neighbouring server
  on the machine: the share of the slowdown that is the machine's (two cores shared
  with the attacker's traffic), not the server's.
- ``sybil``: 200 invented users (auth off, one client address) rate answers through
  the real feedback store under the default limits; the learner's real read
  (``FeedbackSource``), join and ``curate`` with ``LearnerConfig``'s defaults make
  one round of the backlog. Reported: the attacker's share of the round alone, next
  to honest users, and as one identity (what auth reduces it to).
- ``durability``: ``--burst`` feedback posts over real HTTP in strict mode (an embedded
  Redis with appendfsync always) with Redis SIGKILLed once 30% were accepted, then
  restarted. Reported: accepted (202) against accepted and on disk (target: equal).

    python bench/abuse.py [--sections flood,sybil,durability] [--requests 120] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import emit

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
CHAT = {"model": "default", "messages": PROMPT, "max_tokens": 8, "user": "alice"}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


# -- the server (child process) -------------------------------------------------------------
async def _serve(model: str, redis_url: str, port: int) -> None:
    from feedback.keys import RedisKeys
    from tests.support.served import chat_stack, served_app

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    keys = RedisKeys("abuse")
    async with chat_stack(model, redis_url, keys, tenants=("default",)) as stack, \
            served_app(stack.app, port=port):
        await stop.wait()


# -- flood ----------------------------------------------------------------------------------
async def _chat_latencies(http, url: str, n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        response = await http.post(f"{url}/v1/chat/completions", json=CHAT)
        assert response.status_code == 200, response.text
        latencies.append(time.perf_counter() - start)
    return latencies


def _hostile_requests(interaction_ids: list[str]) -> list[tuple[str, str, dict]]:
    """(name, path, httpx request arguments) of each kind of hostile request."""
    slow_text = "%" * 7_900 + " a@b.co"  # the old e-mail pattern's worst case

    async def chunks():
        for _ in range(320):  # 5 MB without Content-Length
            yield b"x" * 16_384

    return [
        ("huge_feedback_chunked", "/v1/feedback", {"content": chunks}),
        ("huge_chat", "/v1/chat/completions", {"content": b"{" + b" " * 5_000_000}),
        ("long_prompt", "/v1/chat/completions",
         {"json": CHAT | {"messages": [{"role": "user", "content": "word " * 180_000}]}}),
        ("slow_redaction", "/v1/feedback",
         {"json": {"interaction_id": interaction_ids[0], "rating": "down", "user": "mallory",
                   "correction": slow_text, "comment": "%" * 1_990}}),
        ("invalid_utf8", "/v1/chat/completions",
         {"content": b'{"model": "default", "messages": [{"role": "user", "content": "\xff"}]}'}),
        ("huge_stop_list", "/v1/chat/completions",
         {"json": CHAT | {"stop": [f"s{i}" for i in range(2_000)]}}),
        ("max_tokens_1e9", "/v1/chat/completions", {"json": CHAT | {"max_tokens": 10**9}}),
    ]


async def _flood(clients, url: str, kinds, stop: asyncio.Event, statuses: Counter,
                 worker: int) -> None:
    i = 0
    while not stop.is_set():
        name, path, kwargs = kinds[i % len(kinds)]
        http = clients[(worker + i) % len(clients)]  # each request from the next address
        i += 1
        kwargs = {k: (v() if callable(v) else v) for k, v in kwargs.items()}
        try:
            response = await http.post(f"{url}{path}", **kwargs)
            statuses[f"{name}:{response.status_code}"] += 1
        except Exception as exc:
            statuses[f"{name}:{type(exc).__name__}"] += 1


async def _attack(url: str, interaction_id: str, workers: int, only: set[str],
                  out: Path, addresses: int) -> None:
    """The attacker's process: ``workers`` clients send hostile requests from ``addresses``
    loopback addresses (127.0.0.2 on: never the measuring client's 127.0.0.1, as from
    other machines) until SIGTERM, then the answers they got are written to ``out``."""
    import httpx

    stop, statuses = asyncio.Event(), Counter()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    kinds = [k for k in _hostile_requests([interaction_id]) if not only or k[0] in only]
    async with contextlib.AsyncExitStack() as clients:
        http = [await clients.enter_async_context(httpx.AsyncClient(
            timeout=120, transport=httpx.AsyncHTTPTransport(local_address=address)))
            for address in _attacker_addresses(addresses)]
        await asyncio.gather(*(_flood(http, url, kinds, stop, statuses, worker)
                               for worker in range(workers)))
    out.write_text(json.dumps(dict(statuses)))


def _attacker_addresses(count: int) -> list[str]:
    return [f"127.0.{(i + 2) // 256}.{(i + 2) % 256}" for i in range(count)]


async def _flooded_latencies(http, url: str, target: str, requests: int, workers: int,
                             only: str, out: Path, addresses: int = 1
                             ) -> tuple[list[float], dict]:
    """Chat latencies at ``url`` while an attacker floods ``target``, and what the attacker
    got back. The attacker is a process of its own, as on another machine: building 5 MB
    bodies must not stall the measuring client's event loop. It runs at the lowest CPU
    priority, so that on a small machine the server's cost of the flood is what is
    measured, not the attacker's cost of making it."""
    answer = await http.post(f"{target}/v1/chat/completions", json=CHAT | {"user": "mallory"})
    attacker = subprocess.Popen(
        [sys.executable, __file__, "--attack", target, "--interaction-id", answer.json()["id"],
         "--flood-workers", str(workers), "--flood-kinds", only, "--attack-out", str(out),
         "--attacker-addresses", str(addresses)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        preexec_fn=lambda: os.nice(19))
    try:
        await asyncio.sleep(3)  # the flood is under way
        latencies = await _chat_latencies(http, url, requests)
    finally:
        attacker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(attacker.wait, 120)
    return latencies, (json.loads(out.read_text()) if out.exists() else {})


async def _measure_flood(url: str, neighbour: str, requests: int, workers: int, only: str,
                         work: Path, addresses: int) -> dict:
    """Chat p99 at ``url``: idle; while this server is flooded from one address (the
    refusal throttle slows that address down after its first refusals); while it is
    flooded from ``addresses`` addresses (each gets its own allowance first); and while a
    neighbouring server on the same machine gets that flood (what the machine's shared
    cores cost, which no server can avoid)."""
    import httpx

    async with httpx.AsyncClient(timeout=120) as http:
        await _chat_latencies(http, url, 5)  # warm up
        idle = await _chat_latencies(http, url, requests)
        flooded, statuses = await _flooded_latencies(http, url, url, requests, workers, only,
                                                     work / "flood-answers.json")
        many, many_statuses = await _flooded_latencies(
            http, url, url, requests, workers, only, work / "many-answers.json", addresses)
        beside, _ = await _flooded_latencies(http, url, neighbour, requests, workers, only,
                                             work / "neighbour-answers.json", addresses)
    idle_p99 = _p99(idle)
    ratio = lambda values: round(_p99(values) / idle_p99, 3)  # noqa: E731
    return {
        "chat_requests": requests,
        "flood_workers": workers,
        "attacker": "a separate process at nice 19, same machine, from 127.0.0.2 on",
        "idle_p99_ms": round(1000 * idle_p99, 2),
        "flood_p99_ms": round(1000 * _p99(flooded), 2),
        "flood_over_idle_p99": ratio(flooded),
        "target": "<= 1.5",
        "attacker_addresses": addresses,
        "many_addresses_flood_p99_ms": round(1000 * _p99(many), 2),
        "many_addresses_flood_over_idle_p99": ratio(many),
        "neighbour_flood_p99_ms": round(1000 * _p99(beside), 2),
        "neighbour_flood_over_idle_p99": ratio(beside),
        "flood_answers": dict(sorted(statuses.items())),
        "many_addresses_flood_answers": dict(sorted(many_statuses.items())),
    }


def _start_server(model: str, redis_url: str) -> tuple[subprocess.Popen, str]:
    import httpx

    from tests.support.served import free_port

    port = free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--model", model,
         "--redis-url", redis_url],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return child, url
        except httpx.HTTPError:
            pass
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise RuntimeError("the server did not start")
        time.sleep(0.2)


def flood(args) -> dict:
    from feedback.redis_server import EmbeddedRedis
    from loraloop.tiny_model import ensure_tiny_model

    work = Path(tempfile.mkdtemp(prefix="loraloop-abuse-"))
    model = str(ensure_tiny_model(work))
    redis = EmbeddedRedis(work / "redis").start()
    servers: list[tuple[subprocess.Popen, str]] = []
    try:
        for _ in range(2):  # the measured server and its neighbour
            servers.append(_start_server(model, redis.url))
        (_, url), (_, neighbour_url) = servers
        return asyncio.run(_measure_flood(url, neighbour_url, args.requests,
                                          args.flood_workers, args.flood_kinds, work,
                                          args.attacker_addresses))
    finally:
        for child, _ in servers:
            child.send_signal(signal.SIGTERM)
            child.wait(60)
        redis.stop()


# -- sybil ----------------------------------------------------------------------------------
async def _round_share(redis_url: str, prefix: str, *, attackers: int, per_attacker: int,
                       honest: int) -> dict:
    from feedback.connections import async_client
    from feedback.errors import RateLimited
    from feedback.events import Interaction, hash_user
    from feedback.interactions import join_interactions
    from feedback.keys import RedisKeys
    from feedback.source import FeedbackSource
    from feedback.store import FeedbackConfig, FeedbackStore
    from learner.config import LearnerConfig
    from learner.curate import curate

    keys, client = RedisKeys(prefix), async_client(redis_url)
    store = FeedbackStore(client, keys, FeedbackConfig())  # the defaults
    await store.start()
    refused = 0

    async def give(user: str, n: int, address: str) -> None:
        nonlocal refused
        for i in range(n):
            question = [{"role": "user", "content": f"Question {i} from {user}?"}]
            interaction = Interaction(tenant="default", user=hash_user(user), model="default",
                                      messages=question, completion="Poisoned answer.")
            await client.set(keys.interaction(interaction.id), interaction.to_json(), ex=600)
            try:
                await store.record(interaction_id=interaction.id, user=user, rating="up",
                                   address=address)
            except RateLimited:
                refused += 1

    attacker_users = [f"sybil-{i}" for i in range(attackers)]
    for user in attacker_users:
        await give(user, per_attacker, "203.0.113.7")
    for i in range(honest):
        await give(f"honest-{i}", 2, f"198.51.100.{i + 1}")
    source = FeedbackSource(client, keys, "bench")
    await source.ensure_group()
    entries = await source.read()  # one learner read: what one round sees
    joined = await join_interactions(client, keys, entries)
    config = LearnerConfig()
    curated = curate(joined, tenant="default", per_user_cap=config.per_user_cap,
                     max_user_share=config.max_user_share, min_users=config.min_round_users,
                     holdout_fraction=config.holdout_fraction)
    attacker_hashes = {hash_user(u) for u in attacker_users}
    new = [e for e in curated.train + curated.holdout if e.source != "replay"]
    mine = sum(e.user in attacker_hashes for e in new)
    await client.delete(*[k async for k in client.scan_iter(f"{prefix}:*")])
    await client.aclose()
    return {"attackers": attackers, "events_each": per_attacker, "honest_users": honest,
            "refused_by_limits": refused, "round_examples": len(new),
            "attacker_share": round(mine / len(new), 3) if new else 0.0,
            "waiting": curated.waiting}


def sybil(args) -> dict:
    from feedback.redis_server import EmbeddedRedis

    work = Path(tempfile.mkdtemp(prefix="loraloop-sybil-"))
    redis = EmbeddedRedis(work / "redis").start()
    try:
        runs = {
            "invented_users_alone": dict(attackers=200, per_attacker=3, honest=0),
            "invented_users_with_honest": dict(attackers=200, per_attacker=1, honest=20),
            "one_identity_with_honest": dict(attackers=1, per_attacker=60, honest=20),
        }
        result = {name: asyncio.run(_round_share(redis.url, f"sybil{i}", **run))
                  for i, (name, run) in enumerate(runs.items())}
    finally:
        redis.stop()
    result["largest_share_invented_users"] = max(
        result[n]["attacker_share"] for n in ("invented_users_alone",
                                              "invented_users_with_honest"))
    return result


def durability(args) -> dict:
    from loraloop.tiny_model import ensure_tiny_model
    from tests.support.durability import strict_burst

    work = Path(tempfile.mkdtemp(prefix="loraloop-durability-"))
    model = ensure_tiny_model(work / "data")
    return asyncio.run(strict_burst(model, work, posts=args.burst,
                                    kill_after=max(1, int(args.burst * 0.3))))


SECTIONS = {"flood": flood, "sybil": sybil, "durability": durability}


def main(args) -> dict:
    return {name: SECTIONS[name](args) for name in args.sections.split(",")}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--requests", type=int, default=120,
                        help="Chat requests per phase (idle, neighbour flooded, flooded).")
    parser.add_argument("--flood-workers", type=int, default=8)
    parser.add_argument("--burst", type=int, default=1000, help="Feedback posts of the "
                        "durability section.")
    parser.add_argument("--flood-kinds", default="", help="Only these hostile requests "
                        "(names as in the report; default: all).")
    parser.add_argument("--attacker-addresses", type=int, default=64, help="Addresses the "
                        "flood also comes from in its last phase (the first comes from one).")
    parser.add_argument("--json", default=None)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--attack", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--interaction-id", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--attack-out", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve is not None:
        asyncio.run(_serve(arguments.model, arguments.redis_url, arguments.serve))
    elif arguments.attack is not None:
        asyncio.run(_attack(arguments.attack, arguments.interaction_id, arguments.flood_workers,
                            set(filter(None, arguments.flood_kinds.split(","))),
                            Path(arguments.attack_out), arguments.attacker_addresses))
    else:
        emit(main(arguments), arguments.json)
