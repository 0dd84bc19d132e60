"""Fixtures of the storage tests: fresh SQLite and PostgreSQL databases, adapters.

PostgreSQL is the server at 127.0.0.1 (override with ``LORALOOP_TEST_POSTGRES_URL``).
When it is unreachable its tests are skipped, unless ``CI`` is set: then they fail.
Each module (or migration test) gets a database of its own, dropped after.
Redis (``redis_url``, ``redis_prefix``, ``redis_client``) comes from tests/conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

PG_URL = os.environ.get(
    "LORALOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]


def _unavailable(what: str, exc: Exception) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is unreachable in CI (CI is set): {exc}")
    pytest.skip(f"{what} is unreachable and CI is not set: {exc}")


def _pg_admin():
    import psycopg

    url = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL at {PG_URL}", exc)


class _Databases:
    """Creates empty databases and drops them at teardown."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self.pg_names: list[str] = []

    def create(self, backend: str) -> str:
        name = f"loraloop_test_{uuid.uuid4().hex[:12]}"
        if backend == "sqlite":
            return f"sqlite:///{self.tmp_dir / (name + '.db')}"
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.pg_names.append(name)
        return PG_URL.rsplit("/", 1)[0] + f"/{name}"

    def drop_all(self) -> None:
        if not self.pg_names:
            return
        with _pg_admin() as conn:
            for name in self.pg_names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def databases(tmp_path_factory):
    dbs = _Databases(tmp_path_factory.mktemp("db"))
    yield dbs
    dbs.drop_all()


@pytest.fixture(params=BACKENDS)
def empty_db_url(request, databases) -> str:
    """A new, empty database (no schema) on each backend."""
    return databases.create(request.param)


@pytest.fixture(scope="module", params=BACKENDS)
def registry_url(request, databases) -> str:
    """A migrated database shared by one test module, on each backend."""
    from storage import migrate

    url = databases.create(request.param)
    migrate(url)
    return url


@pytest.fixture
def session_factory(registry_url):
    from storage import make_session_factory

    factory = make_session_factory(registry_url)
    yield factory
    factory.kw["bind"].dispose()


@pytest.fixture
def session(session_factory):
    with session_factory() as s:
        yield s


@pytest.fixture
def tenant() -> str:
    """A tenant of its own for each test: tests sharing a database do not interfere."""
    return f"t-{uuid.uuid4().hex[:10]}"


def random_version_id() -> str:
    return hashlib.sha256(uuid.uuid4().bytes).hexdigest()


@pytest.fixture
def new_version(session, tenant):
    """``new_version(gated=True, **kw)`` registers a version (artifact not published)."""
    from storage import record_gate, register_candidate

    def make(gated: bool = True, **kw):
        vid = random_version_id()
        args = dict(
            version_id=vid,
            tenant=tenant,
            base_model="builtin:tiny",
            artifact_uri=f"/nowhere/{vid}",
            artifact_sha256=vid,
            lora_config={"r": 4, "target_modules": ["q_proj", "v_proj"]},
            actor="test",
        )
        args.update(kw)
        v = register_candidate(session, **args)
        if gated:
            v = record_gate(
                session, version_id=v.id, passed=True, metrics={"win_rate": 0.6}, actor="gate"
            )
        return v

    return make


def write_adapter(
    directory: Path, *, seed: int = 0, size: int = 4096, base: str = "builtin:tiny"
) -> Path:
    """A small but well-formed peft-style adapter: safetensors weights and a JSON config."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = {
        "base_model.model.layers.0.self_attn.q_proj.lora_A.weight": rng.standard_normal(
            (4, size // 16)
        ).astype(np.float32),
        "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": rng.standard_normal(
            (size // 16, 4)
        ).astype(np.float32),
    }
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "base_model_name_or_path": base,
        "target_modules": ["q_proj", "v_proj"],
        "seed": seed,
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    (directory / "README.md").write_text("not published\n")
    return directory


@pytest.fixture
def adapter_dir(tmp_path):
    """``adapter_dir(name, seed=..., size=...)`` writes an adapter under tmp_path."""
    return lambda name="adapter", **kw: write_adapter(tmp_path / name, **kw)

