"""`loraloop demo --quick`, run as a user runs it, is the proof that the loop closes on its
own on the defaults and the real model.

The demo starts `loraloop up` in its own data dir with nothing set but the port and an
admin token (the demo reads the registry as ops do; nobody promotes anything), and
talks to it only through the public API: users ask made-up facts the base model
cannot know, correct the wrong answers and thumb up the right ones while others keep
chatting. It exits 0 once the live version answers at least 80 % of the taught
facts with the general questions holding. Here the summary it wrote and the audit
trail are checked for how it went: base accuracy zero on the taught set, a gate,
a canary by the learner and a promotion by the canary controller on gate evidence.

How well it learns over more rounds and sets is ``bench/learning_efficacy.py``'s job.
"""

from __future__ import annotations

import json

import pytest

from tests.support.cli import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def test_the_quick_demo_teaches_the_real_model_without_an_operator(tmp_path, smollm2_dir):
    (tmp_path / "models").symlink_to(smollm2_dir.parent, target_is_directory=True)
    done = run_cli("demo", "--quick", data_dir=tmp_path, timeout=3300)
    home = tmp_path / "demo"
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:],
                                  (home / "run" / "up.log").read_text()[-4000:])
    summary = json.loads((home / "demo-summary.json").read_text())
    assert summary["plan"] == "quick" and summary["reached"] is True
    assert summary["base"]["taught_accuracy"] == 0.0  # made up: the base model knew none
    assert summary["final"]["taught_accuracy"] >= 0.8, summary["final"]
    assert summary["general_lost"] <= 1, summary
    assert summary["final"]["version"] != "base"
    assert summary["ratings"] > 0 and summary["requests"] > summary["ratings"]
    assert (home / "learning-curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "the users' corrections reached them" in done.stdout

    version = summary["final"]["version"]
    listed = json.loads(run_cli("adapters", "list", "--json", data_dir=home).stdout)
    live = next(v for v in listed if v["status"] == "live")
    assert live["id"] == version
    assert live["metrics"]["gate"].startswith("passed"), live["metrics"]["gate"]
    history = json.loads(run_cli("adapters", "history", "--tenant", "default", "--json",
                                 data_dir=home).stdout)
    moves = [(h["action"], h["actor"], h["reason"]) for h in history
             if h["version_id"] == version and h["outcome"] == "ok"]
    actions = [m[0] for m in moves]
    assert actions[:2] == ["register", "gate"], moves
    assert "canary" in actions and actions[-1] == "promote", moves
    assert moves[actions.index("canary")][1] == "learner"
    assert moves[-1][1] == "canary-controller" and "gate evidence" in moves[-1][2], moves
    assert [e["label"] for e in summary["events"]][-1] == "promoted", summary["events"]
