"""Part B of ``bench/test_time_compute.py``: handoff and distillation over learning rounds.

Two stacks, both ``loraloop up`` on ``builtin:smollm2`` driven through their HTTP APIs:
the *upstream*, whose live version was taught the made-up facts of
``tests/support/learning.py`` (it knows them), and the *local* stack, which hands
requests it is not confident about to the upstream (``LORALOOP_UPSTREAM_URL``; the only
escalation its adaptive policy may choose is ``handoff``, at a fixed confidence
threshold). Handed-off answers become distillation entries; its learner trains, gates
and promotes on them. The local stack reaches the upstream through a TCP proxy the bench
can cut.

Each round, on the local stack's live version (the base model in round 0):

1. **Paraphrases** (never handed off *through*): with the proxy cut, every paraphrase is
   asked with ``adaptive``; a request whose policy decided to hand off (``decision`` is
   ``handoff``) is answered locally (``fallback: error``), so it is counted without its
   answer becoming training data (only answers actually handed off are distilled). This
   keeps the paraphrases a measure of generalisation.
2. **Greedy** answers of the live version (``single``, never handed off) to the cohort
   questions, the paraphrases and the general questions (nothing regressed).
3. **The cohort pass**: with the proxy restored, one user per fact asks its question
   with ``adaptive``. What is handed off is the upstream's answer, and trains the next
   round. Then the bench waits for the learner's next version to go live.
"""

from __future__ import annotations

import json
import time

from ttc_client import Ask, ask_all, confidences, spread

from tests.support.learning import FACTS, GENERAL

PROBE_USER = "bench-probe"


def adaptive(probe_n: int) -> dict:
    return {"strategy": "adaptive", "n": probe_n}


def local_env(proxy_port: int, *, threshold: float, probe_n: int) -> dict[str, str]:
    """The local stack's settings: defaults, plus an upstream and a fixed-threshold policy
    that can only hand off."""
    return {
        "LORALOOP_UPSTREAM_URL": f"http://127.0.0.1:{proxy_port}/v1",
        "LORALOOP_UPSTREAM_MODEL": "default",
        # A fixed threshold (no target share): the cohort's handoff rate can then fall.
        "LORALOOP_COMPUTE_CONFIG__ADAPTIVE": json.dumps({
            "arms": ["handoff"], "confidence_threshold": threshold, "probe_n": probe_n,
            "target_handoff_rate": None}),
        # The cut proxy must not open the circuit: an open circuit takes the handoff arm
        # away and the paraphrases would read "stop" instead of the decision to hand off.
        "LORALOOP_UPSTREAM_CONFIG__BREAKER_FAILURES": "100000",
        # A busy CPU can hold the upstream's first token back; a timeout would be counted
        # as a fallback, not a handoff.
        "LORALOOP_UPSTREAM_CONFIG__FIRST_TOKEN_TIMEOUT_S": "120",
        "LORALOOP_UPSTREAM_CONFIG__TOTAL_TIMEOUT_S": "300",
    }


def upstream_check(upstream, facts, *, concurrency: int) -> dict:
    """What the upstream's live version answers, greedy, to the questions and paraphrases."""
    questions = [f.question for f in facts]
    paraphrases = [(f, p) for f in facts for p in f.paraphrases]
    replies = ask_all(upstream, [Ask(q, PROBE_USER) for q in questions] +
                      [Ask(p, PROBE_USER) for _, p in paraphrases], concurrency)
    asked = list(facts) + [f for f, _ in paraphrases]
    right = [f.is_right(r.text) for f, r in zip(asked, replies, strict=True)]
    return {"version": replies[0].version[:12],
            "questions": round(sum(right[:len(facts)]) / len(facts), 3),
            "paraphrases": round(sum(right[len(facts):]) / len(paraphrases), 3),
            "missed": [q for q, ok in zip(questions, right, strict=False) if not ok]}


def _share(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 3) if values else 0.0


def measure(local, proxy, facts, general, *, probe_n: int, concurrency: int,
            threshold: float) -> dict:
    """Steps 1 and 2 of a round (see the module docstring)."""
    paraphrases = [(f, p) for f in facts for p in f.paraphrases]
    proxy.cut()
    try:
        replies = ask_all(local, [Ask(p, PROBE_USER, loraloop=adaptive(probe_n))
                                  for _, p in paraphrases], concurrency)
    finally:
        proxy.restore()
    leaked = sum(r.handed_off for r in replies)  # must be 0: the proxy was cut
    para = {"asked": len(replies), "handoff_rate": _share(r.decision == "handoff"
                                                          for r in replies),
            "local_accuracy": _share(f.is_right(r.text)
                                     for (f, _), r in zip(paraphrases, replies, strict=True)),
            "fallbacks": sorted({r.summary.get("fallback") for r in replies} - {None}),
            "mean_compute_tokens": round(sum(r.compute_tokens for r in replies) / len(replies),
                                         1),
            "handed_off_through_cut": leaked,
            "confidence": spread(confidences(local.data_dir, replies), threshold)}
    greedy_jobs = ([Ask(f.question, PROBE_USER) for f in facts]
                   + [Ask(p, PROBE_USER) for _, p in paraphrases]
                   + [Ask(k.question, PROBE_USER) for k in general])
    greedy = ask_all(local, greedy_jobs, concurrency)
    n_f, n_p = len(facts), len(paraphrases)
    cohort_g, para_g, general_g = greedy[:n_f], greedy[n_f:n_f + n_p], greedy[n_f + n_p:]
    general_right = [k.is_right(r.text) for k, r in zip(general, general_g, strict=True)]
    return {
        "version": (greedy[0].version or "base")[:12],
        "paraphrases_adaptive": para,
        "greedy": {
            "cohort": _share(f.is_right(r.text) for f, r in zip(facts, cohort_g, strict=True)),
            "paraphrases": _share(f.is_right(r.text)
                                  for (f, _), r in zip(paraphrases, para_g, strict=True)),
            "general": _share(general_right),
            "general_lost": [k.question for k, ok in zip(general, general_right, strict=True)
                             if not ok],
        },
    }


