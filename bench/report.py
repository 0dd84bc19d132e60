"""What every bench script does with its result: print it as JSON and, with --json, save it.

The scripts run as ``python bench/<name>.py``, so this directory is on ``sys.path``.
"""

from __future__ import annotations

import json
from pathlib import Path


def emit(outcome: dict, path: str | None) -> None:
    """Print ``outcome`` as indented JSON; also write it to ``path`` if one is given."""
    text = json.dumps(outcome, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
