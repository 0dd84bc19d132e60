"""`loraloop adapters ...`: ops commands over the adapter registry.

Mounted by ``loraloop/cli.py``. Configuration comes from ``Settings``
(``LORALOOP_DATABASE_URL``, ``LORALOOP_ARTIFACTS_URL``, ``LORALOOP_REDIS_URL``,
``LORALOOP_REDIS_PREFIX``); migrations are applied when a command opens the
registry. Alias changes are announced on Redis when ``LORALOOP_REDIS_URL`` is
set (replicas also reconcile periodically, so nothing is lost without it).

Exit codes (for scripts and probes):

====  ==========================================================
0     success
1     unexpected error (configuration, database unreachable...)
2     bad usage: unknown option, malformed value (typer/click)
3     not found: unknown version id or prefix, unset alias
4     conflict: another change won, the alias is pinned, nothing to roll back to
5     refused: illegal status move or invalid value (e.g. a canary fraction)
6     artifact error: corrupt, unsafe (pickle) or missing adapter files
====  ==========================================================
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_REFUSED, EXIT_ARTIFACT = (
    0,
    1,
    2,
    3,
    4,
    5,
    6,
)

app = typer.Typer(
    name="adapters",
    no_args_is_help=True,
    add_completion=False,
    help="List, inspect, promote, canary, roll back, pin and retire adapter "
    "versions. Exit codes: 0 ok, 1 error, 2 usage, 3 not found, "
    "4 conflict, 5 refused (illegal move or value), 6 artifact error.",
)

Tenant = Annotated[str, typer.Option("--tenant", "-t", help="Tenant whose aliases change.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")]
Actor = Annotated[str | None, typer.Option(help="Who acts (default: cli:<os user>).")]
Version = Annotated[str, typer.Argument(help="Version id or a unique prefix (>= 6 chars).")]
ExpectLive = Annotated[
    str | None,
    typer.Option(
        "--expect-live",
        help="Version you believe is live ('none' for no live version); the "
        "change is refused (exit 4) if another one is. Default: the live version read just before.",
    ),
]


@dataclass
class _Ctx:
    session: Any
    notifier: Any
    settings: Any

    def actor(self, given: str | None) -> str:
        if given:
            return given
        try:
            return f"cli:{getpass.getuser()}"
        except Exception:  # no user name in a bare container
            return "cli"


@contextmanager
def _registry() -> Iterator[_Ctx]:
    """Open the registry from Settings; map storage errors to messages and exit codes."""
    from loraloop.settings import Settings
    from loraloop.stack import redis_url_for
    from storage import (
        AliasNotFound,
        ArtifactError,
        Conflict,
        IllegalTransition,
        InvalidArgument,
        RegistryError,
        VersionNotFound,
        open_registry,
    )

    try:
        settings = Settings()
        factory = open_registry(settings.sqlalchemy_url)
    except Exception as exc:
        _fail(f"cannot open the registry: {exc}", EXIT_ERROR)
    notifier = None
    redis_url = redis_url_for(settings)
    if redis_url:
        from feedback.notify import AliasChangePublisher

        notifier = AliasChangePublisher.from_url(redis_url, prefix=settings.redis_prefix)
    session = factory()
    codes = [
        (VersionNotFound, EXIT_NOT_FOUND),
        (AliasNotFound, EXIT_NOT_FOUND),
        (Conflict, EXIT_CONFLICT),
        (IllegalTransition, EXIT_REFUSED),
        (InvalidArgument, EXIT_REFUSED),
        (ArtifactError, EXIT_ARTIFACT),
        (RegistryError, EXIT_ERROR),
    ]
    try:
        yield _Ctx(session, notifier, settings)
    except RegistryError as exc:
        code = next(c for cls, c in codes if isinstance(exc, cls))
        _fail(f"{type(exc).__name__}: {exc}", code)
    finally:
        session.close()
        factory.kw["bind"].dispose()
        if notifier is not None:
            notifier.close()


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _console():
    from rich.console import Console

    return Console(soft_wrap=False, width=200)


def _emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    _console().print(table)


def _short(version_id: str | None) -> str:
    return version_id[:12] if version_id else "-"


def _metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
    )


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


def _expected(ctx: _Ctx, tenant: str, given: str | None) -> str | None:
    from storage import get_alias

    if given is None:
        live = get_alias(ctx.session, tenant=tenant, alias="live")
        return live.version_id if live else None
    return None if given.lower() == "none" else given


def _tenant_of(ctx: _Ctx, version: str) -> str:
    from storage import get_version

    return get_version(ctx.session, version_id=version).tenant


@app.command("list")
def list_(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Json = False,
) -> None:
    """List versions, newest first, with the aliases that point at them."""
    from storage import list_aliases, list_versions

    with _registry() as ctx:
        versions = list_versions(ctx.session, tenant=tenant, status=status, limit=limit)
        aliases = list_aliases(ctx.session, tenant=tenant)
    marks: dict[str, list[str]] = {}
    for a in aliases:
        marks.setdefault(a.version_id, []).append(
            a.name + (f"({a.fraction:g})" if a.fraction else "") + ("[pinned]" if a.pinned else "")
        )
    if as_json:
        return _emit_json([{**v.to_dict(), "aliases": marks.get(v.id, [])} for v in versions])
    _table(
        "adapter versions",
        ["id", "tenant", "status", "aliases", "parent", "data", "metrics", "created"],
        [
            [
                _short(v.id),
                v.tenant,
                v.status,
                " ".join(marks.get(v.id, [])),
                _short(v.parent_id),
                v.dataset_size,
                _metrics(v.metrics),
                v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            ]
            for v in versions
        ],
    )


@app.command()
def show(version: Version, as_json: Json = False) -> None:
    """Show one version: config, artifact, metrics, data size and aliases."""
    from storage import get_version, list_aliases

    with _registry() as ctx:
        v = get_version(ctx.session, version_id=version)
        aliases = [
            a.to_dict() for a in list_aliases(ctx.session, tenant=v.tenant) if a.version_id == v.id
        ]
    data = {**v.to_dict(), "aliases": aliases}
    if as_json:
        return _emit_json(data)
    _table(
        f"version {v.id}",
        ["field", "value"],
        [
            [k, json.dumps(val, sort_keys=True) if isinstance(val, dict | list) else val]
            for k, val in data.items()
        ],
    )


@app.command()
def diff(a: Version, b: Version, as_json: Json = False) -> None:
    """What differs between two versions: config, metrics and training data."""
    from storage import diff_versions

    with _registry() as ctx:
        d = diff_versions(ctx.session, a=a, b=b)
    if as_json:
        return _emit_json(d.to_dict())
    rows = [[f"config.{k}", va, vb] for k, (va, vb) in d.config.items()]
    rows += [[f"metrics.{k}", va, vb] for k, (va, vb) in d.metrics.items()]
    rows += [
        ["data.size", d.data["a_size"], d.data["b_size"]],
        ["data.shared", d.data["shared"], d.data["shared"]],
        ["data.only_in", d.data["only_a"], d.data["only_b"]],
    ]
    _table(f"diff {_short(d.a)} -> {_short(d.b)}", ["field", _short(d.a), _short(d.b)], rows)


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
    from storage import ArtifactStore, register_candidate

    extra = _json_option(metrics, "--metrics")
    with _registry() as ctx:
        published = ArtifactStore(ctx.settings.artifacts_location).publish(directory)
        base = base_model or published.lora_config.get("base_model_name_or_path")
        if not base:
            raise typer.BadParameter("adapter_config.json names no base model; pass --base-model")
        v = register_candidate(
            ctx.session,
            version_id=published.version_id,
            tenant=tenant,
            base_model=str(base),
            artifact_uri=published.uri,
            artifact_sha256=published.sha256,
            lora_config=published.lora_config,
            parent_id=parent,
            metrics=extra,
            actor=ctx.actor(actor),
            reason=reason,
        )
    _done(as_json, v.to_dict(), f"registered {v.id} for tenant {v.tenant} ({v.status})")


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
    from storage import record_gate

    values = _json_option(metrics, "--metrics")
    with _registry() as ctx:
        v = record_gate(
            ctx.session,
            version_id=version,
            passed=passed,
            metrics=values,
            actor=ctx.actor(actor),
            reason=reason,
        )
    _done(as_json, v.to_dict(), f"{v.id} is {v.status}")


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
    from storage import promote as do_promote

    with _registry() as ctx:
        expected = _expected(ctx, _tenant_of(ctx, version), expect_live)
        alias = do_promote(
            ctx.session,
            version_id=version,
            expected_live=expected,
            force=force,
            actor=ctx.actor(actor),
            reason=reason,
            on_alias_change=ctx.notifier,
        )
    _done(
        as_json,
        alias.to_dict(),
        f"{alias.tenant}/live -> {alias.version_id} (was {expected or 'none'})",
    )


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
    from storage import start_canary, stop_canary

    if stop == (version is not None) or (not stop and fraction is None):
        raise typer.BadParameter("give VERSION --fraction F to start a canary, or --stop")
    with _registry() as ctx:
        if stop:
            v = stop_canary(
                ctx.session,
                tenant=tenant,
                rollback=rollback,
                actor=ctx.actor(actor),
                reason=reason,
                on_alias_change=ctx.notifier,
            )
            return _done(as_json, v.to_dict(), f"canary {v.id} stopped; it is {v.status}")
        assert version is not None and fraction is not None
        alias = start_canary(
            ctx.session,
            version_id=version,
            fraction=fraction,
            actor=ctx.actor(actor),
            reason=reason,
            on_alias_change=ctx.notifier,
        )
    _done(
        as_json,
        alias.to_dict(),
        f"{alias.tenant}/canary -> {alias.version_id} at {alias.fraction:g}",
    )


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
    from storage import rollback as do_rollback

    with _registry() as ctx:
        expected = _expected(ctx, tenant, expect_live)
        alias = do_rollback(
            ctx.session,
            tenant=tenant,
            to_version=to,
            expected_live=expected,
            actor=ctx.actor(actor),
            reason=reason,
            on_alias_change=ctx.notifier,
        )
    _done(as_json, alias.to_dict(), f"{alias.tenant}/live -> {alias.version_id} (was {expected})")


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
    from storage import pin, unpin

    if release == (version is not None):
        raise typer.BadParameter("give VERSION to pin it, or --release [--tenant T]")
    with _registry() as ctx:
        if release:
            alias = unpin(ctx.session, tenant=tenant, actor=ctx.actor(actor), reason=reason)
        else:
            assert version is not None
            alias = pin(
                ctx.session,
                version_id=version,
                actor=ctx.actor(actor),
                reason=reason,
                on_alias_change=ctx.notifier,
            )
    state = "pinned" if alias.pinned else "unpinned"
    _done(as_json, alias.to_dict(), f"{alias.tenant}/live -> {alias.version_id} ({state})")


@app.command()
def retire(
    version: Version, actor: Actor = None, reason: Reason = "", as_json: Json = False
) -> None:
    """Retire a version that is not live (a canary loses its traffic)."""
    from storage import retire as do_retire

    with _registry() as ctx:
        v = do_retire(
            ctx.session,
            version_id=version,
            actor=ctx.actor(actor),
            reason=reason,
            on_alias_change=ctx.notifier,
        )
    _done(as_json, v.to_dict(), f"{v.id} is {v.status}")


@app.command("history")
def history_(
    version: Annotated[str | None, typer.Argument(help="Only this version.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Json = False,
) -> None:
    """The audit trail (oldest first): who did what, when, why, and how it ended."""
    from storage import history

    with _registry() as ctx:
        entries = history(ctx.session, version_id=version, tenant=tenant, limit=limit)
    if as_json:
        return _emit_json([e.to_dict() for e in entries])
    _table(
        "audit",
        ["at", "actor", "action", "outcome", "version", "status", "alias", "reason"],
        [
            [
                e.at.strftime("%Y-%m-%d %H:%M:%S"),
                e.actor,
                e.action,
                e.outcome,
                _short(e.version_id),
                f"{e.from_status or '-'} -> {e.to_status or '-'}",
                f"{e.alias}: {_short(e.from_version)} -> {_short(e.to_version)}" if e.alias else "",
                e.reason or e.detail[:60],
            ]
            for e in entries
        ],
    )


def _done(as_json: bool, data: dict[str, Any], message: str) -> None:
    if as_json:
        _emit_json(data)
    else:
        typer.echo(message)
