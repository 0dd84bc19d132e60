"""The demo's own stack: `loraloop up --background` on the embedded defaults, in a data
dir of its own (``<data dir>/demo``), so the demo never touches a user's versions.

The base model is built once in the user's data dir and shared (``demo/models`` links
to it). Only the data dir, the port and an admin token (the demo reads the registry
through the admin API, as ops would) are set: every other ``LORALOOP_*`` of the
shell is dropped, so the demo shows what a fresh install does.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from loraloop.settings import defaults_environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DemoStack:
    home: Path  #: the demo's data dir
    models: Path  #: the user's models dir, shared
    port: int
    admin_token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "run" / "up.log"

    def env(self) -> dict[str, str]:
        return defaults_environment({
            "LORALOOP_DATA_DIR": str(self.home), "LORALOOP_HTTP_PORT": str(self.port),
            "LORALOOP_ADMIN_TOKEN": self.admin_token})

    def loraloop(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "loraloop.cli", *args], env=self.env(),
                              capture_output=True, text=True, timeout=timeout_s)

    def prepare(self) -> None:
        """A fresh demo data dir (stopping a demo stack left running), sharing the models."""
        if (self.home / "run").exists():
            self.loraloop("down", timeout_s=300)
        if self.home.exists():
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)
        self.models.mkdir(parents=True, exist_ok=True)
        (self.home / "models").symlink_to(self.models.resolve(), target_is_directory=True)
        self.admin_token = secrets.token_urlsafe(18)
        (self.home / "admin-token").write_text(self.admin_token + "\n")
        (self.home / "admin-token").chmod(0o600)

    def up(self, timeout_s: float = 900) -> None:
        done = self.loraloop("up", "--background", "--timeout", str(timeout_s),
                             timeout_s=timeout_s + 60)
        if done.returncode != 0:
            raise RuntimeError(f"the demo's stack did not start: {done.stdout}{done.stderr}"
                               f" (log: {self.log})")

    def down(self) -> None:
        self.loraloop("down", timeout_s=300)

    def stop_hint(self) -> str:
        return f"LORALOOP_DATA_DIR={self.home} loraloop down"


def demo_stack(data_dir: Path, port: int | None) -> DemoStack:
    return DemoStack(home=Path(data_dir) / "demo", models=Path(data_dir) / "models",
                     port=port or free_port())
