"""What a running `loraloop up` left on disk: the state file that tells `loraloop status`,
`loraloop down` and every other command what runs where (its Redis above all)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from loraloop.settings import Settings


@dataclass
class StackState:
    """What `up` started, written to ``<data_dir>/run/stack.json``."""

    pid: int
    http_url: str
    redis_url: str
    redis_embedded: bool
    database_url: str
    ray_address: str
    replicas: int
    engine: str
    model: str
    learner: bool = False
    promotion: str = ""  #: what happens to a version that passes the gate, and why

    @staticmethod
    def path(data_dir: Path) -> Path:
        return Path(data_dir) / "run" / "stack.json"

    def save(self, data_dir: Path) -> None:
        path = self.path(data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, data_dir: Path) -> StackState | None:
        try:
            return cls(**json.loads(cls.path(data_dir).read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None


def redis_url_for(settings: Settings) -> str:
    """The Redis to use: the configured one, else that of a stack `loraloop up` runs on
    this data dir (its embedded server), else ``""``."""
    if settings.redis_url:
        return settings.redis_url
    state = StackState.load(settings.data_dir)
    return state.redis_url if state is not None else ""
