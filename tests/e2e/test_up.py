"""`loraloop up` / `status` / `down` as a user runs them, with zero configuration."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys

import httpx
import psutil
import pytest

from feedback.connections import sync_client
from tests.support.cli import cli_env, run_cli
from tests.support.stack import free_port
from tests.support.waiting import wait_until


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != "zombie"
    except psutil.NoSuchProcess:
        return False


def assert_all_gone(family: list[psutil.Process]) -> None:
    """Every process of ``family`` exits (zombies count as gone)."""
    try:
        wait_until(lambda: not any(_alive(p) for p in family), what="every process exiting",
                   every_s=0.5)
    finally:
        leftovers = [p for p in family if _alive(p)]
        assert [(p.pid, p.name(), p.cmdline()[:3]) for p in leftovers] == []


@pytest.mark.parametrize("strict", [False, True], ids=["defaults", "strict-feedback"])
def test_up_serves_then_down_leaves_no_process_behind(tmp_path, data_dir, smollm2_dir, strict):
    port = free_port()
    # The session's data dir already holds the default model; everything else is default.
    settings = {"LORALOOP_HTTP_PORT": str(port)}
    if strict:  # feedback answered only once on disk: the embedded Redis fsyncs every write
        settings["LORALOOP_FEEDBACK_STRICT"] = "true"
    cli = functools.partial(run_cli, data_dir=data_dir, extra_env=settings, timeout=300)
    assert cli("status").returncode == 3  # not running yet

    up = cli("up", "--background", "--timeout", "240")  # exits 0 only once ready
    try:
        _check_the_running_stack(up, cli, port, strict)
    finally:  # a failed check must not leave a stack running for the next test
        if cli("status").returncode != 3:
            cli("down")


def _check_the_running_stack(up, cli, port, strict):
    assert up.returncode == 0, up.stdout + up.stderr  # ready within its --timeout of 240 s
    assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30).status_code == 200
    assert f"http://127.0.0.1:{port}/v1" in up.stdout and "(embedded)" in up.stdout
    # On loopback the loop closes on its own, and the start-up output says so and why.
    assert "go to a canary automatically (only this machine can reach the API)" in up.stdout

    status = cli("status", "--json")
    assert status.returncode == 0, status.stdout
    report = json.loads(status.stdout)
    pid = report["pid"]
    [replica] = report["replica_status"]
    assert replica["engine"] == "HFEngine" and replica["adapter_manager"]["routes"] == {}
    family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    assert any("redis-server" in " ".join(p.cmdline()) for p in family)
    redis = sync_client(report["redis_url"], timeout_s=10, decode=True)
    fsync = redis.config_get("appendfsync")["appendfsync"]
    redis.close()
    assert fsync == ("always" if strict else "everysec")

    answer = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        timeout=60,
        json={
            "model": "default",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
            "user": "anyone",
        },
    )
    assert answer.status_code == 200, answer.text
    rated = httpx.post(
        f"http://127.0.0.1:{port}/v1/feedback",
        timeout=30,
        json={"interaction_id": answer.json()["id"], "rating": "up", "user": "anyone"},
    )
    assert rated.status_code == 202, rated.text

    shown = []

    def read_by_the_learner() -> bool:  # the learner actor reads the feedback stream
        shown[:] = [cli("learner", "status", "--json")]
        return shown[0].returncode == 0 and json.loads(shown[0].stdout).get("backlog") == 1

    try:  # the actor imports the training stack first: slow on a busy machine
        wait_until(read_by_the_learner, what="the learner reading the rating", timeout_s=240,
                   every_s=1)
    except AssertionError as exc:
        raise AssertionError(shown[0].stdout + shown[0].stderr) from exc

    again = cli("up", "--background")
    assert again.returncode == 1 and "already running" in again.stderr

    down = cli("down")
    assert down.returncode == 0, down.stderr
    assert_all_gone(family)
    assert cli("status").returncode == 3


def test_up_in_the_foreground_stops_everything_on_ctrl_c(tmp_path, data_dir, smollm2_dir):
    """`make run` is `loraloop up` in the foreground: it says where the API is and
    what to try, and one Ctrl-C (SIGINT) stops every process it started."""
    import signal

    port = free_port()
    env = cli_env(data_dir)
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "loraloop.cli", "up", "--port", str(port)],
                              env=env, stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        def says_what_to_try() -> bool:
            assert up.poll() is None, log.read_text()
            return f"curl -si http://127.0.0.1:{port}/v1/chat/completions" in log.read_text()

        wait_until(says_what_to_try, what="`loraloop up` printing what to try", timeout_s=300,
                   every_s=1)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        # Each start-up step, as it finished, with its duration (plain lines: not a terminal).
        steps = re.findall(r"^started (.+) in \d+\.\d\d s$", log.read_text(), re.MULTILINE)
        assert steps == ["redis", "database", "model", "ray", "serve app", "learner"], steps
        family = [psutil.Process(up.pid), *psutil.Process(up.pid).children(recursive=True)]
        assert any("redis-server" in " ".join(p.cmdline()) for p in family)

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=180) == 0, log.read_text()
        assert_all_gone(family)
        assert run_cli("status", data_dir=data_dir).returncode == 3
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
