"""The `loraloop` command line. Thin: heavy imports live inside the commands.

Exit codes: 0 success, 1 an error the command reports, 2 bad usage (typer).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="loraloop",
    help="Continual-learning LLM serving: chat, feedback, LoRA training and hot swap.",
    no_args_is_help=True,
    add_completion=False,
)
model_app = typer.Typer(help="The base model.", no_args_is_help=True)
app.add_typer(model_app, name="model")
users_app = typer.Typer(help="Users' data.", no_args_is_help=True)
app.add_typer(users_app, name="users")
learner_app = typer.Typer(
    help="The learner: feedback in, adapter versions out.", no_args_is_help=True
)
app.add_typer(learner_app, name="learner")


def _mount_adapters() -> None:
    from loraloop.cli_adapters import app as adapters_app

    app.add_typer(
        adapters_app,
        name="adapters",
        help="Adapter versions: list, show, diff, promote, canary, rollback, pin, retire, history.",
    )


_mount_adapters()


def _settings():
    from loraloop.settings import Settings

    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError names the field and the value
        typer.echo(f"error: invalid configuration:\n{exc}", err=True)
        raise typer.Exit(1) from exc


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

    settings = _settings()
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
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@model_app.command("build")
def model_build() -> None:
    """Resolve the configured model, building a `builtin:` one if needed; print its path."""
    from loraloop.models import resolve_model

    settings = _settings()
    try:
        typer.echo(resolve_model(settings.model, settings.data_dir))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def config(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the effective configuration (environment, .env and defaults)."""
    settings = _settings()
    values = settings.model_dump(mode="json")
    values["sqlalchemy_url"] = settings.sqlalchemy_url
    values["artifacts_location"] = settings.artifacts_location
    if values.get("admin_token"):
        values["admin_token"] = "***"
    # Keys are secrets: show who they stand for, never the keys themselves.
    values["api_keys"] = [who for who in values.get("api_keys", {}).values()]
    if as_json:
        typer.echo(json.dumps(values, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "value", "environment variable")
    for name, value in values.items():
        env = f"LORALOOP_{name.upper()}" if name in type(settings).model_fields else "(derived)"
        table.add_row(name, str(value), env)
    Console().print(table)


@app.command()
def up(
    replicas: Annotated[
        int | None, typer.Option(min=1, help="LLM replicas (default: LORALOOP_REPLICAS).")
    ] = None,
    address: Annotated[str | None, typer.Option(help="Join an existing Ray cluster.")] = None,
    background: Annotated[
        bool,
        typer.Option(
            help="Start in the background and return once ready; `loraloop down` stops it."
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 300,
    host: Annotated[
        str | None, typer.Option(help="Address the HTTP API binds to (LORALOOP_HTTP_HOST).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port of the HTTP API (LORALOOP_HTTP_PORT)."),
    ] = None,
) -> None:
    """Start the whole stack: Redis, database, Ray, the Serve app. Ctrl-C stops it."""
    from loraloop.compose import auto_promote_policy
    from loraloop.stack import StackState, describe, run_foreground, wait_until_ready

    settings = _settings()
    overrides = {k: v for k, v in (("http_host", host), ("http_port", port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    try:
        auto_promote_policy(settings)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    existing = StackState.load(settings.data_dir)
    if existing is not None and _alive(existing.pid):
        typer.echo(
            f"error: loraloop is already running (pid {existing.pid}, "
            f"{existing.http_url}); `loraloop down` stops it",
            err=True,
        )
        raise typer.Exit(1)
    count = replicas or settings.replicas
    if not background:
        run_foreground(settings, replicas=count, address=address, echo=typer.echo)
        return
    import subprocess

    log = settings.data_dir / "run" / "up.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "loraloop.cli", "up", "--replicas", str(count),
               "--host", settings.http_host, "--port", str(settings.http_port)]
    if address:
        command += ["--address", address]
    with open(log, "ab") as out:
        child = subprocess.Popen(
            command, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = timeout
    state = None
    while deadline > 0 and child.poll() is None:
        state = StackState.load(settings.data_dir)
        if state is not None and state.pid == child.pid:
            break
        time.sleep(0.5)
        deadline -= 0.5
    if state is None or child.poll() is not None or not wait_until_ready(state.http_url, deadline):
        typer.echo(f"error: loraloop did not become ready; see {log}", err=True)
        raise typer.Exit(1)
    typer.echo(describe(state))
    typer.echo(f"loraloop is up in the background (log: {log}); `loraloop down` stops it.")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Report each part of a running stack. Exit 0 all healthy, 1 degraded, 3 not running."""
    import httpx

    from loraloop.stack import StackState

    settings = _settings()
    state = StackState.load(settings.data_dir)
    if state is None or not _alive(state.pid):
        typer.echo(json.dumps({"running": False}) if as_json else "loraloop is not running")
        raise typer.Exit(3)
    report: dict = {"running": True, "pid": state.pid, "http_url": state.http_url}
    try:
        ready = httpx.get(f"{state.http_url}/readyz", timeout=5)
        report["ready"] = ready.status_code == 200
        report["checks"] = ready.json().get("checks", {})
    except httpx.HTTPError as exc:
        report["ready"], report["checks"] = False, {"http": f"unreachable: {exc}"}
    try:
        report["replica_status"] = httpx.get(f"{state.http_url}/status", timeout=15).json()[
            "replicas"
        ]
    except (httpx.HTTPError, ValueError, KeyError):
        report["replica_status"] = []
    report.update(
        replicas=state.replicas,
        engine=state.engine,
        model=state.model,
        redis_url=state.redis_url,
        database_url=state.database_url,
        ray_address=state.ray_address,
    )
    report["waiting_for_operator"] = _waiting_for_operator(settings)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_status(report)
    raise typer.Exit(0 if report["ready"] else 1)


@app.command()
def down(
    timeout: Annotated[float, typer.Option(help="Seconds to wait before killing.")] = 60,
) -> None:
    """Stop a stack started with `loraloop up` (in the background or another terminal)."""
    import os
    import signal

    from loraloop.stack import StackState

    settings = _settings()
    state = StackState.load(settings.data_dir)
    if state is None or not _alive(state.pid):
        typer.echo("loraloop is not running")
        StackState.path(settings.data_dir).unlink(missing_ok=True)
        return
    os.kill(state.pid, signal.SIGTERM)
    waited = 0.0
    while _alive(state.pid) and waited < timeout:
        time.sleep(0.2)
        waited += 0.2
    if _alive(state.pid):
        os.killpg(state.pid, signal.SIGKILL)
        typer.echo(f"loraloop (pid {state.pid}) did not stop in {timeout} s and was killed")
        raise typer.Exit(1)
    typer.echo(f"loraloop (pid {state.pid}) stopped")


@users_app.command("forget")
def users_forget(
    user: Annotated[str, typer.Argument(help="The user name (as sent in `user` or by API key).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete USER's interactions and feedback from Redis; list the adapter versions that
    trained on them (retire those, or retrain without them, to forget completely)."""
    import asyncio

    from feedback.forget import forget_user
    from feedback.keys import RedisKeys
    from feedback.sink import async_client
    from loraloop.stack import redis_url_for
    from storage import versions_trained_on
    from storage.db import open_registry

    settings = _settings()
    redis_url = redis_url_for(settings)
    if not redis_url:
        typer.echo(
            "error: no Redis: set LORALOOP_REDIS_URL or start the stack with `loraloop up`",
            err=True,
        )
        raise typer.Exit(1)

    async def forget():
        client = async_client(redis_url, timeout_s=10)
        try:
            return await forget_user(client, RedisKeys(settings.redis_prefix), user)
        finally:
            await client.aclose()

    summary = asyncio.run(forget())
    with open_registry(settings.sqlalchemy_url)() as session:
        versions = versions_trained_on(
            session, user=summary.user, stream_ids=summary.feedback_stream_ids
        )
    report = {
        **summary.as_dict(),
        "trained_versions": [
            {"id": v.id, "tenant": v.tenant, "status": v.status} for v in versions
        ],
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(
        f"deleted {len(summary.interaction_ids)} interaction(s) and "
        f"{len(summary.feedback_stream_ids)} feedback event(s) of user {user!r}"
    )
    if versions:
        typer.echo("adapter versions trained on this user's data:")
        for v in versions:
            typer.echo(f"  {v.id}  {v.tenant}  {v.status}")
    else:
        typer.echo("no adapter version was trained on this user's data")


@learner_app.command("run")
def learner_run() -> None:
    """Run the learner in the foreground (without Ray); Ctrl-C stops it."""
    import asyncio
    import signal
    import threading

    from learner.actor import run_forever
    from loraloop.compose import learner_spec
    from storage.db import migrate

    settings = _settings()
    migrate(settings.sqlalchemy_url)  # the learner may start before the app's first deploy
    spec = learner_spec(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    typer.echo(f"learner reading {spec.redis_url} (prefix {spec.redis_prefix}); Ctrl-C stops it")
    asyncio.run(run_forever(spec, stop, {}))


@learner_app.command("status")
def learner_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Backlog, last round (with its timing breakdown), canaries and last version.

    Read from Redis when there is one (the learner may run on another host or
    pod), else from the data dir. Exit 3 if no learner has reported.
    """
    settings = _settings()
    status = _learner_status_from_redis(settings)
    if status is None:
        path = settings.data_dir / "run" / "learner.json"
        try:
            status = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            typer.echo("no learner has reported yet" if not as_json else json.dumps({}))
            raise typer.Exit(3) from None
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    age = time.time() - status.get("updated_at", 0)
    typer.echo(f"updated      {age:.0f} s ago")
    typer.echo(f"backlog      {status.get('backlog', 0)} feedback event(s) waiting")
    typer.echo(f"rounds       {status.get('rounds', 0)}")
    typer.echo(f"last version {status.get('last_version') or '-'}")
    current = status.get("round")
    if current:
        since = time.time() - current.get("started_at", time.time())
        detail = ", ".join(f"{k} {v}" for k, v in current.items()
                           if k not in ("tenant", "phase", "started_at", "phase_at"))
        typer.echo(f"round        {current.get('tenant')}: {current.get('phase')} "
                   f"({since:.0f} s in{', ' + detail if detail else ''})")
    last = status.get("last_round")
    if last:
        timings = ", ".join(
            f"{k.removesuffix('_s')} {v:.2f} s" for k, v in last.get("timings", {}).items()
        )
        typer.echo(f"last round   {last.get('tenant')}: {last.get('outcome')} ({timings})")
    for canary in status.get("canaries", []):
        p = canary.get("p_canary_better")
        typer.echo(
            f"canary       {canary['tenant']}: {canary['canary'][:12]} "
            f"{canary['canary_up']} up / {canary['canary_down']} down vs live "
            f"{canary['live_up']} / {canary['live_down']}, P(better) "
            f"{'-' if p is None else f'{p:.3f}'}: {canary['verdict']}"
        )
    for action in status.get("canary_actions", [])[-3:]:
        typer.echo(f"canary acted {action['tenant']}: {action['verdict']} {action['canary'][:12]}")
    for line in _waiting_for_operator(settings):
        typer.echo(f"waiting      {line}")


def _waiting_for_operator(settings) -> list[str]:
    """Versions that passed the gate, are newer than their tenant's live one and are not
    on a canary: nothing will serve them until an operator acts. One line each."""
    from storage import get_alias, list_versions
    from storage.db import open_registry

    try:
        with open_registry(settings.sqlalchemy_url)() as session:
            gated = list_versions(session, status="gated", limit=50)
            lines, seen = [], set()
            for version in gated:
                if version.tenant in seen:
                    continue
                seen.add(version.tenant)
                live = get_alias(session, tenant=version.tenant, alias="live")
                if live is not None and live.updated_at >= version.created_at:
                    continue  # live moved after it: an operator already chose
                lines.append(
                    f"{version.tenant}: {version.id[:12]} passed the gate and waits for an "
                    f"operator: `loraloop adapters promote {version.id[:12]}` (or `loraloop "
                    f"adapters canary {version.id[:12]} --fraction 0.1`)")
            return lines
    except Exception as exc:  # the registry is a side note here; say why it is missing
        return [f"(registry unreadable: {exc})"]


def _learner_status_from_redis(settings) -> dict | None:
    from loraloop.stack import redis_url_for

    redis_url = redis_url_for(settings)
    if not redis_url:
        return None
    import redis

    from feedback.keys import RedisKeys

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        raw = client.get(RedisKeys(settings.redis_prefix).learner_status)
        client.close()
    except redis.RedisError:
        return None  # fall back to the data dir's file
    return json.loads(raw) if raw else None


def _print_status(report: dict) -> None:
    replicas = report.pop("replica_status")
    waiting = report.pop("waiting_for_operator")
    for key, value in report.items():
        typer.echo(f"{key:13} {value}")
    for line in waiting:
        typer.echo(f"waiting       {line}")
    for i, replica in enumerate(replicas):
        manager = replica.get("adapter_manager") or {}
        resident = ", ".join(v[:12] for v in replica.get("adapters", [])) or "none"
        routes = (
            ", ".join(
                f"{tenant}: live={(r.get('live') or 'base')[:12]}"
                + (f" canary={r['canary'][:12]}@{r['fraction']}" if r.get("canary") else "")
                for tenant, r in manager.get("routes", {}).items()
            )
            or "base only"
        )
        typer.echo(
            f"replica {i}    {replica.get('engine')} [{replica.get('engine_reason', '')}] "
            f"({manager.get('name', '?')}), "
            f"queue {replica.get('queue_depth')}, adapters [{resident}], {routes}"
        )
        for swap in manager.get("swaps", [])[-3:]:
            took = f" in {swap['seconds']} s" if "seconds" in swap else ""
            typer.echo(f"    {swap['event']} {swap['version'][:12]}{took}")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def main() -> None:
    app()


if __name__ == "__main__":
    main()
