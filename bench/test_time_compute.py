"""Does test-time compute pay on a real small model, and does handing off teach it?

On ``builtin:smollm2``, through the public HTTP API of two ``loraloop up`` stacks
(``tests/support/stack.py``; hf engine, embedded Redis, SQLite):

* **Part A, accuracy against compute** (``bench/ttc_accuracy.py``): every strategy —
  single (greedy), best-of-n with a vote (n=4, n=8), refine, the reasoning budget
  (32..128 thinking tokens), adaptive, and best-of-n with the ``scorer`` (the live
  adapter's implicit reward) — answers the ``test`` split of ``bench/data/ttc_tasks.jsonl``
  (chosen by ``bench/ttc_select.py`` where the base model is sometimes right): accuracy,
  mean compute tokens per answer, both as ratios to ``single`` on the same model.
* **Part B, handoff and distillation** (``bench/ttc_handoff.py``): a local stack that
  hands off what it is not confident about to an upstream stack that knows the made-up
  facts; per learning round, the handoff rate on the cohort's questions and on their
  never-handed-off paraphrases, accuracy on them and on general questions.

The upstream stack's live version is a quick adapter (``bench/ttc_adapter.py``: the
learner's own training code, cached between runs) taught the made-up facts *and* the
task set's ``train`` split; Part A runs on that stack (``model: base`` for the base
model, ``default`` for the adapter) before it serves as Part B's upstream.

    python bench/test_time_compute.py [--quick] [--json out.json] [--rounds 3]

Expect about 3-5 minutes with ``--quick`` and 15-25 on 2 free CPU cores for the full
run (much longer while other work shares the cores).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import bench_parser, emit  # noqa: E402
from ttc_accuracy import part_a  # noqa: E402
from ttc_adapter import Taught, cached, make_live  # noqa: E402
from ttc_handoff import local_env, part_b  # noqa: E402
from ttc_table import table  # noqa: E402
from ttc_tasks import load_tasks  # noqa: E402

from tests.support.learning import FACTS, GENERAL  # noqa: E402
from tests.support.stack import running_stack  # noqa: E402
from tests.support.tcp_proxy import TcpProxy  # noqa: E402


class BackgroundStack:
    """``running_stack`` entered on a thread, so two stacks (and training) start at once."""

    def __init__(self, data_dir: Path, env: dict[str, str], log: Path) -> None:
        self.args = (data_dir, env, log)
        self.ready, self.stop = threading.Event(), threading.Event()
        self.client, self.error = None, None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        data_dir, env, log = self.args
        try:
            with running_stack(data_dir, env=env, log=log) as client:
                client.data_dir = data_dir  # where the bench finds its Redis (ttc_client)
                self.client = client
                self.ready.set()
                self.stop.wait()
        except BaseException as exc:  # reported by client()
            self.error = exc
            self.ready.set()

    def __enter__(self) -> BackgroundStack:
        self.thread.start()
        return self

    def client_when_ready(self):
        self.ready.wait()
        if self.error is not None:
            raise RuntimeError(f"a stack failed to start: {self.error!r}") from self.error
        return self.client

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=300)


def _data_dir(root: Path, name: str, models: Path) -> Path:
    path = root / name
    path.mkdir()
    if models.is_dir():  # reuse the converted built-in model instead of converting again
        (path / "models").symlink_to(models.resolve(), target_is_directory=True)
    return path


def taught_to_upstream(train_tasks, facts) -> list[Taught]:
    """The made-up facts (each question and paraphrase, with its correction) and the task
    set's train split (with the base model's wrong greedy answer, if it was wrong)."""
    taught = [Taught(q, f.correction) for f in facts for q in (f.question, *f.paraphrases)]
    for t in train_tasks:
        wrong = None if t.base.get("greedy_right") else t.base.get("greedy_answer")
        taught.append(Taught(t.question, t.answer, wrong))
    return taught


def evenly(items: list, count: int | None) -> list:
    """``count`` items spread evenly over ``items`` (the file is ranked by how often the
    base model was right, so a prefix would be the hardest ones only)."""
    if count is None or count >= len(items):
        return items
    return [items[round(i * (len(items) - 1) / max(count - 1, 1))] for i in range(count)]


def run(args) -> dict:
    from loraloop.smollm2 import ensure_smollm2

    started = time.monotonic()
    models = Path(args.models).expanduser()
    model_dir = ensure_smollm2(models.parent)
    root = Path(tempfile.mkdtemp(prefix="loraloop-ttc-"))
    tasks = evenly(load_tasks(split="test"), args.tasks)
    train_tasks = load_tasks(split="train")  # the adapter is the same for --quick: cached
    facts, general = FACTS[:args.facts], GENERAL[:args.general]
    proxy = TcpProxy(1)  # pointed at the upstream once it is up
    local_settings = local_env(proxy.port, threshold=args.threshold, probe_n=args.probe_n)
    result: dict = {"model": "builtin:smollm2", "quick": args.quick,
                    "driven": "HTTP: two `loraloop up` stacks (tests/support/stack.py "
                              "running_stack), hf engine, defaults plus the settings below",
                    "local_settings": local_settings,
                    "upstream_settings": {"LORALOOP_LEARNER": "false"}}
    try:
        local_dir = _data_dir(root, "local", models)
        upstream_dir = _data_dir(root, "upstream", models)
        with contextlib.ExitStack() as stacks:
            local = stacks.enter_context(BackgroundStack(local_dir, local_settings,
                                                         root / "local.log")) \
                if "b" in args.parts else None
            print("the upstream's adapter (trained unless cached) ...", flush=True)
            # The upstream knows the facts the local stack's users ask (all of them for the
            # full run, the quick run's few for --quick: half the training time).
            upstream_facts = facts if args.quick else FACTS
            adapter_dir, adapter = cached(Path(args.cache).expanduser(), model_dir,
                                          taught_to_upstream(train_tasks, upstream_facts),
                                          epochs=args.epochs)
            # The cached directory stays as it is: register publishes a copy.
            adapter["version"] = make_live(upstream_dir, adapter_dir)[:12]
            adapter["taught"] = {"facts": len(upstream_facts), "train_tasks": len(train_tasks)}
            result["adapter"] = adapter
            print(f"  adapter {adapter['version']}: {adapter['examples']} examples, trained in "
                  f"{adapter['seconds']:.0f} s{' (cached)' if adapter['cached'] else ''}",
                  flush=True)
            upstream_stack = stacks.enter_context(BackgroundStack(
                upstream_dir, result["upstream_settings"], root / "upstream.log"))
            upstream = upstream_stack.client_when_ready()
            proxy.target = ("127.0.0.1", urlsplit(upstream.base_url).port)
            print(f"upstream up at {upstream.base_url}; part A on {len(tasks)} tasks ...",
                  flush=True)
            if "a" in args.parts:
                result["part_a"] = part_a(upstream, tasks, concurrency=args.concurrency,
                                          max_tokens=args.max_tokens, warm_up_tasks=train_tasks)
            if local is not None:
                local_client = local.client_when_ready()
                print(f"local up at {local_client.base_url}; part B ...", flush=True)
                result["part_b"] = part_b(local_client, proxy, upstream, facts=facts,
                                          general=general, rounds=args.rounds,
                                          probe_n=args.probe_n, threshold=args.threshold,
                                          concurrency=args.concurrency,
                                          round_timeout=args.round_timeout)
    except KeyboardInterrupt:  # stopped (Ctrl-C, or `loraloop bench`'s time limit)
        result["interrupted"] = "stopped before the end: the parts above are complete"
    finally:
        proxy.close()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="A smoke: 6 tasks, 5 facts, 10 general questions, 1 round.")
    parser.add_argument("--parts", default="a,b", help="Which parts: a (accuracy against "
                        "compute), b (handoff and distillation), or both.")
    parser.add_argument("--tasks", type=int, default=None, help="Test tasks (default: all).")
    parser.add_argument("--facts", type=int, default=None)
    parser.add_argument("--general", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="Learning rounds (default 3).")
    parser.add_argument("--threshold", type=float, default=0.67,
                        help="The local stack's fixed adaptive confidence threshold.")
    parser.add_argument("--probe-n", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4, help="Requests in flight.")
    parser.add_argument("--epochs", type=float, default=4.0,
                        help="Epochs of the upstream's adapter.")
    parser.add_argument("--cache", default="~/.local/share/loraloop/bench-cache",
                        help="Where the upstream's trained adapter is kept for later runs.")
    parser.add_argument("--round-timeout", type=float, default=600)
    parser.add_argument("--models", default="~/.local/share/loraloop/models",
                        help="Converted built-in models (converted there if missing).")
    parser.add_argument("--keep", action="store_true", help="Keep the data dirs and logs.")
    args = parser.parse_args(argv)
    quick = {"tasks": 6, "facts": 5, "general": 10, "rounds": 1}
    full = {"tasks": None, "facts": len(FACTS), "general": len(GENERAL), "rounds": 3}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


if __name__ == "__main__":
    arguments = parse_args()
    outcome = run(arguments)
    emit(outcome, arguments.json)
    print(table(outcome))
