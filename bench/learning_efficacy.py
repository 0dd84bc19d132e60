"""Does loraloop make a real model better from its users, without making it worse?

Runs `loraloop up` on the defaults (``builtin:smollm2``, embedded Redis, SQLite,
the hf engine) in a fresh data dir and talks to it only through the public API.
Simulated users ask the made-up facts of ``tests/support/learning.py``; a wrong
answer gets a thumbs-down with the correction, a right one a thumbs-up. After
each burst of feedback the bench waits for the learner to put a new version live
(the gate, then a canary the controller promotes), then measures with greedy
answers of that version:

- accuracy on the taught questions, per round, and feedback events per fact;
- accuracy on two paraphrases per fact that are never taught (generalisation);
- accuracy on 39 general questions the base model answers right (no regression;
  none of them is in the gate's regression set or the learner's anchors);
- the time from the last feedback event of a round to its version being live.

    python bench/learning_efficacy.py [--rounds 4] [--env LORALOOP_LEARNER_METHOD=kto] \\
        [--facts N] [--general N] [--json out.json]

``--env`` runs an alternative configuration (repeatable). Expect 10-20 minutes
on 2 CPU cores; ``--rounds 1 --facts 6 --general 12`` (what ``loraloop bench`` runs
unless ``--full``) is a short version of the same measurement.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import bench_parser, run_script  # noqa: E402

from tests.support.learning import FACTS, GENERAL  # noqa: E402
from tests.support.stack import running_stack  # noqa: E402

PROBE_USER = "bench-probe"  # asks the measuring questions; never rates anything


def measure(client, model: str, facts=FACTS, general=GENERAL) -> dict:
    """Greedy accuracy of ``model`` (a tenant or tenant@version) on the three sets."""
    def right(items, question_of):
        return [item.is_right(client.ask(question_of(item), user=PROBE_USER, model=model).text)
                for item in items]

    taught = right(facts, lambda f: f.question)
    paraphrases = [f.is_right(client.ask(p, user=PROBE_USER, model=model).text)
                   for f in facts for p in f.paraphrases]
    kept = right(general, lambda k: k.question)
    return {
        "taught": sum(taught) / len(taught),
        "paraphrases": sum(paraphrases) / len(paraphrases),
        "general": sum(kept) / len(kept),
        "general_lost": [k.question for k, ok in zip(general, kept, strict=True) if not ok],
    }


def wait_addressable(client, model: str, timeout_s: float = 60) -> None:
    """Wait until ``model`` (tenant@version) answers. The ingress's catalog of versions is
    a copy refreshed every few seconds (serving/route_snapshot.py), so a version that has
    just gone live may be refused with a 404 when pinned, for a moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ask(FACTS[0].question, user=PROBE_USER, model=model, max_tokens=1)
            return
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(1)


def teach(client, round_: int, facts=FACTS) -> tuple[int, float, float]:
    """Each fact is asked by a new user who rates the answer; returns the number of events
    and the times of the first and the last."""
    events, first = 0, None
    for i, fact in enumerate(facts):
        user = f"user-{round_}-{i}"
        answer = client.ask(fact.question, user=user)
        if fact.is_right(answer.text):
            client.rate(answer, user=user, up=True)
        else:
            client.rate(answer, user=user, up=False, correction=fact.correction)
        first = first or time.monotonic()
        events += 1
    return events, first, time.monotonic()


def run(args) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="loraloop-efficacy-"))
    models = Path(args.models).expanduser()
    if models.is_dir():  # reuse converted built-in models instead of converting again
        (data_dir / "models").symlink_to(models.resolve(), target_is_directory=True)
    env = dict(item.split("=", 1) for item in args.env)
    facts, general = FACTS[:args.facts], GENERAL[:args.general]
    rounds: list[dict] = []
    base, audit, interrupted = None, [], None
    started = time.monotonic()
    try:
        with running_stack(data_dir, env=env, log=Path(args.log) if args.log else None) as client:
            base = measure(client, "default", facts, general)
            live, events, first_feedback = None, 0, None
            for round_ in range(1, args.rounds + 1):
                seen = {v["id"] for v in client.versions()}
                sent, first_of_round, last_feedback = teach(client, round_, facts)
                first_feedback = first_feedback or first_of_round
                events += sent
                outcome = client.wait_for_round(live, seen, timeout_s=args.round_timeout)
                entry: dict = {"round": round_, "events": events,
                               "events_per_fact": events / len(facts)}
                if outcome is None or outcome[0] != "live":
                    entry["outcome"] = outcome[0] if outcome else "no version in time"
                    entry["versions"] = [(v["id"][:12], v["status"], v["metrics"].get("gate"))
                                         for v in client.versions() if v["id"] not in seen]
                    rounds.append(entry)
                    continue
                new = outcome[1]
                entry["feedback_to_live_s"] = round(time.monotonic() - last_feedback, 1)
                entry["first_feedback_to_live_min"] = round(
                    (time.monotonic() - first_feedback) / 60, 2)
                live = new
                version = next(v for v in client.versions() if v["id"] == live)
                wait_addressable(client, f"default@{live}")
                measured = measure(client, f"default@{live}", facts, general)
                entry.update(version=live[:12], **measured,
                             gate=version["metrics"].get("gate"),
                             attempt_gates=version["metrics"].get("attempt_gates"),
                             round_timings={k: round(v, 1) for k, v in version["metrics"].items()
                                            if k in ("seconds", "anchor_seconds", "fit_seconds",
                                                     "gate_seconds")})
                rounds.append(entry)
                if entry["taught"] >= args.stop_at:
                    break
            audit = [(a["action"], a["outcome"], a.get("to_status"), a["actor"])
                     for a in client.audit()]
    except KeyboardInterrupt:  # stopped (Ctrl-C, or `loraloop bench`'s time limit)
        interrupted = "stopped before the end: the rounds above are complete"
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    final = next((r for r in reversed(rounds) if "taught" in r), None)
    return {
        "model": "builtin:smollm2",
        "config": env or "defaults",
        "facts": len(facts), "general_questions": len(general),
        "base": base,
        "rounds": rounds,
        "final": None if final is None else {
            "taught": final["taught"], "paraphrases": final["paraphrases"],
            "general": final["general"],
            "general_lost_vs_base": len(set(final["general_lost"]) - set(base["general_lost"])),
            "events_per_fact": final["events_per_fact"],
            "feedback_to_live_s": final["feedback_to_live_s"],
            "first_feedback_to_live_min": final["first_feedback_to_live_min"],
        },
        "audit_moves": audit[-12:],
        **({"interrupted": interrupted} if interrupted else {}),
        "seconds": round(time.monotonic() - started, 1),
    }


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=4, help="Most teaching rounds.")
    parser.add_argument("--facts", type=int, default=None,
                        help="Teach only the first N made-up facts (default: all).")
    parser.add_argument("--general", type=int, default=None,
                        help="Measure only the first N general questions (default: all).")
    parser.add_argument("--stop-at", type=float, default=0.9,
                        help="Stop once the live version answers this share of taught facts.")
    parser.add_argument("--round-timeout", type=float, default=600,
                        help="Seconds to wait for a round's version to go live.")
    parser.add_argument("--env", action="append", default=[], metavar="LORALOOP_X=value",
                        help="A setting for an alternative configuration (repeatable).")
    parser.add_argument("--models", default="~/.local/share/loraloop/models",
                        help="Converted built-in models to reuse, if the directory exists.")
    parser.add_argument("--log", default=None, help="Where `loraloop up` writes its output.")
    parser.add_argument("--keep", action="store_true", help="Keep the data dir.")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script(run, parse_args)