def cohort_pass(local, facts, round_: int, *, probe_n: int, concurrency: int,
                threshold: float) -> dict:
    """Step 3: each fact's question, asked by a cohort user, with adaptive."""
    replies = ask_all(local, [Ask(f.question, f"cohort-{round_}-{i}", loraloop=adaptive(probe_n))
                              for i, f in enumerate(facts)], concurrency)
    handed = [r.handed_off for r in replies]
    return {
        "asked": len(replies), "handed_off": sum(handed), "handoff_rate": _share(handed),
        "decided_handoff_rate": _share(r.decision == "handoff" for r in replies),
        "fallbacks": sorted({r.summary.get("fallback") for r in replies} - {None}),
        "served_accuracy": _share(f.is_right(r.text)
                                  for f, r in zip(facts, replies, strict=True)),
        "mean_compute_tokens": round(sum(r.compute_tokens for r in replies) / len(replies), 1),
        "handed_off_questions": [f.question for f, h in zip(facts, handed, strict=True) if h],
        "confidence": spread(confidences(local.data_dir, replies), threshold),
    }


def _version_summary(local, version_id: str) -> dict:
    version = next((v for v in local.versions() if v["id"] == version_id), None)
    if version is None:
        return {}
    metrics = version.get("metrics") or {}
    keep = ("gate", "seconds", "fit_seconds", "gate_seconds", "anchor_seconds", "counts",
            "handoff_slice", "handoff_check", "handoff_agree_candidate",
            "handoff_agree_reference", "method")
    return {k: metrics[k] for k in keep if k in metrics}


def part_b(local, proxy, upstream, *, facts=FACTS, general=GENERAL, rounds: int,
           probe_n: int, threshold: float, concurrency: int, round_timeout: float) -> dict:
    started = time.monotonic()
    check = upstream_check(upstream, facts, concurrency=concurrency)
    print(f"  B upstream knows {check['questions']:.0%} of the questions, "
          f"{check['paraphrases']:.0%} of the paraphrases", flush=True)
    history, live = [], None
    for round_ in range(rounds + 1):
        entry = {"round": round_, **measure(local, proxy, facts, general, probe_n=probe_n,
                                            concurrency=concurrency, threshold=threshold)}
        seen = {v["id"] for v in local.versions()}
        entry["cohort"] = cohort_pass(local, facts, round_, probe_n=probe_n,
                                      concurrency=concurrency, threshold=threshold)
        history.append(entry)
        print(f"  B round {round_} ({entry['version']}): cohort handoff "
              f"{entry['cohort']['handoff_rate']:.0%}, paraphrases "
              f"{entry['paraphrases_adaptive']['handoff_rate']:.0%}; greedy cohort "
              f"{entry['greedy']['cohort']:.0%}, paraphrases {entry['greedy']['paraphrases']:.0%}"
              f", general {entry['greedy']['general']:.0%}", flush=True)
        if round_ == rounds:
            break
        if entry["cohort"]["handed_off"] == 0:
            entry["learning"] = {"outcome": "nothing handed off: nothing to distil"}
            break
        clock = time.monotonic()
        outcome = local.wait_for_round(live, seen, timeout_s=round_timeout)
        learning = {"outcome": outcome[0] if outcome else "no version in time",
                    "seconds": round(time.monotonic() - clock, 1)}
        if outcome is not None:
            learning.update(version=outcome[1][:12], **_version_summary(local, outcome[1]))
            if outcome[0] == "live":
                live = outcome[1]
        entry["learning"] = learning
        print(f"  B learning after round {round_}: {learning['outcome']} in "
              f"{learning['seconds']:.0f} s", flush=True)
    first, last = history[0], history[-1]
    return {
        "threshold": threshold, "probe_n": probe_n, "facts": len(facts),
        "paraphrases": sum(len(f.paraphrases) for f in facts), "general": len(general),
        "upstream": check,
        "rounds": history,
        "baseline": "round 0: the local base model, this run",
        "cohort_handoff_rate": {"from": first["cohort"]["handoff_rate"],
                                "to": last["cohort"]["handoff_rate"]},
        "paraphrase_handoff_rate": {"from": first["paraphrases_adaptive"]["handoff_rate"],
                                    "to": last["paraphrases_adaptive"]["handoff_rate"]},
        "general_greedy": {"from": first["greedy"]["general"], "to": last["greedy"]["general"],
                           "lost_vs_round_0": sorted(set(last["greedy"]["general_lost"])
                                                     - set(first["greedy"]["general_lost"]))},
        "seconds": round(time.monotonic() - started, 1),
    }
