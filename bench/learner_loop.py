"""The learner's overheads, measured in one run on the tiny model and real Redis + SQLite.

- learner tokens/s fed from the stream (a whole round: read, curate, train,
  evaluate, publish, ack) ÷ a bare training loop on the same examples in memory;
- feedback-to-live: from the last feedback event of a round to the first
  answer served by the version trained on it, with its breakdown;
- serving p99 while a round trains ÷ idle: an hf engine in this process, the
  learner in a process of its own (as the Ray actor runs it), on the same machine.

The bare loop is :func:`learner.train.train_adapter` (the learner's own training: load
the base model, wrap it in LoRA, TRL's trainer, save the adapter) called directly on the
examples a round trained on, read back from its artifact, warm-started from the round's
parent when the round was: same examples, method, epochs, optimizer, batch and sequence
lengths. Both sides run under the same conditions, so that their ratio is the cost of the
round's plumbing and nothing else: each in a process of its own with the training stack
imported (``preload``), each while this process serves the same load. ``--rounds`` rounds
(the first from the base model, the next warm-started from the live version, with replay)
alternate with as many bare runs, so both processes are cold for the first and warm after
it, and the machine's other work averages out over the pairs. A round is timed from when
the learner decided to run it (its feedback read) to its report; the bare loop around
``train_adapter``; both in wall-clock seconds and in CPU seconds of their process
(``learner_over_bare_cpu``: the ratio that other work on a shared machine disturbs least).

    python bench/learner_loop.py [--redis redis://127.0.0.1:6379/0] [--rounds 3]
                                 [--model builtin:tiny] [--data-dir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import bench_parser, emit

from tests.support.capitals import CAPITALS, ONE_TEACHER, PHRASINGS, corrections
from tests.support.ratings import record_ratings
from tests.support.redis_support import delete_prefix, new_prefix


def lesson(round_: int) -> list:
    """Every capital asked in every phrasing, answered wrong and corrected: one round's
    feedback (from the round's own users)."""
    return corrections(CAPITALS, user_prefix=f"user{round_}-", phrasings=PHRASINGS,
                       answer="ours writeumbs")


async def _p99_until(engine, done, latencies: list[float] | None = None) -> float:
    """p99 latency of 4 clients asking for 8 tokens until ``done()`` is true (appended to
    ``latencies`` too)."""
    from serving.engines import GenerationRequest, SamplingParams

    ids = engine.encode_chat([{"role": "user", "content": "Hi"}])
    latencies = [] if latencies is None else latencies

    async def worker():
        while not done():
            start = time.perf_counter()
            async for _ in engine.generate(GenerationRequest("b", ids, SamplingParams(8, 0.0))):
                pass
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(4)))
    return _p99(latencies)


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[int(0.99 * (len(ordered) - 1))]


def _after(seconds: float):
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


def _say(line: dict) -> None:
    print(json.dumps(line, default=str), flush=True)


async def _learner_child(spec_json: str, rounds: int) -> None:
    """The learner in a process of its own, as the Ray actor runs it: ``rounds`` rounds."""
    from learner.actor import LearnerSpec, build_learner

    learner = build_learner(LearnerSpec.model_validate_json(spec_json))
    await learner.start()
    marks: dict[str, float] = {}
    run_round = learner.run_round

    async def timed_round(tenant, entries):  # the round starts once its feedback is read
        marks.update(started=time.time(), cpu=time.process_time())
        return await run_round(tenant, entries)

    learner.run_round = timed_round
    _say({"ready": True})
    try:
        for _ in range(rounds):
            reports = []
            while not reports:
                reports = await learner.step()
            _say({"started": marks["started"], "finished": time.time(),
                  "cpu_s": time.process_time() - marks["cpu"], "report": reports[0]})
        # Exit only when the bench is done: tearing down this process takes a second of
        # CPU, which the last bare run would have to share.
        await asyncio.to_thread(sys.stdin.read)
    finally:
        await learner.close()


def _bare_child() -> None:
    """The bare loop in a process of its own, its imports warm as the learner's are after
    ``Learner.start``: one ``train_adapter`` per job line on stdin."""
    from learner.examples import load_from_adapter
    from learner.train import TrainConfig, preload, train_adapter

    preload()
    _say({"ready": True})
    for line in sys.stdin:
        job = json.loads(line)
        examples = load_from_adapter(job["examples_from"])
        config = TrainConfig.model_validate(job["train"])
        started, cpu = time.perf_counter(), time.process_time()
        result = train_adapter(base_model=job["model"], base_model_name=job["model_name"],
                               examples=examples, output_dir=job["output_dir"], config=config,
                               parent_adapter=job["parent"])
        _say({"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
              "metrics": result.metrics})


