"""The `loraloop` command line run as a user runs it: a child process, a clean environment.

Only the data dir and what the caller passes are set: any ``LORALOOP_*`` of the
shell running the tests is dropped, so the CLI sees its defaults.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def cli_env(data_dir: Path | str, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``LORALOOP_*``, plus the data dir and ``extra_env``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    env.update({"LORALOOP_DATA_DIR": str(data_dir), **(extra_env or {})})
    return env


def run_cli(*args: str, data_dir: Path | str, extra_env: Mapping[str, str] | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
    """``loraloop <args>`` to its end; its exit code, stdout and stderr (text)."""
    return subprocess.run(
        [sys.executable, "-m", "loraloop.cli", *args],
        capture_output=True,
        text=True,
        env=cli_env(data_dir, extra_env),
        timeout=timeout,
    )
