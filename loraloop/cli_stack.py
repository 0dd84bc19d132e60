"""`loraloop up`, `status` and `down`: the running stack. Merged into ``loraloop.cli``'s app.

``status`` is a probe: exit 0 when every part is ready, 1 when one is degraded,
3 when nothing runs (``loraloop.render``'s exit codes).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from loraloop import render
from loraloop.render import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK, fail, load_settings

app = typer.Typer()


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

    settings = load_settings()
    overrides = {k: v for k, v in (("http_host", host), ("http_port", port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    try:
        auto_promote_policy(settings)
    except ValueError as exc:
        fail(str(exc))
    existing = StackState.load(settings.data_dir)
    if existing is not None and alive(existing.pid):
        fail(
            f"loraloop is already running (pid {existing.pid}, "
            f"{existing.http_url}); `loraloop down` stops it"
        )
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
        fail(f"loraloop did not become ready; see {log}")
    typer.echo(describe(state))
    typer.echo(f"loraloop is up in the background (log: {log}); `loraloop down` stops it.")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Report each part of a running stack. Exit 0 all healthy, 1 degraded, 3 not running."""
    import httpx

    from loraloop.stack import StackState

    settings = load_settings()
    state = StackState.load(settings.data_dir)
    if state is None or not alive(state.pid):
        typer.echo(json.dumps({"running": False}) if as_json else "loraloop is not running")
        raise typer.Exit(EXIT_NOT_RUNNING)
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
    report["waiting_for_operator"] = waiting_for_operator(settings)
    report["compute"] = compute_outcomes(settings, state.redis_url)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        render.stack_status(report)
    raise typer.Exit(EXIT_OK if report["ready"] else EXIT_ERROR)


def compute_outcomes(settings, redis_url: str) -> dict:
    """Per tenant, version and strategy: requests, compute, handoffs, thumbs-up rate."""
    import asyncio

    from feedback.keys import RedisKeys
    from serving.compute.ledger import ComputeLedger

    async def read() -> dict:
        ledger = ComputeLedger(redis_url, RedisKeys(settings.redis_prefix))
        try:
            return {t: await ledger.summary(t) for t in settings.tenants}
        finally:
            await ledger.close()

    try:
        return asyncio.run(read())
    except Exception as exc:  # status reports what it cannot read; it never fails on it
        return {"error": f"unreadable from Redis: {exc!r}"}


@app.command()
def down(
    timeout: Annotated[float, typer.Option(help="Seconds to wait before killing.")] = 60,
) -> None:
    """Stop a stack started with `loraloop up` (in the background or another terminal)."""
    import os
    import signal

    from loraloop.stack import StackState

    settings = load_settings()
    state = StackState.load(settings.data_dir)
    if state is None or not alive(state.pid):
        typer.echo("loraloop is not running")
        StackState.path(settings.data_dir).unlink(missing_ok=True)
        return
    os.kill(state.pid, signal.SIGTERM)
    waited = 0.0
    while alive(state.pid) and waited < timeout:
        time.sleep(0.2)
        waited += 0.2
    if alive(state.pid):
        os.killpg(state.pid, signal.SIGKILL)
        typer.echo(f"loraloop (pid {state.pid}) did not stop in {timeout} s and was killed")
        raise typer.Exit(EXIT_ERROR)
    typer.echo(f"loraloop (pid {state.pid}) stopped")


def waiting_for_operator(settings) -> list[str]:
    """One line per version that passed the gate and that nothing serves until an
    operator acts (``storage.ops.RegistryOps.awaiting_operator``)."""
    from storage import RegistryOps, open_registry

    try:
        sessions = open_registry(settings.sqlalchemy_url)
        try:
            waiting = RegistryOps(sessions, actor="status").awaiting_operator()
        finally:
            sessions.kw["bind"].dispose()
    except Exception as exc:  # the registry is a side note here; say why it is missing
        return [f"(registry unreadable: {exc})"]
    return [render.awaiting_operator(version) for version in waiting]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
