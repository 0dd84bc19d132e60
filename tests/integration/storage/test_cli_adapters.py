"""`loraloop adapters ...` end to end: real database, artifact store and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from loraloop.cli_adapters import (
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_USAGE,
    app,
)


@pytest.fixture
def cli(registry_url, tmp_path, monkeypatch):
    """``cli(*args)`` runs a command with Settings pointing at the test database."""
    env = {
        "LORALOOP_DATABASE_URL": registry_url,
        "LORALOOP_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        "LORALOOP_DATA_DIR": str(tmp_path / "data"),
        "LORALOOP_REDIS_URL": "",
    }
    monkeypatch.chdir(tmp_path)  # no stray .env file
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == code, (args, result.exit_code, result.output, result.exception)
        return result

    run.env = env
    return run


def _json(result):
    return json.loads(result.stdout)


def test_ops_lifecycle_from_the_cli(cli, tenant, adapter_dir):
    t = ("--tenant", tenant)
    ids = []
    for seed in range(3):
        out = _json(
            cli(
                "register",
                str(adapter_dir(f"a{seed}", seed=seed)),
                *t,
                "--metrics",
                '{"loss": 0.5}',
                "--json",
            )
        )
        assert out["status"] == "candidate" and out["base_model"] == "builtin:tiny"
        ids.append(out["id"])
    a, b, c = ids
    for vid in ids:
        cli("gate", vid[:10], "--passed", "--metrics", '{"win_rate": 0.61}')

    assert "live -> " + a in cli("promote", a[:8], "--reason", "first").stdout
    assert _json(cli("canary", b, "--fraction", "0.2", *t, "--json"))["fraction"] == 0.2
    listed = {v["id"]: v for v in _json(cli("list", *t, "--json"))}
    assert listed[a]["aliases"] == ["live"] and listed[b]["aliases"] == ["canary(0.2)"]
    assert listed[c]["status"] == "gated"
    table = cli("list", *t).stdout
    assert a[:12] in table and "canary(0.2)" in table

    cli("promote", b, "--expect-live", a)
    cli("promote", c, "--expect-live", a, code=EXIT_CONFLICT)  # b won
    back = _json(cli("rollback", *t, "--reason", "regression", "--json"))
    assert back["version_id"] == a
    assert _json(cli("show", b, "--json"))["status"] == "rolled_back"
    cli("retire", b)

    diff = _json(cli("diff", a, c, "--json"))
    assert diff["config"]["seed"] == {"a": 0, "b": 2}
    assert "config.seed" in cli("diff", a, c).stdout

    trail = _json(cli("history", "--tenant", tenant, "--limit", "100", "--json"))
    moves = [
        (e["action"], e["outcome"], e["version_id"], e["from_status"], e["to_status"])
        for e in trail
    ]
    assert ("promote", "conflict", c, "gated", "live") in moves
    assert ("rollback", "ok", a, "retired", "live") in moves
    assert moves[-1] == ("retire", "ok", b, "rolled_back", "retired")
    assert all(e["actor"].startswith("cli") for e in trail)
    assert "regression" in cli("history", "--tenant", tenant, "--limit", "100").stdout


def test_pin_and_exit_codes(cli, tenant, adapter_dir):
    t = ("--tenant", tenant)
    a, b = (
        _json(cli("register", str(adapter_dir(f"p{s}", seed=10 + s)), *t, "--json"))["id"]
        for s in range(2)
    )
    for vid in (a, b):
        cli("gate", vid, "--passed")
    pinned = _json(cli("pin", a, "--reason", "freeze", "--json"))
    assert pinned["pinned"] is True
    result = cli("promote", b, code=EXIT_CONFLICT)
    assert "pinned" in result.stderr and "--release" in result.stderr
    cli("retire", a, code=EXIT_CONFLICT)
    cli("pin", "--release", *t)
    cli("promote", b)

    assert (
        "strictly between 0 and 1"
        in cli("canary", a, "--fraction", "1.5", code=EXIT_REFUSED).stderr
    )
    assert (
        "cannot move from 'live' to 'gated'" in cli("gate", b, "--passed", code=EXIT_REFUSED).stderr
    )
    assert "no adapter version" in cli("show", "f" * 64, code=EXIT_NOT_FOUND).stderr
    cli("rollback", "--tenant", f"{tenant}-nobody", code=EXIT_NOT_FOUND)
    cli("canary", a, code=EXIT_USAGE)  # neither --fraction nor --stop
    cli("gate", a, "--passed", "--metrics", "[1]", code=EXIT_USAGE)
    cli("list", "--bogus", code=EXIT_USAGE)
    cli(
        "register",
        str(adapter_dir("orphan", seed=99)),
        *t,
        "--parent",
        "0" * 64,
        code=EXIT_NOT_FOUND,
    )


def test_an_unknown_status_is_refused_by_name_without_a_traceback(cli, tenant):
    result = cli("list", "--status", "bogus", code=EXIT_REFUSED)
    assert "unknown adapter status 'bogus'" in result.stderr
    assert "candidate, gated, canary, live" in result.stderr
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output


def test_the_help_documents_one_meaning_per_exit_code(cli):
    text = " ".join(cli("--help").stdout.split())
    for code, meaning in [(EXIT_NOT_FOUND, "not found"), (EXIT_CONFLICT, "conflict"),
                          (EXIT_REFUSED, "refused"), (EXIT_USAGE, "usage")]:
        assert f"{code} {meaning}" in text
    assert "3 not running" in text


def test_exit_codes_of_a_real_process(cli, tenant):
    """Scripts see the documented exit status and the message on stderr."""
    script = "from loraloop.cli_adapters import app; app(prog_name='loraloop adapters')"
    env = {**os.environ, **cli.env}
    proc = subprocess.run(
        [sys.executable, "-c", script, "show", "e" * 64],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_NOT_FOUND, proc.stderr
    assert "no adapter version" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-c", script, "list", "--tenant", tenant, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and json.loads(proc.stdout) == []


def test_cli_alias_changes_are_announced_on_redis(
    cli, tenant, adapter_dir, redis_client, redis_url, redis_prefix
):
    from feedback.keys import RedisKeys
    from storage.alias_events import AliasChangeSubscriber

    vid = _json(cli("register", str(adapter_dir("n", seed=42)), "--tenant", tenant, "--json"))["id"]
    cli("gate", vid, "--passed")
    cli.env.update(LORALOOP_REDIS_URL=redis_url, LORALOOP_REDIS_PREFIX=redis_prefix)
    with AliasChangeSubscriber(redis_client, RedisKeys(redis_prefix)) as sub:
        cli("canary", vid, "--fraction", "0.05", "--actor", "alice")
        message = sub.get(timeout=5)
    assert message is not None, "no alias change was published"
    assert (message["tenant"], message["alias"], message["version_id"]) == (tenant, "canary", vid)
    assert (message["fraction"], message["actor"]) == (0.05, "alice")
