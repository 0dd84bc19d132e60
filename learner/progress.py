"""Training progress, from the training thread to whoever shows it.

:func:`learner.train.train_adapter` takes ``progress(step, total)``, called after every
optimizer step (the anchored objective's loop, or a TRL trainer through
:func:`trainer_callback`). The learner trains in a worker thread; :class:`StepReporter`
carries those calls to its event loop, throttled, where they update the round's status
(``round.step`` / ``round.steps``) that `loraloop learner status`, the ops view and
`loraloop learner run`'s progress bar read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

logger = logging.getLogger(__name__)
#: ``progress(step, total)``: ``step`` optimizer steps of ``total`` are done.
StepProgress = Callable[[int, int], None]


class StepReporter:
    """A :data:`StepProgress` for a worker thread that awaits ``report(step, total)`` on
    the event loop it was made on: at most once per ``every_s``, and always the last step.

    Best effort: a report that fails is logged, and training goes on.
    """

    def __init__(self, report: Callable[[int, int], Awaitable[None]], *,
                 every_s: float = 1.0) -> None:
        self.report = report
        self.every_s = every_s
        self.loop = asyncio.get_running_loop()
        self._last = float("-inf")

    def __call__(self, step: int, total: int) -> None:
        now = time.monotonic()
        if step < total and now - self._last < self.every_s:
            return
        self._last = now
        future = asyncio.run_coroutine_threadsafe(self.report(step, total), self.loop)
        future.add_done_callback(_log_failure)


def _log_failure(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("reporting training progress failed: %s", future.exception())


def trainer_callback(progress: StepProgress) -> Any:
    """A ``transformers.TrainerCallback`` that calls ``progress`` after every step."""
    from transformers import TrainerCallback

    class _Steps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            progress(int(state.global_step), int(state.max_steps))

    return _Steps()


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """No progress bars from datasets and transformers during training (progress is
    reported through :data:`StepProgress` instead); restore them after."""
    import datasets
    from transformers.utils import logging as hf_logging

    bars_on = datasets.is_progress_bar_enabled()
    hf_bars_on = hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars_on:
            datasets.enable_progress_bars()
        if hf_bars_on:
            hf_logging.enable_progress_bar()