async def _child(*args: str):
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, limit=2**24)
    line = await child.stdout.readline()
    if json.loads(line or "{}") != {"ready": True}:
        await child.wait()
        raise RuntimeError(f"{args[0]} child did not start (exit {child.returncode})")
    return child


async def _stop(child) -> None:
    if child.returncode is None:
        child.kill()
    await child.wait()


def _trained_tokens(model: str, examples, method: str) -> int:
    """Tokens of one pass over the rows ``train_adapter`` trains (SFT: the desirable)."""
    from learner.scoring import load_tokenizer, render

    tokenizer = load_tokenizer(model)
    rows = [e for e in examples if e.desirable] if method == "sft" else examples
    return sum(len(tokenizer("".join(render(tokenizer, e)), add_special_tokens=False).input_ids)
               for e in rows)


async def run(args) -> dict:
    from feedback.connections import async_client
    from feedback.keys import RedisKeys
    from learner.actor import LearnerSpec
    from learner.examples import load_from_adapter
    from learner.gate import GateConfig
    from learner.loop import LearnerConfig
    from learner.train import TrainConfig
    from loraloop.models import resolve_model
    from serving.adapters import AdapterManager
    from serving.engines import EngineConfig
    from serving.engines.hf import HFEngine
    from serving.registry_view import RegistryView
    from storage import ArtifactStore, get_version
    from storage.db import open_registry

    work = Path(tempfile.mkdtemp(prefix="loraloop-bench-"))
    model = resolve_model(args.model, Path(args.data_dir).expanduser() if args.data_dir else work)
    keys = RedisKeys(new_prefix("bench"))
    client = async_client(args.redis, timeout_s=10)
    database = f"sqlite:///{work / 'registry.db'}"
    sessions = open_registry(database)
    store = ArtifactStore(work / "artifacts")
    train = TrainConfig(method="sft", epochs=6, learning_rate=1e-2, rank=8, threads=1)
    spec = LearnerSpec(
        redis_url=args.redis,
        redis_prefix=keys.prefix,
        database_url=database,
        artifacts_location=str(work / "artifacts"),
        base_model=model,
        base_model_name=args.model,
        data_dir=str(work),
        config=LearnerConfig(
            **ONE_TEACHER,
            min_new_examples=len(lesson(0)),
            train=train,
            gate=GateConfig(auto_promote="live", threads=1),
        ),
    )
    engine = HFEngine(EngineConfig(model=model, model_name=args.model, threads=1))
    await engine.start()
    view = RegistryView(
        database_url=database, artifacts_location=str(work / "artifacts"), cache_dir=work / "cache"
    )
    manager = AdapterManager(engine, view, max_resident=4)

    def artifact(version_id: str) -> Path:
        with sessions() as session:
            info = get_version(session, version_id=version_id)
        return store.load(info.artifact_uri, sha256=info.artifact_sha256)

    children, pairs, training, bare_training = [], [], [], []
    try:
        learner = await _child("--child", spec.model_dump_json(), "--rounds", str(args.rounds))
        bare = await _child("--bare-child", "-")
        children += [learner, bare]
        idle_p99 = await _p99_until(engine, _after(5.0))  # the learner polls, idle
        for round_ in range(args.rounds):
            await record_ratings(client, keys, lesson(round_))
            last_feedback = time.time()  # the round's last feedback event
            finished = asyncio.create_task(learner.stdout.readline())
            await _p99_until(engine, finished.done, training)  # serving while the round runs
            outcome = json.loads(await finished)
            report = outcome["report"]
            if round_ == 0:
                first, first_feedback = outcome, last_feedback
                await manager.reconcile()  # what a replica does on the notification
                route = manager.routes.get("acme")
                # A round its gate rejects never goes live: no feedback-to-live figure then.
                first_answer = time.time() if route and route.live == report["version"] \
                    else None
            # The same examples, in memory, through the bare loop, under the same load.
            parent = report["metrics"]["trained_over"]
            if parent == "base" or report["metrics"].get("warm_start_skipped"):
                parent = None
            job = {"model": model, "model_name": args.model,
                   "examples_from": str(artifact(report["version"])),
                   "parent": str(artifact(parent)) if parent else None,
                   "train": train.model_dump(mode="json"),
                   "output_dir": str(work / f"bare{round_}")}
            bare.stdin.write((json.dumps(job) + "\n").encode())
            await bare.stdin.drain()
            bare_done = asyncio.create_task(bare.stdout.readline())
            await _p99_until(engine, bare_done.done, bare_training)  # the round's load
            bare_outcome = json.loads(await bare_done)
            tokens = train.epochs * _trained_tokens(
                model, load_from_adapter(job["examples_from"]), report["metrics"]["method"])
            pairs.append((outcome, bare_outcome, tokens))
    finally:
        for child in children:
            await _stop(child)
        await engine.shutdown()
        await client.aclose()
        delete_prefix(args.redis, keys.prefix)
        shutil.rmtree(work, ignore_errors=True)
    return _result(args, pairs, first, first_feedback, first_answer,
                   idle_p99, _p99(training), _p99(bare_training))


