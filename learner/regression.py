"""The regression set: rows a candidate's greedy answers must still match
(``GateConfig.regression_tolerance`` fewer at most than the reference's, and than the
base model's), and the cache of the answers of versions that do not change."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learner.errors import InvalidRegressionSet

_ROW_FORMAT = ('a row is {"messages": [{"role": ..., "content": ...}, ...], "expected": str} '
               'or {"messages": [...], "pattern": regex}')


@dataclass(frozen=True)
class RegressionRow:
    """One regression-set row: a chat and what its greedy answer must look like."""

    messages: list[dict[str, str]]
    expected: str | None = None
    pattern: str | None = None

    def matches(self, answer: str, how: str = "prefix") -> bool:
        if self.pattern is not None:
            return re.search(self.pattern, answer) is not None
        got, want = answer.strip(), (self.expected or "").strip()
        return got == want if how == "exact" else got.startswith(want)


def load_regression_set(path: str | Path) -> list[RegressionRow]:
    """Parse a regression-set JSONL file; ``InvalidRegressionSet`` names the bad line."""
    path = Path(path)
    if not path.is_file():
        raise InvalidRegressionSet(f"regression set {path} does not exist or is not a file")
    rows = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(_parse_row(json.loads(line)))
        except (ValueError, TypeError, re.error) as exc:
            raise InvalidRegressionSet(f"{path}:{number}: {exc}; {_ROW_FORMAT}") from exc
    return rows


def _parse_row(data: Any) -> RegressionRow:
    if not isinstance(data, dict):
        raise ValueError(f"row must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {"messages", "expected", "pattern"})
    if unknown:
        raise ValueError(f"unknown keys {unknown}")
    messages = data.get("messages")
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                       and isinstance(m.get("content"), str) for m in messages)):
        raise ValueError("`messages` must be a non-empty list of {role, content} strings")
    expected, pattern = data.get("expected"), data.get("pattern")
    if (expected is None) == (pattern is None):
        raise ValueError("give exactly one of `expected` and `pattern`")
    if not isinstance(expected if pattern is None else pattern, str):
        raise ValueError("`expected` / `pattern` must be a string")
    if pattern is not None:
        re.compile(pattern)
    return RegressionRow([{"role": m["role"], "content": m["content"]} for m in messages],
                         expected, pattern)


def answers_key(base_model, adapter_dir, regression_set, max_new_tokens: int,
                match: str) -> str:
    """What the greedy answers of ``adapter_dir`` over ``base_model`` (``None``: the base
    model's own) to ``regression_set`` depend on."""
    digest = hashlib.sha256(str(base_model).encode())
    if adapter_dir is not None:
        digest.update((Path(adapter_dir) / "adapter_model.safetensors").read_bytes())
    digest.update(Path(regression_set).read_bytes())
    digest.update(f"{max_new_tokens}:{match}".encode())
    return digest.hexdigest()[:32]


def cached_answers(cache_dir, key: str, compute) -> list[str]:
    """Regression answers by ``key`` (:func:`answers_key`): from ``cache_dir`` if computed
    before, else ``compute()`` and keep them there."""
    path = Path(cache_dir) / f"regression-{key}.json" if cache_dir is not None else None
    if path is not None and path.exists():
        with contextlib.suppress(ValueError, OSError):
            return json.loads(path.read_text("utf-8"))
    answers = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(answers), "utf-8")
        os.replace(tmp, path)
    return answers
