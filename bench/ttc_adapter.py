"""A quick adapter for ``bench/test_time_compute.py``, trained and made live as an operator would.

The adapter is trained with the learner's own code (:func:`learner.train.train_adapter`,
its default ``anchored`` objective: the taught answers as targets, the base model kept on
anchor prompts) on what the bench says a user corrected: each prompt with its right
answer (desirable) and, where the base model's answer was wrong, that answer
(undesirable). It is then published and registered in a stack's data dir with
``loraloop adapters register``, passed through the gate by hand and promoted, before the
stack starts: ``loraloop up`` then serves it as the tenant's live version.

Training takes minutes on a CPU, so :func:`cached` keeps the trained directory under a
key of everything that shapes it (the taught examples, the training settings, the base
model's directory name) and later runs reuse it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.support.cli import run_cli


@dataclass(frozen=True)
class Taught:
    """One corrected prompt: the answer to teach, and the wrong one it replaces (if any)."""

    prompt: str
    answer: str
    wrong: str | None = None


def examples_of(taught: Iterable[Taught], tenant: str = "default") -> list:
    from learner.examples import Example

    rows = []
    for i, t in enumerate(taught):
        common = {"tenant": tenant, "user": f"bench-teacher-{i % 4}",
                  "interaction_id": f"bench-{i:04d}", "stream_id": f"0-{i + 1}",
                  "prompt": [{"role": "user", "content": t.prompt}], "source": "correction"}
        rows.append(Example(completion=t.answer, desirable=True, **common))
        if t.wrong and t.wrong.strip() and t.wrong.strip() != t.answer:
            rows.append(Example(completion=t.wrong.strip(), desirable=False, **common))
    return rows


def train(model_dir: Path, taught: list[Taught], out: Path, *, epochs: float = 6.0,
          seed: int = 0) -> dict:
    """Train the adapter into ``out``; returns what training reported."""
    from learner.train import TrainConfig, train_adapter

    started = time.monotonic()
    examples = examples_of(taught)
    result = train_adapter(base_model=str(model_dir), base_model_name="builtin:smollm2",
                           examples=examples, output_dir=out,
                           config=TrainConfig(epochs=epochs, seed=seed))
    return {"examples": len(examples), "prompts": len(taught),
            "seconds": round(time.monotonic() - started, 1),
            "method": result.metrics.get("method"), "epochs": epochs}


def cached(cache: Path, model_dir: Path, taught: list[Taught], *, epochs: float,
           seed: int = 0) -> tuple[Path, dict]:
    """The adapter for ``taught`` from ``cache``, trained there first if it is missing."""
    key = hashlib.sha256(json.dumps(
        [model_dir.name, epochs, seed, [(t.prompt, t.answer, t.wrong) for t in taught]]
    ).encode()).hexdigest()[:16]
    found = cache / f"ttc-adapter-{key}"
    report = cache / f"ttc-adapter-{key}.json"  # beside it: register publishes the directory
    if report.is_file() and found.is_dir():
        return found, {**json.loads(report.read_text()), "cached": True}
    scratch = cache / f"ttc-adapter-{key}.partial-{time.time_ns()}"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        trained = train(model_dir, taught, scratch, epochs=epochs, seed=seed)
        shutil.rmtree(found, ignore_errors=True)
        scratch.rename(found)
        report.write_text(json.dumps(trained))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return found, {**trained, "cached": False}


def make_live(data_dir: Path, adapter_dir: Path, *, tenant: str = "default",
              reason: str = "bench/test_time_compute.py") -> str:
    """Register ``adapter_dir`` in the stack's registry, pass its gate and promote it
    (with no stack running: the registry and artifacts live in the data dir)."""
    def cli(*args: str) -> dict:
        done = run_cli("adapters", *args, "--json", data_dir=data_dir, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"loraloop adapters {' '.join(args)} exited with "
                               f"{done.returncode}: {done.stderr.strip()[-2000:]}")
        return json.loads(done.stdout)

    version = cli("register", str(adapter_dir), "--tenant", tenant, "--reason", reason)["id"]
    cli("gate", version, "--passed", "--reason", f"{reason}: trained offline, not gated")
    cli("promote", version, "--reason", reason)
    return version
