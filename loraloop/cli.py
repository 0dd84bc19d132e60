"""The `loraloop` command line. Thin: heavy imports live inside the commands, and what
they print is drawn by :mod:`loraloop.render`, which also holds the exit codes.

This module has the single-shot commands (chat, model build, config, users
forget) and mounts the others: the running stack (``up``, ``status``,
``down``: :mod:`loraloop.cli_stack`), ``demo`` (:mod:`loraloop.cli_demo`),
``learner`` (:mod:`loraloop.cli_learner`) and ``adapters`` (:mod:`loraloop.cli_adapters`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from loraloop import cli_adapters, cli_bench, cli_demo, cli_learner, cli_stack, render
from loraloop.render import EXIT_CODES_HELP, fail, load_settings

app = typer.Typer(
    name="loraloop",
    help="Continual-learning LLM serving: chat, feedback, LoRA training and hot swap. "
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
)
model_app = typer.Typer(help="The base model.", no_args_is_help=True)
app.add_typer(model_app, name="model")
users_app = typer.Typer(help="Users' data.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(cli_learner.app, name="learner")
app.add_typer(cli_stack.app)  # up, status, down: commands of their own, merged in
app.add_typer(cli_demo.app)  # demo
app.add_typer(cli_bench.app)  # bench: runs bench/ of a source checkout
app.add_typer(
    cli_adapters.app,
    name="adapters",
    help="Adapter versions: list, show, diff, promote, canary, rollback, pin, retire, history.",
)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="The user message to answer.")],
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate at most.")] = 64,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0)] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Seed for sampled decoding.")] = None,
    adapter: Annotated[
        Path | None, typer.Option(help="A LoRA adapter directory to answer with.")
    ] = None,
) -> None:
    """Answer one prompt with the configured model and engine, streaming to stdout."""
    import asyncio

    from loraloop.compose import build_engine
    from serving.engines.base import GenerationRequest, SamplingParams
    from serving.errors import ServingError

    settings = load_settings()
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)

    async def run() -> None:
        engine = await build_engine(settings)
        try:
            version = None
            if adapter is not None:
                version = "cli-adapter"
                await engine.load_adapter(version, adapter)
            ids = engine.encode_chat([{"role": "user", "content": prompt}])
            request = GenerationRequest("cli", ids, params, adapter=version)
            async for chunk in engine.generate(request):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            sys.stdout.write("\n")
        finally:
            await engine.shutdown()

    try:
        asyncio.run(run())
    except (ServingError, ValueError) as exc:
        fail(str(exc))


@model_app.command("build")
def model_build() -> None:
    """Resolve the configured model, building a `builtin:` one if needed; print its path."""
    from loraloop.models import resolve_model

    settings = load_settings()
    try:
        typer.echo(resolve_model(settings.model, settings.data_dir))
    except ValueError as exc:
        fail(str(exc))


@app.command()
def config(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the effective configuration (environment, .env and defaults)."""
    settings = load_settings()
    values = settings.model_dump(mode="json")
    values["sqlalchemy_url"] = settings.sqlalchemy_url
    values["artifacts_location"] = settings.artifacts_location
    if values.get("admin_token"):
        values["admin_token"] = "***"
    # Keys are secrets: show who they stand for, never the keys themselves.
    values["api_keys"] = [who for who in values.get("api_keys", {}).values()]
    if as_json:
        return render.emit_json(values)
    fields = type(settings).model_fields
    rows = [
        [name, value, f"LORALOOP_{name.upper()}" if name in fields else "(derived)"]
        for name, value in values.items()
    ]
    render.table(None, ["setting", "value", "environment variable"], rows)


@users_app.command("forget")
def users_forget(
    user: Annotated[str, typer.Argument(help="The user name (as sent in `user` or by API key).")],
    retire: Annotated[bool, typer.Option(
        "--retire", help="Also retire the versions trained on the user's data (not a live "
        "one: that needs a promotion or rollback first).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete USER's interactions and feedback from Redis, anonymize their dataset rows in
    SQL, keep their examples out of every later round's replay, and list the adapter
    versions their data trained, replayed included (retire those, or retrain without
    them, to forget completely)."""
    from loraloop.cli_adapters import registry_ops
    from loraloop.forget import forget_everywhere
    from loraloop.stack import redis_url_for

    settings = load_settings()
    redis_url = redis_url_for(settings)
    if not redis_url:
        fail("no Redis: set LORALOOP_REDIS_URL or start the stack with `loraloop up`")
    with registry_ops(settings=settings) as ops:
        report = forget_everywhere(
            user=user, redis_url=redis_url, redis_prefix=settings.redis_prefix,
            artifacts_location=settings.artifacts_location, ops=ops, retire=retire)
    if as_json:
        return render.emit_json(report.as_dict())
    render.forgotten(user, report.redis, report.versions, False)
    typer.echo(f"anonymized {report.sql_rows_anonymized} dataset row(s); "
               f"{len(report.forgotten_stream_ids)} feedback event(s) left out of replay")
    for version in report.replayed:
        typer.echo(f"  {version.id} replayed the data")
    for version_id in report.retired:
        typer.echo(f"retired {version_id}")
    for version_id, todo in report.left.items():
        typer.echo(f"to do: {version_id[:12]}: {todo}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
