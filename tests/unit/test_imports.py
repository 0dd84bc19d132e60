"""Importing serving stays light: no engine library is imported until an engine is chosen."""

from __future__ import annotations

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
