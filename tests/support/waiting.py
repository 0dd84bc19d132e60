"""Waiting on a condition instead of sleeping a guessed time.

A test that sleeps "long enough" races the machine's load; one that polls a
condition with a generous limit only waits as long as it must, and fails with
a message that says what never happened. The limit is a hang guard, not a
measurement: what something costs in time is measured in ``bench/``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: How long a test waits for something that takes well under a second on an idle machine.
PATIENCE_S = 60.0


def wait_until(condition: Callable[[], T], *, what: str, timeout_s: float = PATIENCE_S,
               every_s: float = 0.05) -> T:
    """Call ``condition()`` until it returns something truthy, and return that.

    Fails the test (``AssertionError`` naming ``what``) after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(every_s)


async def until(condition: Callable[[], T | Awaitable[T]], *, what: str,
                timeout_s: float = PATIENCE_S, every_s: float = 0.01) -> T:
    """:func:`wait_until` for asyncio tests; ``condition`` may be a coroutine function."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        await asyncio.sleep(every_s)
