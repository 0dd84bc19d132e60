"""The demo's live view: one row per version, redrawn as things happen.

On a terminal it is a rich table that updates in place; elsewhere (CI, a pipe)
each new phase is printed once as a plain line.
"""

from __future__ import annotations

import threading

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from loraloop.demo.record import Record
from loraloop.demo.story import short


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def table(record: Record) -> Table:
    grid = Table(title="versions", title_justify="left", expand=False)
    for name in ("version", "status", "taught", "general", "thumbs up", "requests",
                 "feedback to live"):
        grid.add_column(name, justify="left" if name in ("version", "status") else "right")
    versions = ["base", *[v for v in record.statuses if v != "base"]]
    for version in versions:
        found = record.measured.get(version)
        rate, votes = record.up_rate(version)
        to_live = next((r.get("feedback_to_live_s") for r in record.rounds
                        if r.get("version") == version), None)
        grid.add_row(
            short(version), record.statuses.get(version, "base"),
            _pct(found and found.taught_accuracy), _pct(found and found.general_accuracy),
            f"{_pct(rate)} ({votes})", str(record.requests[version]),
            "-" if to_live is None else f"{to_live:.0f} s")
    return grid


def render(record: Record) -> Group:
    rate, votes = record.up_rate()
    head = Text.assemble(
        (f"{record.elapsed():5.0f} s  ", "bold"), record.phase,
        f"\n        learner: {record.learner or '-'}   thumbs up overall: {_pct(rate)} "
        f"of {votes}   requests: {sum(record.requests.values())}")
    return Group(head, table(record))


class View:
    """Call :meth:`changed` whenever ``record`` changed; use as a context manager."""

    def __init__(self, record: Record, console: Console | None = None) -> None:
        self.record = record
        self.console = console or Console()
        self.live = (Live(render(record), console=self.console, refresh_per_second=2)
                     if self.console.is_terminal else None)
        self._said: dict[str, str] = {}  # the last phase and learner line printed
        self._lock = threading.Lock()

    def __enter__(self) -> View:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(render(self.record))
            self.live.__exit__(*exc)
        else:
            self.console.print(table(self.record))

    def changed(self) -> None:
        with self._lock:
            if self.live is not None:
                self.live.update(render(self.record))
                return
            lines = {"phase": self.record.phase,
                     "learner": self.record.learner and f"learner {self.record.learner}"}
            for what, said in lines.items():
                if said and self._said.get(what) != said:
                    self._said[what] = said
                    print(f"[{self.record.elapsed():6.0f} s] {said}", flush=True)
