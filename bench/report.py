"""What every bench script shares: its command line's common options, and what it does with
its result (print it as JSON and, with --json, save it): :func:`run_script`.

The scripts run as ``python bench/<name>.py``, so this directory is on ``sys.path``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
from collections.abc import Callable
from pathlib import Path


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """A bench script's parser: described by its docstring's first line, with ``--json``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--json", default=None, help="also write the result here")
    return parser


def add_engine_options(parser: argparse.ArgumentParser, *, concurrency: int,
                       tokens: int = 64) -> None:
    """The options of the benches that drive an engine directly (the model, its load)."""
    parser.add_argument("--model", default=None, help="model dir or id (default: builtin tiny)")
    parser.add_argument("--data-dir", default=None, help="where to build the tiny model")
    parser.add_argument("--concurrency", type=int, default=concurrency)
    parser.add_argument("--tokens", type=int, default=tokens, help="max tokens per request")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank of the bench adapter")


def emit(outcome: dict, path: str | None) -> None:
    """Print ``outcome`` as indented JSON; also write it to ``path`` if one is given."""
    text = json.dumps(outcome, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")


def run_script(main: Callable, parse_args: Callable[[], argparse.Namespace]) -> None:
    """Parse the command line, run ``main(arguments)`` (a coroutine function or not) and
    :func:`emit` its result."""
    arguments = parse_args()
    outcome = main(arguments)
    if inspect.iscoroutine(outcome):
        outcome = asyncio.run(outcome)
    emit(outcome, arguments.json)
