"""The learner's overheads, measured in one run on the tiny model and real Redis + SQLite.

- learner tokens/s fed from the stream (a whole round: read, curate, train,
  evaluate, publish, ack) ÷ a bare training loop on the same examples in memory;
- feedback-to-live: from the last feedback event of a round to the first
  answer served by the version trained on it, with its breakdown;
- serving p99 while a round trains ÷ idle: an hf engine in this process, the
  learner in a process of its own (as the Ray actor runs it), on the same machine.

The bare loop is :func:`learner.train.train_adapter` (the learner's own training: load
the base model, wrap it in LoRA, TRL's trainer, save the adapter) called directly on the
examples the round trained on, read back from its artifact: same examples, method,
epochs, optimizer, batch and sequence lengths. Both sides run under the same conditions,
so that their ratio is the cost of the round's plumbing and nothing else: each in a fresh
process of its own with the training stack imported (``preload``), each while this process
serves the same load. The round is timed from when the learner decided to run it (its
feedback read) to its report; the bare loop around ``train_adapter``. Both are timed in
wall-clock seconds and in CPU seconds of their process (``learner_over_bare_cpu``: the
ratio that other work on a shared machine disturbs least).

    python bench/learner_loop.py [--redis redis://127.0.0.1:6379/0] [--model builtin:tiny]
                                 [--data-dir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import bench_parser, emit

from tests.support.capitals import CAPITALS, ONE_TEACHER, PHRASINGS, corrections
from tests.support.ratings import record_ratings
from tests.support.redis_support import delete_prefix, new_prefix

#: Every capital asked in every phrasing, answered wrong and corrected: one round.
LESSON = corrections(CAPITALS, user_prefix="user-", phrasings=PHRASINGS,
                     answer="ours writeumbs")


async def _feedback(client, keys) -> float:
    """Record the lesson's feedback; returns when its last event was recorded."""
    await record_ratings(client, keys, LESSON)
    return time.time()  # the last feedback event


async def _p99_until(engine, done) -> float:
    """p99 latency of 4 clients asking for 8 tokens until ``done()`` is true."""
    from serving.engines import GenerationRequest, SamplingParams

    ids = engine.encode_chat([{"role": "user", "content": "Hi"}])
    latencies: list[float] = []

    async def worker():
        while not done():
            start = time.perf_counter()
            async for _ in engine.generate(GenerationRequest("b", ids, SamplingParams(8, 0.0))):
                pass
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(4)))
    ordered = sorted(latencies)
    return ordered[int(0.99 * (len(ordered) - 1))]


def _after(seconds: float):
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


def _say(line: dict) -> None:
    print(json.dumps(line, default=str), flush=True)


async def _learner_child(spec_json: str) -> None:
    """The learner in a process of its own, as the Ray actor runs it: one round, then exit."""
    from learner.actor import LearnerSpec, build_learner

    learner = build_learner(LearnerSpec.model_validate_json(spec_json))
    await learner.start()
    marks: dict[str, float] = {}
    run_round = learner.run_round

    async def timed_round(tenant, entries):  # the round starts once its feedback is read
        marks.setdefault("started", time.time())
        marks.setdefault("cpu", time.process_time())
        return await run_round(tenant, entries)

    learner.run_round = timed_round
    _say({"ready": True})
    try:
        while True:
            reports = await learner.step()
            if reports:
                _say({"started": marks["started"], "finished": time.time(),
                      "cpu_s": time.process_time() - marks["cpu"], "report": reports[0]})
                return
    finally:
        await learner.close()


def _bare_child(job_json: str) -> None:
    """The bare loop in a process of its own, its imports warm as the learner's are after
    ``Learner.start``: train when told to, then exit."""
    from learner.examples import load_from_adapter
    from learner.train import TrainConfig, preload, train_adapter

    job = json.loads(job_json)
    preload()
    examples = load_from_adapter(job["examples_from"])
    config = TrainConfig.model_validate(job["train"])
    _say({"ready": True})
    sys.stdin.readline()  # go
    started, cpu = time.perf_counter(), time.process_time()
    result = train_adapter(base_model=job["model"], base_model_name=job["model_name"],
                           examples=examples, output_dir=job["output_dir"], config=config)
    _say({"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
          "metrics": result.metrics})


