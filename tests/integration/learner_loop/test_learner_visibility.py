"""What the learner tells ops: the next trigger, its recent rounds with their
feedback-to-live time, and training progress (learner/triggers.py, learner/round_log.py,
learner/progress.py), read back where ops read them: the status file, Redis and
`loraloop learner status`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC

import pytest

from learner.actor import run_forever
from learner.gate import GateConfig
from learner.round_log import stream_time_s
from learner.train import TrainConfig
from storage import history, promote
from storage.db import open_registry
from tests.support.capitals import thumbs
from tests.support.cli import cli_env
from tests.support.ratings import record_ratings
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="function")

#: A burst is 8 events; 4 start a round only after an hour's pause, and the interval is
#: two hours: in this test only the burst starts a round. The gate does not promote.
ROUNDS = {"min_new_examples": 8, "min_round_examples": 4, "settle_s": 3600.0,
          "max_interval_s": 7200.0, "holdout_fraction": 0.25,
          "gate": GateConfig(enforce=False, auto_promote="off", threads=1),
          "train": TrainConfig(epochs=1, learning_rate=5e-3, threads=1, rank=4)}


async def newest_event_s(client, keys) -> float:
    [(stream_id, _)] = await client.xrevrange(keys.feedback_stream, count=1)
    return stream_time_s(stream_id.decode() if isinstance(stream_id, bytes) else stream_id)


async def test_the_status_says_what_starts_the_next_round_and_how_long_feedback_took_to_go_live(
    client, keys, redis_url, learner_spec
):
    spec = learner_spec(**ROUNDS).model_copy(update={"live_check_interval_s": 0.5})
    stop, holder = threading.Event(), {}
    thread = threading.Thread(target=lambda: asyncio.run(run_forever(spec, stop, holder)))
    thread.start()

    def status() -> dict:
        try:
            return json.loads(spec.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def trigger(reason: str, backlog: int):
        found = status().get("next_trigger") or {}
        return found if (found.get("reason"), found.get("backlog")) == (reason, backlog) else None

    try:
        idle = wait_until(lambda: trigger("waiting_for_feedback", 0),
                          what="an idle learner waiting for feedback", timeout_s=300)
        assert idle["at"] is None and idle["needed"] == 8

        await record_ratings(client, keys, thumbs(["early0", "early1"]))  # 4 events
        settle = wait_until(lambda: trigger("settle", 4), what="4 events waiting to settle",
                            timeout_s=120)
        assert 0 < settle["in_s"] <= 3600
        assert settle["needed"] == 8 and settle["settle_needed"] == 4
        assert settle["at"] == pytest.approx(status()["updated_at"] + settle["in_s"], abs=60)

        await record_ratings(client, keys, thumbs(["late0", "late1"], offset=2))  # a burst
        newest = await newest_event_s(client, keys)
        [row] = wait_until(lambda: status().get("recent_rounds"), what="a finished round",
                           timeout_s=600)
        assert row["version"] and row["outcome"] == "gated", row
        assert row["events"] == 8 and row["newest_feedback_at"] == pytest.approx(newest)
        assert {"read_s", "curate_s", "train_s", "evaluate_s"} <= set(row["timings"])
        assert row["feedback_to_live_s"] is None and not row["settled"]  # not live yet
        assert trigger("waiting_for_feedback", 0)  # the round took every event

        # An operator promotes it later; the learner finds when in the audit trail.
        sessions = open_registry(spec.database_url)
        with sessions() as session:
            promote(session, version_id=row["version"], actor="ops-test", reason="looks good")
            [went_live] = [e for e in history(session, version_id=row["version"])
                           if e.action == "promote" and e.outcome == "ok"]
        [row] = wait_until(lambda: [r for r in status()["recent_rounds"] if r["settled"]],
                           what="the round's feedback-to-live time", timeout_s=120)
        at = went_live.at if went_live.at.tzinfo else went_live.at.replace(tzinfo=UTC)
        assert row["live_at"] == pytest.approx(at.timestamp(), abs=1e-3)
        assert row["feedback_to_live_s"] == pytest.approx(row["live_at"] - newest, abs=1e-2)
        assert row["feedback_to_live_s"] > 0

        redis_status = json.loads(await client.get(keys.learner_status))
        assert redis_status["recent_rounds"][0]["feedback_to_live_s"] is not None

        env = {**os.environ, "LORALOOP_REDIS_URL": redis_url,
               "LORALOOP_REDIS_PREFIX": keys.prefix, "LORALOOP_DATA_DIR": spec.data_dir,
               "PYTHONPATH": os.getcwd()}
        shown = subprocess.run([sys.executable, "-m", "loraloop.cli", "learner", "status"],
                               env=env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown
        assert "next round" in shown.stdout and "new feedback" in shown.stdout, shown.stdout
        assert "feedback-to-live" in shown.stdout and row["version"][:12] in shown.stdout
    finally:
        stop.set()
        thread.join(timeout=300)
    assert not thread.is_alive()


async def test_a_round_reports_its_training_steps(client, keys, new_learner):
    await record_ratings(client, keys, thumbs([f"user{i}" for i in range(4)]))
    learner = new_learner(**{k: v for k, v in ROUNDS.items() if k != "gate"})
    seen: list[dict] = []

    async def on_status(status: dict) -> None:
        if status.get("round"):
            seen.append(dict(status["round"]))

    learner.on_status = on_status
    await learner.start()
    try:
        [report] = await learner.step()
    finally:
        await learner.close()
    training = [r for r in seen if r["phase"] == "training" and "step" in r]
    assert training, seen
    last = training[-1]
    assert last["step"] == last["steps"] == report["metrics"]["steps"] > 0
    assert [r["step"] for r in training] == sorted(r["step"] for r in training)


async def test_learner_run_prints_each_phase_its_training_steps_and_the_outcome(
        client, keys, redis_url, tmp_path):
    """`loraloop learner run` off a terminal: plain lines a script can read."""
    env = cli_env(tmp_path, {
        "LORALOOP_MODEL": "builtin:tiny", "LORALOOP_REDIS_URL": redis_url,
        "LORALOOP_REDIS_PREFIX": keys.prefix, "LORALOOP_LEARNER_AUTO_PROMOTE": "off",
        "LORALOOP_LEARNER_CONFIG__MIN_NEW_EXAMPLES": "8",
        "LORALOOP_LEARNER_CONFIG__GATE__ENFORCE": "false",
        "LORALOOP_LEARNER_CONFIG__GATE__THREADS": "1",
        "LORALOOP_LEARNER_CONFIG__TRAIN__EPOCHS": "1",
        "LORALOOP_LEARNER_CONFIG__TRAIN__THREADS": "1",
        "LORALOOP_LEARNER_CONFIG__TRAIN__RANK": "4", "PYTHONPATH": os.getcwd()})
    child = subprocess.Popen([sys.executable, "-m", "loraloop.cli", "learner", "run"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any(line.startswith("learner reading") for line in lines),
                   what="the learner starting", timeout_s=300)
        await record_ratings(client, keys, thumbs([f"user{i}" for i in range(4)]))
        done = wait_until(lambda: [line for line in lines if line.startswith("round 1 for")],
                          what="the round's outcome line", timeout_s=600)
    finally:
        child.send_signal(signal.SIGINT)
        child.wait(timeout=120)
        reader.join(timeout=30)
    out = "".join(lines)
    for phase in ("reading", "training", "gate", "publishing"):
        assert f"round for acme: {phase}\n" in out, out
    assert re.search(r"round for acme: training step (\d+)/\1\n", out), out
    assert re.match(r"round 1 for acme: [0-9a-f]{12} gated in [\d.]+ s \(read ", done[0]), done
