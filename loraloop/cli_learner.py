"""`loraloop learner ...`: run the learner in the foreground, or read what it reported."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from loraloop import render
from loraloop.render import EXIT_ERROR, EXIT_NOT_RUNNING, load_settings

app = typer.Typer(help="The learner: feedback in, adapter versions out.", no_args_is_help=True)


@app.command("run")
def learner_run() -> None:
    """Run the learner in the foreground (without Ray); Ctrl-C stops it."""
    import asyncio
    import signal
    import threading

    from feedback.connections import redact_url
    from learner.actor import run_forever
    from loraloop.compose import learner_spec
    from loraloop.progress import RoundProgress
    from storage.db import migrate

    settings = load_settings()
    migrate(settings.sqlalchemy_url)  # the learner may start before the app's first deploy
    spec = learner_spec(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    typer.echo(f"learner reading {redact_url(spec.redis_url)} (prefix {spec.redis_prefix}); "
               "Ctrl-C stops it")
    shown = RoundProgress(typer.echo)  # a bar on a terminal, plain lines otherwise
    try:
        asyncio.run(run_forever(spec, stop, {}, on_status=shown))
    finally:
        shown.close()


@app.command("status")
def learner_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Backlog, last round (with its timing breakdown), canaries and last version.

    Read from Redis when there is one (the learner may run on another host or
    pod), else from the data dir. Exit 3 (not running) if no learner has reported,
    1 while its steps keep failing (it retries them with backoff).
    """
    from loraloop.cli_stack import waiting_for_operator

    settings = load_settings()
    status = _status_from_redis(settings)
    if status is None:
        path = settings.data_dir / "run" / "learner.json"
        try:
            status = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            typer.echo("no learner has reported yet" if not as_json else json.dumps({}))
            raise typer.Exit(EXIT_NOT_RUNNING) from None
    failing = status.get("failing")
    if as_json:
        typer.echo(json.dumps(status, indent=2))
    else:
        render.learner_status(status, waiting_for_operator(settings))
        if failing:
            typer.echo(f"failing      {failing['consecutive']} step(s) in a row "
                       f"({status.get('step_failures_total', 0)} in all), next try in "
                       f"{failing['retry_in_s']:.0f} s: {failing['last_error']}")
    if failing:
        raise typer.Exit(EXIT_ERROR)


def _status_from_redis(settings) -> dict | None:
    from feedback.connections import REDIS_ERRORS, sync_client
    from feedback.keys import RedisKeys
    from loraloop.stack import redis_url_for

    redis_url = redis_url_for(settings)
    if not redis_url:
        return None
    try:
        client = sync_client(redis_url, timeout_s=2)
        try:
            raw = client.get(RedisKeys(settings.redis_prefix).learner_status)
        finally:
            client.close()
    except REDIS_ERRORS:
        return None  # fall back to the data dir's file
    return json.loads(raw) if raw else None
