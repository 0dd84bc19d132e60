"""`loraloop adapters ...`: ``storage.ops.RegistryOps`` rendered as text or JSON.

Mounted by ``loraloop/cli.py``. Configuration comes from ``Settings``
(``LORALOOP_DATABASE_URL``, ``LORALOOP_ARTIFACTS_URL``, ``LORALOOP_REDIS_URL``,
``LORALOOP_REDIS_PREFIX``); a registry behind this code's schema is migrated
when a command opens it. Alias changes are announced on Redis when there is
one (replicas also reconcile periodically, so nothing is lost without it).
A refused change exits with the code of its outcome (``loraloop.render``).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from loraloop import render
from loraloop.render import (
    EXIT_ARTIFACT,
    EXIT_CODES_HELP,
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    done,
    exit_code_for,
    fail,
    load_settings,
)

__all__ = [  # the exit codes stay importable from here
    "EXIT_ARTIFACT",
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "app",
    "registry_ops",
]

app = typer.Typer(
    name="adapters",
    no_args_is_help=True,
    add_completion=False,
    help="List, inspect, promote, canary, roll back, pin and retire adapter versions. "
    + EXIT_CODES_HELP,
)

Tenant = Annotated[str, typer.Option("--tenant", "-t", help="Tenant whose aliases change.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")]
Actor = Annotated[str | None, typer.Option(help="Who acts (default: cli:<os user>).")]
Version = Annotated[str, typer.Argument(help="Version id or a unique prefix (>= 6 chars).")]
Limit = Annotated[int | None, typer.Option(min=1, help="Newest entries (default: 100).")]
ExpectLive = Annotated[
    str | None,
    typer.Option(
        "--expect-live",
        help="Version you believe is live ('none' for no live version); the change is "
        "refused (exit 5) if another one is. Default: no check (changes are still serialized).",
    ),
]


@contextmanager
def registry_ops(actor: str | None = None, settings=None) -> Iterator[Any]:
    """``RegistryOps`` on the configured registry, acting as ``actor`` (default
    ``cli:<os user>``); a registry error exits with the code of its outcome."""
    from loraloop.stack import redis_url_for
    from storage import RegistryError, RegistryOps, open_registry

    settings = settings or load_settings()
    try:
        sessions = open_registry(settings.sqlalchemy_url)
    except Exception as exc:
        fail(f"cannot open the registry: {exc}")
    notifier = None
    redis_url = redis_url_for(settings)
    if redis_url:
        from storage.alias_events import AliasChangePublisher

        notifier = AliasChangePublisher.from_url(redis_url, prefix=settings.redis_prefix)
    ops = RegistryOps(
        sessions,
        actor=actor or _os_actor(),
        notifier=notifier,
        artifacts=settings.artifacts_location,
    )
    try:
        yield ops
    except RegistryError as exc:
        fail(f"{type(exc).__name__}: {exc}", exit_code_for(exc.outcome))
    finally:
        sessions.kw["bind"].dispose()
        if notifier is not None:
            notifier.close()


def _os_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in a bare container
        return "cli"


def _json_option(value: str | None, name: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{name} must be a JSON object, got {value!r}: {exc}") from exc
    if not isinstance(parsed, dict):
        raise typer.BadParameter(f"{name} must be a JSON object, got {value!r}")
    return parsed


def _expected(given: str | None) -> dict[str, str | None]:
    """``--expect-live`` as ``RegistryOps`` takes it: nothing when the option is absent."""
    if given is None:
        return {}
    return {"expected_live": None if given.lower() == "none" else given}


@app.command("list")
def list_(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    limit: Limit = None,
    as_json: Json = False,
) -> None:
    """List versions, newest first, with the aliases that point at them."""
    with registry_ops() as ops:
        render.versions(ops.versions(tenant=tenant, status=status, limit=limit), as_json)


@app.command()
def show(version: Version, as_json: Json = False) -> None:
    """Show one version: config, artifact, metrics, data size and aliases."""
    with registry_ops() as ops:
        render.version(ops.show(version), as_json)


@app.command()
def diff(a: Version, b: Version, as_json: Json = False) -> None:
    """What differs between two versions: config, metrics and training data."""
    with registry_ops() as ops:
        render.diff(ops.diff(a, b), as_json)


@app.command()
def register(
    directory: Annotated[Path, typer.Argument(help="A peft adapter directory (safetensors).")],
    tenant: Tenant = "default",
    base_model: Annotated[
        str | None,
        typer.Option(help="Base model (default: base_model_name_or_path of adapter_config.json)."),
    ] = None,
    parent: Annotated[str | None, typer.Option(help="Version it was warm-started from.")] = None,
    metrics: Annotated[str | None, typer.Option(help="Metrics as a JSON object.")] = None,
    actor: Actor = None,
    reason: Reason = "",
    as_json: Json = False,
) -> None:
    """Publish an adapter directory to the artifact store and register it as a candidate."""
    extra = _json_option(metrics, "--metrics")
    with registry_ops(actor) as ops:
        v = ops.register(
            directory,
            tenant=tenant,
            base_model=base_model,
            parent_id=parent,
            metrics=extra,
            reason=reason,
        )
    done(as_json, v, f"registered {v.id} for tenant {v.tenant} ({v.status})")


@app.command()
def gate(
    version: Version,
    passed: Annotated[bool, typer.Option("--passed/--rejected", help="Gate verdict.")],
    metrics: Annotated[str | None, typer.Option(help="Metrics as a JSON object.")] = None,
    actor: Actor = None,
    reason: Reason = "",
    as_json: Json = False,
) -> None:
    """Record an evaluation gate verdict: candidate -> gated (or rejected)."""
    values = _json_option(metrics, "--metrics")
    with registry_ops(actor) as ops:
        v = ops.gate(version, passed=passed, metrics=values, reason=reason)
    done(as_json, v, f"{v.id} is {v.status}")


@app.command()
def promote(
    version: Version,
    expect_live: ExpectLive = None,
    force: Annotated[bool, typer.Option(help="Override a pin on the live alias.")] = False,
    actor: Actor = None,
    reason: Reason = "",
    as_json: Json = False,
) -> None:
    """Make a version live for its tenant (the previous live version retires)."""
    with registry_ops(actor) as ops:
        moved = ops.promote(version, force=force, reason=reason, **_expected(expect_live))
    render.moved(moved, as_json)


@app.command()
def canary(
    version: Annotated[str | None, typer.Argument(help="Version to canary.")] = None,
    fraction: Annotated[
        float | None, typer.Option(help="Share of traffic, strictly between 0 and 1.")
    ] = None,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the tenant's canary.")] = False,
    rollback: Annotated[
        bool,
        typer.Option("--rollback", help="With --stop: mark the canary rolled_back, not gated."),
    ] = False,
    tenant: Tenant = "default",
    actor: Actor = None,
    reason: Reason = "",
    as_json: Json = False,
) -> None:
    """Start a canary (VERSION --fraction F), change its fraction, or stop it (--stop)."""
    if stop == (version is not None) or (not stop and fraction is None):
        raise typer.BadParameter("give VERSION --fraction F to start a canary, or --stop")
    with registry_ops(actor) as ops:
        if stop:
            v = ops.stop_canary(tenant, rollback=rollback, reason=reason)
            return done(as_json, v, f"canary {v.id} stopped; it is {v.status}")
        assert version is not None and fraction is not None
        a = ops.start_canary(version, fraction=fraction, reason=reason)
    done(as_json, a, f"{a.tenant}/canary -> {a.version_id} at {a.fraction:g}")


@app.command()
def rollback(
    tenant: Tenant = "default",
    to: Annotated[
        str | None, typer.Option(help="Version to restore (default: the previous live one).")
    ] = None,
    expect_live: ExpectLive = None,
    actor: Actor = None,
    reason: Reason = "",
    as_json: Json = False,
) -> None:
    """Put the previous live version back, instantly; the current one is rolled_back."""
    with registry_ops(actor) as ops:
        moved = ops.rollback(tenant, to_version=to, reason=reason, **_expected(expect_live))
    render.moved(moved, as_json)


@app.command("pin")
def pin_(
    version: Annotated[str | None, typer.Argument(help="Version to pin live.")] = None,
    release: Annotated[bool, typer.Option("--release", help="Release the pin.")] = False,
    tenant: Tenant = "default",
    actor: Actor = None,
    reason: Reason = "",
    as_json: Json = False,
) -> None:
    """Pin a version live (promotions then need --force), or release the pin."""
    if release == (version is not None):
        raise typer.BadParameter("give VERSION to pin it, or --release [--tenant T]")
    with registry_ops(actor) as ops:
        a = ops.unpin(tenant, reason=reason) if version is None else ops.pin(version, reason=reason)
    state = "pinned" if a.pinned else "unpinned"
    done(as_json, a, f"{a.tenant}/live -> {a.version_id} ({state})")


@app.command()
def retire(
    version: Version, actor: Actor = None, reason: Reason = "", as_json: Json = False
) -> None:
    """Retire a version that is not live (a canary loses its traffic)."""
    with registry_ops(actor) as ops:
        v = ops.retire(version, reason=reason)
    done(as_json, v, f"{v.id} is {v.status}")


@app.command("history")
def history_(
    version: Annotated[str | None, typer.Argument(help="Only this version.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
    limit: Limit = None,
    as_json: Json = False,
) -> None:
    """The audit trail (oldest first): who did what, when, why, and how it ended."""
    with registry_ops() as ops:
        render.history(ops.history(version_id=version, tenant=tenant, limit=limit), as_json)
