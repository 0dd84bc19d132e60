"""Import rules: serving stays light (no engine library until one is chosen); only feedback/
imports redis, every client comes from feedback.connections, and storage reaches Redis only
through its alias-change notifications (storage/alias_events.py)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    [
        "import serving",
        "import serving.engines",
        "from serving.engines import ENGINES, EngineConfig, engine_class",
        "import serving.engines.vllm_setup",
    ],
)
def test_importing_serving_does_not_import_vllm(statement):
    loaded = _modules_after(statement)
    assert not {m for m in loaded if m == "vllm" or m.startswith("vllm.")}


def test_the_vllm_engine_module_imports_vllm_lazily():
    # Importing the module (e.g. to read its docstring or class) must not start vLLM.
    loaded = _modules_after("import serving.engines.vllm")
    assert "vllm" not in loaded


# -- who talks to Redis --------------------------------------------------------------------
PACKAGES = ("serving", "learner", "feedback", "storage", "loraloop", "bench")


def _sources() -> dict[str, ast.Module]:
    return {
        path.relative_to(ROOT).as_posix(): ast.parse(path.read_text("utf-8"))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _imported(tree: ast.Module) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _builds_a_client(tree: ast.Module) -> bool:
    """``Redis(...)``, ``StrictRedis(...)`` or ``<...>Redis.from_url(...)`` anywhere in it."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value if isinstance(func, ast.Attribute) else None
            owner_name = getattr(owner, "attr", getattr(owner, "id", ""))
            if name in ("Redis", "StrictRedis") or (name == "from_url" and owner_name in (
                    "Redis", "StrictRedis", "redis")):
                return True
    return False


def test_only_feedback_imports_redis():
    importers = {
        path for path, tree in _sources().items()
        if any(m == "redis" or m.startswith("redis.") for m in _imported(tree))
    }
    assert {path for path in importers if not path.startswith("feedback/")} == set()
    assert "feedback/connections.py" in importers


def test_every_redis_client_is_built_by_feedback_connections():
    builders = {path for path, tree in _sources().items() if _builds_a_client(tree)}
    assert builders == {"feedback/connections.py"}


def test_storage_reaches_redis_only_through_its_alias_notifications():
    # The registry's alias-change pub/sub lives next to the registry; the rest of
    # storage knows nothing of feedback or Redis.
    users = {
        path for path, tree in _sources().items()
        if path.startswith("storage/")
        and any(m == "feedback" or m.startswith("feedback.") for m in _imported(tree))
    }
    assert users == {"storage/alias_events.py"}


def test_tests_build_redis_clients_as_the_product_does():
    # One fixture style: the tests' clients come from tests/conftest.py's fixtures or
    # feedback.connections, with the product's timeouts and no hidden retries.
    builders = {
        path.relative_to(ROOT).as_posix() for path in sorted((ROOT / "tests").rglob("*.py"))
        if _builds_a_client(ast.parse(path.read_text("utf-8")))
    }
    assert builders == set()
