"""`loraloop up` run as a user runs it, and an HTTP client that chats, rates and watches it.

Used by the end-to-end tests and by ``bench/learning_efficacy.py``: everything goes
through the public HTTP API (chat, feedback, the admin API for what ops see).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from loraloop.demo.client import StackClient
from loraloop.demo.story import NOT_LIVE_ENDS
from tests.support.cli import cli_env

ADMIN_TOKEN = "support-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_stack(data_dir: Path, *, env: dict[str, str] | None = None, admin: bool = True,
                  ready_timeout_s: float = 600, log: Path | None = None) -> Iterator[Client]:
    """`loraloop up` in the foreground of a child process, on the defaults plus ``env``.

    Only the data dir, the port and (with ``admin``) an admin token, to read the
    registry as ops do, are set; every other setting is the default unless ``env``
    says otherwise. Stops it with Ctrl-C (SIGINT) and waits for it to exit.
    """
    port = free_port()
    child_env = cli_env(data_dir, {"LORALOOP_HTTP_PORT": str(port),
                                   **({"LORALOOP_ADMIN_TOKEN": ADMIN_TOKEN} if admin else {}),
                                   **(env or {})})
    log = log or Path(data_dir) / "up-test.log"
    with open(log, "ab") as out:
        child = subprocess.Popen([sys.executable, "-m", "loraloop.cli", "up"], env=child_env,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    client = Client(f"http://127.0.0.1:{port}", log)
    try:
        client.wait_ready(ready_timeout_s, child)
        yield client
    finally:
        client.close()
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


class Client(StackClient):
    """The public API of a running stack (:class:`loraloop.demo.client.StackClient`), with
    the admin token the tests' stacks get, and the stack's log."""

    def __init__(self, base_url: str, log: Path) -> None:
        super().__init__(base_url, admin_token=ADMIN_TOKEN)
        self.log = log

    def wait_ready(self, timeout_s: float, child: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(f"loraloop up exited with {child.returncode}; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/readyz", timeout=5).status_code == 200:
                    return
            time.sleep(1)
        raise TimeoutError(f"loraloop up was not ready in {timeout_s} s; see {self.log}")

    def wait_for_round(self, previous: str | None, seen: set[str], *, timeout_s: float,
                       tenant: str = "default") -> tuple[str, str] | None:
        """How the learner's next round ended: ``("live", id)`` once the live version
        differs from ``previous``, ``("rejected", id)`` (or rolled_back, failed) once a
        version not in ``seen`` ended without going live; ``None`` on timeout."""
        return wait_for_round(lambda: self.live(tenant), lambda: self.versions(tenant),
                              previous, seen, timeout_s=timeout_s)



def wait_for_round(live, versions, previous: str | None, seen: set[str], *,
                   timeout_s: float, poll_s: float = 2) -> tuple[str, str] | None:
    """Poll ``live()`` and ``versions()`` (a registry listing) until a round ends."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = live()
        if current != previous:
            return "live", current
        ended = next((v for v in versions()
                      if v["id"] not in seen and v["status"] in NOT_LIVE_ENDS), None)
        if ended is not None:
            return ended["status"], ended["id"]
        time.sleep(poll_s)
    return None
