"""The `loraloop` command line, run as a user would run it."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import run_cli


def test_chat_answers_a_prompt_with_the_default_model(data_dir, smollm2_dir):
    first = run_cli(
        "chat", "What is the capital of France?", "--max-tokens", "12", data_dir=data_dir
    )
    assert first.returncode == 0, first.stderr
    assert "Paris" in first.stdout
    again = run_cli(
        "chat", "What is the capital of France?", "--max-tokens", "12", data_dir=data_dir
    )
    assert again.stdout == first.stdout  # greedy by default


def test_chat_with_an_adapter_and_with_a_bad_one(data_dir, tiny_model_dir, make_adapter, tmp_path):
    tiny = {"LORALOOP_MODEL": "builtin:tiny"}
    base = run_cli("chat", "Hi", "--max-tokens", "12", data_dir=data_dir, extra_env=tiny)
    adapted = run_cli(
        "chat",
        "Hi",
        "--max-tokens",
        "12",
        "--adapter",
        str(make_adapter("a", seed=1)),
        data_dir=data_dir,
        extra_env=tiny,
    )
    assert base.returncode == 0, base.stderr
    assert adapted.returncode == 0, adapted.stderr
    assert adapted.stdout != base.stdout
    bad = run_cli("chat", "Hi", "--adapter", str(tmp_path), data_dir=data_dir, extra_env=tiny)
    assert bad.returncode == 1
    assert "adapter_config.json is missing" in bad.stderr


def test_config_prints_json_and_hides_the_admin_token(tmp_path):
    out = run_cli(
        "config", "--json", data_dir=tmp_path, extra_env={"LORALOOP_ADMIN_TOKEN": "s3cret"}
    )
    assert out.returncode == 0, out.stderr
    values = json.loads(out.stdout)
    assert values["data_dir"] == str(tmp_path)
    assert values["admin_token"] == "***"
    assert "s3cret" not in out.stdout


@pytest.mark.parametrize("command", [["config"], ["model", "build"]])
def test_invalid_configuration_exits_1_naming_the_setting(tmp_path, command):
    out = run_cli(*command, data_dir=tmp_path, extra_env={"LORALOOP_ENGINE": "tensorrt"})
    assert out.returncode == 1
    assert "engine" in out.stderr and "tensorrt" in out.stderr


def test_nothing_running_is_exit_3_and_the_help_lists_every_exit_code(tmp_path):
    from loraloop.render import EXIT_NOT_RUNNING

    for command in (["status"], ["learner", "status"]):
        out = run_cli(*command, data_dir=tmp_path, extra_env={"LORALOOP_REDIS_URL": ""})
        assert out.returncode == EXIT_NOT_RUNNING == 3, (command, out.stdout, out.stderr)
    text = " ".join(run_cli("--help", data_dir=tmp_path).stdout.split())
    assert "3 not running, 4 not found, 5 conflict" in text
