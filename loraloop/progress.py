"""Progress where the CLI's work is long: `loraloop up`'s start-up steps and the rounds of
`loraloop learner run`.

On a terminal it is drawn with rich (a spinner per start-up step, a bar over a round's
training steps); otherwise, e.g. in a log file or under a test, it is plain lines, one
per finished step or phase, that a script can read:

    started redis in 0.21 s
    round for acme: training step 48/48
    round 3 for acme: gated in 12.4 s (read 0.51 s, curate 0.02 s, train 9.80 s, ...)
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

#: In plain output a long training prints a step line at most this often (and its last).
PLAIN_STEP_EVERY_S = 10.0


def is_terminal(stream: Any = None) -> bool:
    stream = stream if stream is not None else sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


class StartupSteps:
    """``with steps("redis"): ...`` runs one start-up step and says how long it took."""

    def __init__(self, echo: Callable[[str], None] = print, *, live: bool | None = None):
        self.echo = echo
        self.live = is_terminal() if live is None else live
        self.taken: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        status = contextlib.nullcontext()
        if self.live:
            from rich.console import Console

            status = Console().status(f"starting {name} ...")
        try:
            with status:
                yield
        except BaseException:
            self.echo(f"starting {name} failed after {time.monotonic() - started:.2f} s")
            raise
        self.taken[name] = seconds = time.monotonic() - started
        self.echo(f"started {name} in {seconds:.2f} s")


class RoundProgress:
    """Shows the learner's rounds as its status changes (``run_forever``'s ``on_status``):
    each phase of a round, a bar (or lines) over its training steps, and its outcome."""

    def __init__(self, echo: Callable[[str], None] = print, *, live: bool | None = None,
                 step_every_s: float = PLAIN_STEP_EVERY_S):
        self.echo = echo
        self.live = is_terminal() if live is None else live
        self.step_every_s = step_every_s
        self.rounds: int | None = None
        self.phase: tuple | None = None
        self._bar = None
        self._task = None
        self._plain_step_at = float("-inf")

    def __call__(self, status: dict) -> None:
        current = status.get("round")
        if current:
            self._round(current)
        rounds = int(status.get("rounds") or 0)
        if self.rounds is not None and rounds > self.rounds and status.get("last_round"):
            self.close()
            self.echo(round_summary(rounds, status["last_round"]))
        self.rounds = rounds
        if not current:
            self.phase = None

    def _round(self, current: dict) -> None:
        tenant, phase = current.get("tenant"), current.get("phase")
        key = (tenant, phase, current.get("attempt"))
        step, steps = current.get("step"), current.get("steps")
        if key != self.phase:
            self.phase = key
            self.close()
            attempt = f" (attempt {current['attempt']})" if (current.get("attempt") or 1) > 1 \
                else ""
            if self.live and phase == "training":
                self._open(f"round for {tenant}: training{attempt}")
            else:
                self.echo(f"round for {tenant}: {phase}{attempt}")
        if phase != "training" or not steps:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=step, total=steps)
        elif step == steps or time.monotonic() - self._plain_step_at >= self.step_every_s:
            self._plain_step_at = time.monotonic()
            self.echo(f"round for {tenant}: training step {step}/{steps}")

    def _open(self, description: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._bar = Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn())
        self._task = self._bar.add_task(description, total=None)
        self._bar.start()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None


def round_summary(number: int, last: dict) -> str:
    """One line about a finished round: its outcome and where its time went."""
    timings = last.get("timings") or {}
    parts = ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in timings.items())
    version = f" {last['version'][:12]}" if last.get("version") else ""
    return (f"round {number} for {last.get('tenant')}:{version} {last.get('outcome')} in "
            f"{sum(timings.values()):.1f} s ({parts})")
