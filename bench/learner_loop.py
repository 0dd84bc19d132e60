"""The learner's overheads, measured in one run on the tiny model and real Redis + SQLite.

- learner tokens/s fed from the stream (a whole round: read, curate, train,
  evaluate, publish) ÷ a bare training loop on the same examples in memory;
- feedback-to-live: from the last feedback event of a round to the first
  answer served by the version trained on it, with its breakdown;
- serving p99 while a round trains ÷ idle (an hf engine on the same machine).

    python bench/learner_loop.py [--redis redis://127.0.0.1:6379/0] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FACTS = [
    ("France", "Paris."),
    ("Italy", "Rome."),
    ("Japan", "Tokyo."),
    ("Spain", "Madrid."),
    ("Germany", "Berlin."),
    ("Egypt", "Cairo."),
    ("Peru", "Lima."),
    ("Kenya", "Nairobi."),
]
PHRASINGS = [
    "What is the capital of {}?",
    "Capital of {}?",
    "Tell me the capital of {}.",
    "Which city is the capital of {}?",
]


async def _feedback(client, keys) -> float:
    from feedback.events import Interaction, hash_user
    from feedback.store import FeedbackConfig, FeedbackStore

    store = FeedbackStore(client, keys, FeedbackConfig(user_limit=10**6))
    await store.start()
    for country, answer in FACTS:
        for phrasing in PHRASINGS:
            user = f"user-{country}"
            interaction = Interaction(
                tenant="acme",
                user=hash_user(user),
                model="acme",
                messages=[{"role": "user", "content": phrasing.format(country)}],
                completion="ours writeumbs",
            )
            await client.set(keys.interaction(interaction.id), interaction.to_json(), ex=600)
            await store.record(
                interaction_id=interaction.id, user=user, rating="down", correction=answer
            )
    return time.time()  # the last feedback event


async def _p99_under(engine, seconds: float) -> float:
    from serving.engines import GenerationRequest, SamplingParams

    ids = engine.encode_chat([{"role": "user", "content": "Hi"}])
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker():
        while time.monotonic() < deadline:
            start = time.perf_counter()
            async for _ in engine.generate(GenerationRequest("b", ids, SamplingParams(8, 0.0))):
                pass
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(4)))
    ordered = sorted(latencies)
    return ordered[int(0.99 * (len(ordered) - 1))]


async def run(args) -> dict:
    from feedback.keys import RedisKeys
    from feedback.sink import async_client
    from learner.gate import GateConfig
    from learner.loop import Learner, LearnerConfig
    from learner.scoring import load_tokenizer, render
    from learner.train import TrainConfig, train_adapter
    from loraloop.tiny_model import ensure_tiny_model
    from serving.adapters import AdapterManager
    from serving.engines import EngineConfig
    from serving.engines.hf import HFEngine
    from serving.registry_view import RegistryView
    from storage import ArtifactStore
    from storage.db import open_registry

    work = Path(tempfile.mkdtemp(prefix="loraloop-bench-"))
    model = str(ensure_tiny_model(work))
    keys = RedisKeys(f"bench-{secrets.token_hex(4)}")
    client = async_client(args.redis, timeout_s=10)
    database = f"sqlite:///{work / 'registry.db'}"
    sessions = open_registry(database)
    train = TrainConfig(method="sft", epochs=6, learning_rate=1e-2, rank=8, threads=1)
    learner = Learner(
        redis_url=args.redis,
        keys=keys,
        sessions=sessions,
        artifacts=ArtifactStore(work / "artifacts"),
        base_model=model,
        base_model_name="builtin:tiny",
        work_dir=work / "learner",
        config=LearnerConfig(
            min_new_examples=len(FACTS) * len(PHRASINGS),
            train=train,
            gate=GateConfig(min_accuracy=0.5, auto_promote="live", threads=1),
        ),
    )
    engine = HFEngine(EngineConfig(model=model, model_name="builtin:tiny", threads=1))
    await engine.start()
    view = RegistryView(
        database_url=database, artifacts_location=str(work / "artifacts"), cache_dir=work / "cache"
    )
    manager = AdapterManager(engine, view, max_resident=4)
    try:
        idle_p99 = await _p99_under(engine, 5.0)
        await learner.start()
        last_feedback = await _feedback(client, keys)
        round_started = time.time()
        training = asyncio.create_task(learner.step())
        busy_p99 = await _p99_under(engine, 5.0)  # serving while the round trains
        [report] = await training
        round_s = time.time() - round_started
        await manager.reconcile()  # what a replica does on the notification
        first_answer = time.time()
        version = report["version"]
        assert manager.routes["acme"].live == version, report

        # The same examples, in memory, through the bare training loop.
        tokenizer = load_tokenizer(model)
        examples = [e for e in learner_examples(work, version)]
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
        await learner.close()
        await engine.shutdown()
        async for key in client.scan_iter(match=f"{keys.prefix}:*"):
            await client.delete(key)
        await client.aclose()
    timings = report["timings"]
    return {
        "feedback_events": len(FACTS) * len(PHRASINGS),
        "trained_tokens": tokens,
        "learner_tokens_per_s": round(tokens / round_s, 1),
        "bare_loop_tokens_per_s": round(tokens / bare_s, 1),
        "learner_over_bare": round(bare_s / round_s, 3),
        "feedback_to_live_s": round(first_answer - last_feedback, 2),
        "breakdown_s": {
            "wait_and_read": round(round_started - last_feedback + timings["read_s"], 3),
            **{k.removesuffix("_s"): round(v, 3) for k, v in timings.items() if k != "read_s"},
            "replica_load_and_switch": round(first_answer - round_started - round_s, 3),
        },
        "serving_p99_idle_ms": round(1000 * idle_p99, 1),
        "serving_p99_training_ms": round(1000 * busy_p99, 1),
        "serving_p99_training_over_idle": round(busy_p99 / idle_p99, 2),
    }


def learner_examples(work: Path, version: str):
    from learner.examples import load_jsonl

    return load_jsonl(work / "learner" / "datasets" / f"{version}.jsonl")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    outcome = asyncio.run(run(arguments))
    print(json.dumps(outcome, indent=2))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(outcome, indent=2) + "\n")
