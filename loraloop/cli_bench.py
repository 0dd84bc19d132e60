"""`loraloop bench`: run the benchmark suite of a source checkout and write its report.

The suite (which scripts, with which options: ``bench/suite.py``) and the report
(``bench/summary.py``, ``bench/figures.py``, ``bench/plots.py``) live next to the
scripts in ``bench/``, which is part of the repository, not of the installed package:
this command finds that directory and runs each script as a child process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from loraloop.render import EXIT_ERROR, EXIT_USAGE, fail

app = typer.Typer()


def bench_dir() -> Path:
    """``bench/`` of the source checkout this package runs from (or of the current
    directory); exits with a message naming where it looked when there is none."""
    candidates = [Path(__file__).resolve().parents[1] / "bench", Path.cwd() / "bench"]
    for path in candidates:
        if (path / "suite.py").is_file():
            return path
    fail("`loraloop bench` runs the scripts of bench/ in a source checkout of loraloop, and "
         f"there is none at {' or '.join(str(p) for p in dict.fromkeys(candidates))} (this "
         "looks like an installed package): clone the repository, `pip install -e .` there "
         "and run it from the checkout")


class _Display:
    """Which bench runs, how many are done, elapsed: a rich progress bar on a terminal,
    one plain line per event otherwise (logs, CI)."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()
        self.progress = None
        if sys.stdout.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                     BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self.overall = self.progress.add_task("benches", total=total)
            self.current = None

    def __enter__(self) -> _Display:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress:
            self.progress.stop()

    def start(self, bench) -> None:
        line = f"[{self.done + 1}/{self.total}] {bench.name}: {bench.about} ..."
        if self.progress:
            self.current = self.progress.add_task(f"  {bench.name}", total=None)
            self.progress.update(self.overall, description=f"benches: running {bench.name}")
        else:
            typer.echo(line)

    def finish(self, outcome) -> None:
        self.done += 1
        elapsed = (time.monotonic() - self.started) / 60
        line = (f"[{self.done}/{self.total}] {outcome.name}: {outcome.status} in "
                f"{outcome.seconds:.0f} s ({elapsed:.1f} min so far)")
        if self.progress:
            self.progress.remove_task(self.current)
            self.progress.update(self.overall, advance=1, description="benches")
            mark = "[green]✓" if outcome.status == "ok" else "[yellow]-" \
                if outcome.status == "skipped" else "[red]✗"
            self.progress.console.print(f"{mark}[/] {line}")
        else:
            typer.echo(line)


@app.command()
def bench(
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="Run only this bench (repeatable); the names are bench/<name>.py.")] = None,
    skip: Annotated[list[str] | None, typer.Option(
        "--skip", help="Leave this bench out (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Where latest.json, latest.md and the plots go (default: bench/results of the "
        "checkout).")] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="Each bench with its own defaults: the smollm2 benches take an hour "
        "or more on 2 cores instead of minutes.")] = False,
) -> None:
    """Run the benchmarks in bench/ and write their report.

    One after the other, then latest.json, latest.md (the machine, each figure next to its
    baseline) and PNG plots. A bench that fails or runs out of time is reported as such;
    the others still run. Exits 1 if any failed.
    """
    where = bench_dir()
    sys.path.insert(0, str(where))
    import suite
    from summary import machine, write_report

    try:
        benches = suite.select(only or (), skip or ())
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    if not benches:
        fail("nothing to run: every bench was skipped", EXIT_USAGE)
    out = out or where / "results"
    machine_info = machine()  # the load average before the suite adds its own
    started = time.monotonic()
    with _Display(len(benches)) as display:
        outcomes = suite.run_suite(benches, full=full, on_start=display.start,
                                   on_done=display.finish)
    paths = write_report(outcomes, out, full=full, seconds=time.monotonic() - started,
                         machine_info=machine_info)
    typer.echo(f"report: {paths['markdown']} ({len(paths) - 2} plot(s)); "
               f"results: {paths['json']}; {(time.monotonic() - started) / 60:.1f} min")
    failed = [o.name for o in outcomes if o.status in ("failed", "timed out")]
    if failed:
        typer.echo(f"not ok: {', '.join(failed)} (see the report)", err=True)
        raise typer.Exit(EXIT_ERROR)
