"""Resolving the configured base model name to something an engine can load."""

from __future__ import annotations

from pathlib import Path

from loraloop.smollm2 import ensure_smollm2
from loraloop.tiny_model import ensure_tiny_model

#: Built-in model name -> the function that returns its directory, building it first if needed.
BUILTINS = {"builtin:tiny": ensure_tiny_model, "builtin:smollm2": ensure_smollm2}


def resolve_model(spec: str, data_dir: Path) -> str:
    """Return a local directory or hub id for ``spec``, building a built-in model if needed.

    ``spec`` is ``builtin:<name>``, a local directory, or a Hugging Face model id
    (loaded from the local Hugging Face cache or the hub by transformers/vLLM).
    """
    if spec.startswith("builtin:"):
        build = BUILTINS.get(spec)
        if build is None:
            raise ValueError(
                f"unknown built-in model {spec!r}; built-in models: {sorted(BUILTINS)}"
            )
        return str(build(Path(data_dir)))
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"model directory {path} has no config.json; point LORALOOP_MODEL at a "
                "directory saved with save_pretrained, a hub id, or one of "
                f"{sorted(BUILTINS)}"
            )
        return str(path.resolve())
    return spec