async def _child(*args: str, stdin=None):
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdin=stdin, stdout=asyncio.subprocess.PIPE)
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
            min_new_examples=len(LESSON),
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
    children = []
    try:
        learner = await _child("--child", spec.model_dump_json())
        children.append(learner)
        idle_p99 = await _p99_until(engine, _after(5.0))  # the learner polls, idle
        last_feedback = await _feedback(client, keys)
        finished = asyncio.create_task(learner.stdout.readline())
        busy_p99 = await _p99_until(engine, finished.done)  # serving while the round runs
        outcome = json.loads(await finished)
        report, round_started = outcome["report"], outcome["started"]
        round_s = outcome["finished"] - round_started
        await manager.reconcile()  # what a replica does on the notification
        version = report["version"]
        assert manager.routes["acme"].live == version, report
        first_answer = time.time()

        # The same examples, in memory, through the bare training loop, under the same load.
        with sessions() as session:
            info = get_version(session, version_id=version)
        artifact = ArtifactStore(work / "artifacts").load(
            info.artifact_uri, sha256=info.artifact_sha256
        )
        job = {"model": model, "model_name": args.model, "examples_from": str(artifact),
               "train": train.model_dump(mode="json"), "output_dir": str(work / "bare")}
        bare = await _child("--bare-child", json.dumps(job), stdin=asyncio.subprocess.PIPE)
        children.append(bare)
        bare.stdin.write(b"go\n")
        await bare.stdin.drain()
        bare_done = asyncio.create_task(bare.stdout.readline())
        bare_p99 = await _p99_until(engine, bare_done.done)  # the same load as the round's
        bare_outcome = json.loads(await bare_done)
        bare_s = bare_outcome["seconds"]
        from learner.examples import load_from_adapter

        tokens = train.epochs * _trained_tokens(model, load_from_adapter(artifact),
                                                report["metrics"]["method"])
    finally:
        for child in children:
            await _stop(child)
        await engine.shutdown()
        await client.aclose()
        delete_prefix(args.redis, keys.prefix)
        shutil.rmtree(work, ignore_errors=True)
    timings = report["timings"]
    return {
        "model": args.model,
        "feedback_events": len(LESSON),
        "trained_tokens": tokens,
        "learner_tokens_per_s": round(tokens / round_s, 1),
        "bare_loop_tokens_per_s": round(tokens / bare_s, 1),
        "learner_over_bare": round(bare_s / round_s, 3),
        # CPU seconds of each side's process: what the ratio is when other work on the
        # machine does not slow one side more than the other.
        "learner_over_bare_cpu": round(bare_outcome["cpu_s"] / outcome["cpu_s"], 3),
        "feedback_to_live_s": round(first_answer - last_feedback, 2),
        "round_s": round(round_s, 3),
        "round_cpu_s": round(outcome["cpu_s"], 3),
        "breakdown_s": {
            "wait_and_read": round(round_started - last_feedback + timings["read_s"], 3),
            **{k.removesuffix("_s"): round(v, 3) for k, v in timings.items() if k != "read_s"},
            "replica_load_and_switch": round(first_answer - outcome["finished"], 3),
        },
        "train_breakdown_s": _train_breakdown(report["metrics"]),
        "bare_train_s": round(bare_s, 3),
        "bare_train_cpu_s": round(bare_outcome["cpu_s"], 3),
        "bare_train_breakdown_s": _train_breakdown(bare_outcome["metrics"]),
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
        asyncio.run(_learner_child(arguments.child))
    elif arguments.bare_child:
        _bare_child(arguments.bare_child)
    else:
        emit(asyncio.run(run(arguments)), arguments.json)
