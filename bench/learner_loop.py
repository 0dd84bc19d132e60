"""The learner's overheads, measured in one run on the tiny model and real Redis + SQLite.

- learner tokens/s fed from the stream (a whole round: read, curate, train,
  evaluate, publish) ÷ a bare training loop on the same examples in memory;
- feedback-to-live: from the last feedback event of a round to the first
  answer served by the version trained on it, with its breakdown;
- serving p99 while a round trains ÷ idle: an hf engine in this process, the
  learner in a process of its own (as the Ray actor runs it), on the same machine.

    python bench/learner_loop.py [--redis redis://127.0.0.1:6379/0] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


async def _learner_child(spec_json: str) -> None:
    """The learner in a process of its own, as the Ray actor runs it: one round, then exit."""
    from learner.actor import LearnerSpec, build_learner

    learner = build_learner(LearnerSpec.model_validate_json(spec_json))
    await learner.start()
    print(json.dumps({"ready": True}), flush=True)
    try:
        while True:
            started = time.time()
            reports = await learner.step()
            if reports:
                line = {"started": started, "finished": time.time(), "report": reports[0]}
                print(json.dumps(line, default=str), flush=True)
                return
    finally:
        await learner.close()


async def run(args) -> dict:
    from feedback.connections import async_client
    from feedback.keys import RedisKeys
    from learner.actor import LearnerSpec
    from learner.examples import load_from_adapter
    from learner.gate import GateConfig
    from learner.loop import LearnerConfig
    from learner.scoring import load_tokenizer, render
    from learner.train import TrainConfig, preload, train_adapter
    from loraloop.tiny_model import ensure_tiny_model
    from serving.adapters import AdapterManager
    from serving.engines import EngineConfig
    from serving.engines.hf import HFEngine
    from serving.registry_view import RegistryView
    from storage import ArtifactStore, get_version
    from storage.db import open_registry

    work = Path(tempfile.mkdtemp(prefix="loraloop-bench-"))
    model = str(ensure_tiny_model(work))
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
        base_model_name="builtin:tiny",
        data_dir=str(work),
        config=LearnerConfig(
            **ONE_TEACHER,
            min_new_examples=len(LESSON),
            train=train,
            gate=GateConfig(auto_promote="live", threads=1),
        ),
    )
    engine = HFEngine(EngineConfig(model=model, model_name="builtin:tiny", threads=1))
    await engine.start()
    view = RegistryView(
        database_url=database, artifacts_location=str(work / "artifacts"), cache_dir=work / "cache"
    )
    manager = AdapterManager(engine, view, max_resident=4)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        spec.model_dump_json(),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert json.loads(await child.stdout.readline()) == {"ready": True}
        idle_p99 = await _p99_until(engine, _after(5.0))  # the learner polls, idle
        last_feedback = await _feedback(client, keys)
        finished = asyncio.create_task(child.stdout.readline())
        busy_p99 = await _p99_until(engine, finished.done)  # serving while the round runs
        outcome = json.loads(await finished)
        report, round_started = outcome["report"], outcome["started"]
        round_s = outcome["finished"] - round_started
        await manager.reconcile()  # what a replica does on the notification
        version = report["version"]
        assert manager.routes["acme"].live == version, report
        first_answer = time.time()

        # The same examples, in memory, through the bare training loop (its imports
        # warm, as the learner's are after Learner.start).
        preload()
        with sessions() as session:
            info = get_version(session, version_id=version)
        artifact = ArtifactStore(work / "artifacts").load(
            info.artifact_uri, sha256=info.artifact_sha256
        )
        examples = load_from_adapter(artifact)
        tokenizer = load_tokenizer(model)
        tokens = sum(len(tokenizer("".join(render(tokenizer, e))).input_ids) for e in examples)
        tokens *= train.epochs
        bare_started = time.perf_counter()
        train_adapter(
            base_model=model,
            base_model_name="builtin:tiny",
            examples=examples,
            output_dir=work / "bare",
            config=train,
        )
        bare_s = time.perf_counter() - bare_started
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
        await engine.shutdown()
        await client.aclose()
        delete_prefix(args.redis, keys.prefix)
    timings = report["timings"]
    return {
        "feedback_events": len(LESSON),
        "trained_tokens": tokens,
        "learner_tokens_per_s": round(tokens / round_s, 1),
        "bare_loop_tokens_per_s": round(tokens / bare_s, 1),
        "learner_over_bare": round(bare_s / round_s, 3),
        "feedback_to_live_s": round(first_answer - last_feedback, 2),
        "breakdown_s": {
            "wait_and_read": round(round_started - last_feedback + timings["read_s"], 3),
            **{k.removesuffix("_s"): round(v, 3) for k, v in timings.items() if k != "read_s"},
            "replica_load_and_switch": round(first_answer - outcome["finished"], 3),
        },
        "train_breakdown_s": {
            k.removesuffix("_seconds"): report["metrics"][k]
            for k in ("prepare_seconds", "fit_seconds", "save_seconds")
        },
        "bare_train_s": round(bare_s, 3),
        "serving_p99_idle_ms": round(1000 * idle_p99, 1),
        "serving_p99_training_ms": round(1000 * busy_p99, 1),
        "serving_p99_training_over_idle": round(busy_p99 / idle_p99, 2),
    }


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        asyncio.run(_learner_child(arguments.child))
        sys.exit()
    emit(asyncio.run(run(arguments)), arguments.json)
