"""The benchmark suite that ``loraloop bench`` runs: which scripts, with which options, and
how one is run and its outcome collected.

Each script runs as a user runs it, ``python bench/<name>.py [options] --json FILE``, in a
process group of its own; what it wrote to ``FILE`` is its result. A script that fails,
or runs past its time limit (the group is interrupted, then killed), is an outcome like
any other: the suite goes on with the next one.

The default options are the short version of each bench (the two that run
``builtin:smollm2`` take minutes that way instead of tens of minutes, and
``vs_vllm_serve`` runs ``builtin:tiny`` instead); ``full`` runs each with its own defaults.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
#: How much of a failed bench's stderr (and stdout) the report keeps.
TAIL_CHARS = 2000


@dataclass(frozen=True)
class Bench:
    """One script of ``bench/`` as the suite runs it."""

    name: str
    about: str
    short: tuple[str, ...] = ()  # options of the default run
    full: tuple[str, ...] | None = None  # options with --full (None: the same as short)
    timeout_s: float = 600
    full_timeout_s: float | None = None
    needs: str | None = None  # a module the bench imports; missing: skipped, not failed

    def options(self, full: bool) -> tuple[str, ...]:
        return self.short if not full or self.full is None else self.full

    def limit_s(self, full: bool) -> float:
        return self.full_timeout_s if full and self.full_timeout_s else self.timeout_s


SUITE: tuple[Bench, ...] = (
    Bench("detokenize", "detokenizer µs/token, full re-decode ÷ incremental", timeout_s=180),
    Bench("feedback_ops", "per-operation cost of logging and feedback, Redis up and down",
          timeout_s=180),
    Bench("engine_throughput", "hf tokens/s at c1 and c8, adapter ÷ base", ("--engine", "hf"),
          timeout_s=300),
    Bench("compare_engines", "vllm ÷ hf tokens/s, adapter ÷ base on each", ("--rounds", "2"),
          (), timeout_s=420, full_timeout_s=1200, needs="vllm"),
    Bench("serving_latency", "full stack ÷ direct engine p50/p99, logging on ÷ off, one_hop "
          "÷ split",
          timeout_s=420),
    Bench("vs_vllm_serve", "loraloop up ÷ vllm serve and ÷ bare transformers: tokens/s, "
          "TTFT, end to end", ("--model", "builtin:tiny", "--rounds", "2"), (),
          timeout_s=600, full_timeout_s=3600),
    Bench("feedback_throughput", "feedback posts/s and p99 at c16 ÷ a no-I/O route (the "
          "HTTP ceiling), strict ÷ default; Serve's proxy, its HAProxy mode, plain uvicorn",
          ("--posts", "1000"), (), timeout_s=420),
    Bench("swap_latency", "promote time, p99 while swapping ÷ steady", timeout_s=420),
    Bench("learner_loop", "learner ÷ bare loop, feedback-to-live, p99 training ÷ idle",
          timeout_s=600),
    Bench("abuse", "chat p99 under a flood ÷ idle, sybil share, durability",
          ("--requests", "120", "--burst", "400"), (), timeout_s=420),
    Bench("learning_efficacy", "builtin:smollm2 learns taught facts, keeps general ones",
          ("--rounds", "1", "--facts", "6", "--general", "12", "--round-timeout", "480"), (),
          timeout_s=900, full_timeout_s=2700),
    Bench("test_time_compute", "builtin:smollm2 accuracy against compute; handoff rate",
          ("--quick",), (), timeout_s=900, full_timeout_s=3600),
)


@dataclass
class Outcome:
    """What one bench run came to: ``status`` is ok, failed, timed out or skipped."""

    name: str
    about: str
    status: str
    seconds: float
    command: list[str]
    result: dict | None = None
    returncode: int | None = None
    tail: str = ""  # the end of stderr (and stdout) when it did not succeed

    def as_dict(self) -> dict:
        return asdict(self)


def select(only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[Bench]:
    """The suite's benches, in order, narrowed by ``only`` and ``skip`` (names); an unknown
    name raises ``ValueError`` naming the known ones."""
    known = {b.name for b in SUITE}
    unknown = sorted({name for name in (*only, *skip) if name not in known})
    if unknown:
        raise ValueError(f"unknown bench {', '.join(unknown)}; the benches are: "
                         f"{', '.join(b.name for b in SUITE)}")
    return [b for b in SUITE if (not only or b.name in only) and b.name not in skip]


def _tail(*texts: str) -> str:
    joined = "\n".join(t.strip() for t in texts if t and t.strip())
    return joined[-TAIL_CHARS:]


def _stop(child: subprocess.Popen) -> None:
    """Interrupt the bench's process group (it stops its stacks), then kill what is left."""
    # The grace covers a bench stopping its `loraloop up` stacks (tests/support/stack.py
    # gives each 120 s): they run in sessions of their own, out of reach of the kill.
    for sig, wait_s in ((signal.SIGINT, 150), (signal.SIGKILL, 30)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_bench(bench: Bench, *, full: bool = False, work: Path | None = None) -> Outcome:
    """Run one bench script to its end (or its time limit) and collect its JSON."""
    script = BENCH_DIR / f"{bench.name}.py"
    work = Path(work or tempfile.mkdtemp(prefix="loraloop-bench-suite-"))
    json_path, out_path, err_path = (work / f"{bench.name}.{ext}" for ext in
                                     ("json", "stdout", "stderr"))
    command = [sys.executable, str(script), *bench.options(full), "--json", str(json_path)]
    shown = ["python", f"bench/{script.name}", *bench.options(full)]
    started = time.monotonic()
    if bench.needs and importlib.util.find_spec(bench.needs) is None:
        return Outcome(bench.name, bench.about, "skipped", 0.0, shown,
                       tail=f"needs {bench.needs}, which is not installed")
    env = dict(os.environ)
    root = str(BENCH_DIR.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        child = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=err,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            child.wait(timeout=bench.limit_s(full))
            status = "ok" if child.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            _stop(child)
            status = "timed out"
    seconds = round(time.monotonic() - started, 1)
    result = None
    try:  # a bench stopped at its limit may still have written what it had measured
        result = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        if status == "ok":
            status = "failed"
            err_path.write_text(err_path.read_text() + f"\nno JSON result: {exc}")
    outcome = Outcome(bench.name, bench.about, status, seconds, shown, result,
                      child.returncode)
    if status != "ok":
        outcome.tail = _tail(err_path.read_text(errors="replace"),
                             out_path.read_text(errors="replace")[-500:])
        if status == "timed out":
            outcome.tail += f"\n(stopped after its limit of {bench.limit_s(full):.0f} s)"
    return outcome


def run_suite(benches: Iterable[Bench], *, full: bool = False,
              on_start: Callable[[Bench], None] = lambda b: None,
              on_done: Callable[[Outcome], None] = lambda o: None) -> list[Outcome]:
    """Run ``benches`` one after the other (they would skew each other side by side)."""
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="loraloop-bench-suite-") as work:
        for bench in benches:
            on_start(bench)
            outcome = run_bench(bench, full=full, work=Path(work))
            outcomes.append(outcome)
            on_done(outcome)
    return outcomes