def _result(args, pairs, first, first_feedback, first_answer, idle_p99, busy_p99,
            bare_p99) -> dict:
    round_s = [o["finished"] - o["started"] for o, _, _ in pairs]
    bare_s = [b["seconds"] for _, b, _ in pairs]
    round_cpu = [o["cpu_s"] for o, _, _ in pairs]
    bare_cpu = [b["cpu_s"] for _, b, _ in pairs]
    tokens = sum(t for _, _, t in pairs)
    timings, metrics = first["report"]["timings"], first["report"]["metrics"]
    return {
        "model": args.model,
        "rounds": len(pairs),
        "feedback_events_per_round": len(lesson(0)),
        "trained_tokens": tokens,
        "learner_tokens_per_s": round(tokens / sum(round_s), 1),
        "bare_loop_tokens_per_s": round(tokens / sum(bare_s), 1),
        "learner_over_bare": round(sum(bare_s) / sum(round_s), 3),
        # CPU seconds of each side's process: what the ratio is when other work on the
        # machine does not slow one side more than the other.
        "learner_over_bare_cpu": round(sum(bare_cpu) / sum(round_cpu), 3),
        "per_round": [
            {"round_s": round(r, 3), "bare_s": round(b, 3), "over_bare": round(b / r, 3),
             "round_cpu_s": round(rc, 3), "bare_cpu_s": round(bc, 3),
             "over_bare_cpu": round(bc / rc, 3), "outcome": o["report"]["outcome"][:40],
             "breakdown_s": {k.removesuffix("_s"): round(v, 3)
                             for k, v in o["report"]["timings"].items()},
             "train_breakdown_s": _train_breakdown(o["report"]["metrics"]),
             "bare_train_breakdown_s": _train_breakdown(bo["metrics"])}
            for r, b, rc, bc, (o, bo, _) in zip(round_s, bare_s, round_cpu, bare_cpu, pairs,
                                                 strict=True)],
        "over_bare_median": round(statistics.median(b / r for r, b in zip(round_s, bare_s,
                                                                          strict=True)), 3),
        "feedback_to_live_s": round(first_answer - first_feedback, 2) if first_answer else None,
        "breakdown_s": {  # the first round's
            "wait_and_read": round(first["started"] - first_feedback + timings["read_s"], 3),
            **{k.removesuffix("_s"): round(v, 3) for k, v in timings.items() if k != "read_s"},
            "replica_load_and_switch": round(first_answer - first["finished"], 3)
        if first_answer else None,
        },
        "train_breakdown_s": _train_breakdown(metrics),
        "bare_train_s": round(pairs[0][1]["seconds"], 3),  # the first round's
        "serving_p99_idle_ms": round(1000 * idle_p99, 1),
        "serving_p99_training_ms": round(1000 * busy_p99, 1),
        "serving_p99_bare_training_ms": round(1000 * bare_p99, 1),
        "serving_p99_training_over_idle": round(busy_p99 / idle_p99, 2),
    }


def _train_breakdown(metrics: dict) -> dict:
    return {k.removesuffix("_seconds"): metrics[k]
            for k in ("prepare_seconds", "fit_seconds", "save_seconds") if k in metrics}


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each paired with a "
                        "bare run (the first from the base model, the next warm-started)")
    parser.add_argument("--model", default="builtin:tiny",
                        help="builtin:tiny (default) or builtin:smollm2")
    parser.add_argument("--data-dir", default=None, help="where built-in models are built "
                        "(or found); default: the run's scratch directory")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bare-child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        asyncio.run(_learner_child(arguments.child, arguments.rounds))
    elif arguments.bare_child:
        _bare_child()
    else:
        emit(asyncio.run(run(arguments)), arguments.json)
