"""How the CLI shows things: its exit codes, errors, JSON and tables.

Commands (``loraloop.cli`` and the modules it mounts) get their data from the
packages and hand it here; nothing here reads or changes state. Heavy imports
(rich) wait until something is printed.
"""

from __future__ import annotations

import json
import time
from typing import Any, NoReturn

import typer

#: Exit codes, one meaning each, for scripts and probes.
EXIT_OK = 0
EXIT_ERROR = 1  # failed: an error the command reports, or what `status` checks is degraded
EXIT_USAGE = 2  # bad usage: unknown option, malformed value (typer/click)
EXIT_NOT_RUNNING = 3  # nothing is running to ask: no stack (`status`), no learner report
EXIT_NOT_FOUND = 4  # unknown version id or prefix, unset alias
EXIT_CONFLICT = 5  # another change won, the alias is pinned, nothing to roll back to
EXIT_REFUSED = 6  # illegal status move or invalid value (a canary fraction, a status name)
EXIT_ARTIFACT = 7  # corrupt, unsafe (pickle) or missing adapter files
EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 error (or degraded), 2 usage, 3 not running, 4 not found, "
    "5 conflict, 6 refused (illegal move or invalid value), 7 artifact error."
)
#: A registry error's ``outcome`` (``storage.errors``) -> the exit code.
_BY_OUTCOME = {
    "not_found": EXIT_NOT_FOUND,
    "conflict": EXIT_CONFLICT,
    "illegal": EXIT_REFUSED,
    "invalid": EXIT_REFUSED,
    "artifact": EXIT_ARTIFACT,
}


def exit_code_for(outcome: str) -> int:
    """The exit code of a refused registry change, by its audit outcome."""
    return _BY_OUTCOME.get(outcome, EXIT_ERROR)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_settings():
    """The configuration; a bad value exits 1 with pydantic's message (it names the setting)."""
    from loraloop.settings import Settings

    try:
        return Settings()
    except Exception as exc:
        fail(f"invalid configuration:\n{exc}")


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def done(as_json: bool, data: Any, message: str) -> None:
    """``data`` as JSON, or the one-line ``message``."""
    if as_json:
        emit_json(data.to_dict() if hasattr(data, "to_dict") else data)
    else:
        typer.echo(message)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = Table(title=title, show_lines=False)
    for column in columns:
        shown.add_column(column, overflow="fold")
    for row in rows:
        shown.add_row(*["" if v is None else str(v) for v in row])
    Console(soft_wrap=False, width=200).print(shown)


def short(version_id: str | None) -> str:
    return version_id[:12] if version_id else "-"


def _metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
    )


def _when(at) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


# -- registry views (storage.views / storage.ops) -----------------------------------------------
def versions(rows: list, as_json: bool) -> None:
    """``storage.ops.Listed`` rows: a version and the aliases on it."""
    if as_json:
        return emit_json([{**r.version.to_dict(), "aliases": r.marks()} for r in rows])
    lines = []
    for r in rows:
        v = r.version
        lines.append([short(v.id), v.tenant, v.status, " ".join(r.marks()), short(v.parent_id),
                      v.dataset_size, _metrics(v.metrics), _when(v.created_at)])
    columns = ["id", "tenant", "status", "aliases", "parent", "data", "metrics", "created"]
    table("adapter versions", columns, lines)


def version(row, as_json: bool) -> None:
    """One ``storage.ops.Listed``: every field, and the aliases on it in full."""
    data = {**row.version.to_dict(), "aliases": [a.to_dict() for a in row.aliases]}
    if as_json:
        return emit_json(data)
    table(
        f"version {row.version.id}",
        ["field", "value"],
        [
            [k, json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v]
            for k, v in data.items()
        ],
    )


def diff(d, as_json: bool) -> None:
    """A ``storage.views.VersionDiff``."""
    if as_json:
        return emit_json(d.to_dict())
    rows = [[f"config.{k}", va, vb] for k, (va, vb) in d.config.items()]
    rows += [[f"metrics.{k}", va, vb] for k, (va, vb) in d.metrics.items()]
    rows += [
        ["data.size", d.data["a_size"], d.data["b_size"]],
        ["data.shared", d.data["shared"], d.data["shared"]],
        ["data.only_in", d.data["only_a"], d.data["only_b"]],
    ]
    table(f"diff {short(d.a)} -> {short(d.b)}", ["field", short(d.a), short(d.b)], rows)


def history(entries: list, as_json: bool) -> None:
    """``storage.views.AuditEntry`` rows, oldest first."""
    if as_json:
        return emit_json([e.to_dict() for e in entries])
    table(
        "audit",
        ["at", "actor", "action", "outcome", "version", "status", "alias", "reason"],
        [
            [
                _when(e.at),
                e.actor,
                e.action,
                e.outcome,
                short(e.version_id),
                f"{e.from_status or '-'} -> {e.to_status or '-'}",
                f"{e.alias}: {short(e.from_version)} -> {short(e.to_version)}" if e.alias else "",
                e.reason or e.detail[:60],
            ]
            for e in entries
        ],
    )


def moved(move, as_json: bool) -> None:
    """A ``storage.ops.Moved``: the alias now, and what it pointed at before."""
    a = move.alias
    done(as_json, move, f"{a.tenant}/{a.name} -> {a.version_id} (was {move.previous or 'none'})")


def awaiting_operator(version) -> str:
    """One line about a gated version nothing serves until an operator acts."""
    vid = version.id[:12]
    return (
        f"{version.tenant}: {vid} passed the gate and waits for an operator: "
        f"`loraloop adapters promote {vid}` (or `loraloop adapters canary {vid} --fraction 0.1`)"
    )


def forgotten(user: str, summary, versions: list, as_json: bool) -> None:
    """``loraloop users forget``: what was deleted (a ``feedback.forget`` summary) and the
    versions that trained on the user's data."""
    trained = [{"id": v.id, "tenant": v.tenant, "status": v.status} for v in versions]
    if as_json:
        return emit_json({**summary.as_dict(), "trained_versions": trained})
    typer.echo(
        f"deleted {len(summary.interaction_ids)} interaction(s) and "
        f"{len(summary.feedback_stream_ids)} feedback event(s) of user {user!r}"
    )
    if not versions:
        return typer.echo("no adapter version was trained on this user's data")
    typer.echo("adapter versions trained on this user's data:")
    for v in versions:
        typer.echo(f"  {v.id}  {v.tenant}  {v.status}")


# -- the running stack -------------------------------------------------------------------------
def stack_status(report: dict) -> None:
    """``loraloop status``'s report: the stack, what waits for an operator, each replica."""
    replicas = report.pop("replica_status")
    waiting = report.pop("waiting_for_operator")
    compute = report.pop("compute", {})
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
        for version, r in manager.get("retrying", {}).items():
            typer.echo(f"    retrying {version[:12]} ({r['kind']}, attempt {r['attempts']}, "
                       f"next in {r['retry_in_s']} s): {r['error']}")
        if manager.get("load_errors"):
            typer.echo(f"    load errors {manager['load_errors']}")
        upstream = (replica.get("compute") or {}).get("upstream")
        if upstream:
            typer.echo(f"    upstream circuit {upstream['breaker']['state']}, "
                       f"{json.dumps(upstream['tenants'])}")
    compute_outcomes(compute)


def compute_outcomes(compute: dict) -> None:
    """Per tenant, version and strategy: what answers cost and how users rated them."""
    if "error" in compute:
        typer.echo(f"compute       {compute['error']}")
        return
    rows = []
    for tenant, versions in compute.items():
        for version, strategies in versions.items():
            for strategy, s in strategies.items():
                rate = s.get("thumbs_up_rate")
                rows.append([tenant, short(version), strategy, s.get("requests", 0),
                             s.get("compute_tokens_per_request", "-"),
                             s.get("handoffs_per_request", "-"), s.get("upstream_tokens", 0),
                             s.get("fallbacks", 0), "-" if rate is None else rate])
    if rows:
        table("test-time compute", ["tenant", "version", "strategy", "requests",
                                    "compute/req", "handoff rate", "upstream tokens",
                                    "fallbacks", "thumbs-up rate"], rows)


def learner_status(status: dict, waiting: list[str]) -> None:
    """``loraloop learner status``: what the learner last reported, and what waits."""
    now = time.time()
    typer.echo(f"updated      {now - status.get('updated_at', 0):.0f} s ago")
    typer.echo(f"backlog      {status.get('backlog', 0)} feedback event(s) waiting")
    typer.echo(f"rounds       {status.get('rounds', 0)}")
    typer.echo(f"last version {status.get('last_version') or '-'}")
    current = status.get("round")
    if current:
        since = now - current.get("started_at", now)
        detail = ", ".join(f"{k} {v}" for k, v in current.items()
                           if k not in ("tenant", "phase", "started_at", "phase_at", "step",
                                        "steps"))
        if current.get("steps"):
            detail = f"step {current.get('step', 0)}/{current['steps']}" + \
                (", " + detail if detail else "")
        typer.echo(f"round        {current.get('tenant')}: {current.get('phase')} "
                   f"({since:.0f} s in{', ' + detail if detail else ''})")
    age = max(0.0, now - status.get("updated_at", now))
    if current:
        typer.echo("next round   after the one running now")
    elif status.get("next_trigger"):
        typer.echo(f"next round   {next_trigger(status['next_trigger'], age)}")
    last = status.get("last_round")
    if last:
        timings = ", ".join(
            f"{k.removesuffix('_s')} {v:.2f} s" for k, v in last.get("timings", {}).items()
        )
        typer.echo(f"last round   {last.get('tenant')}: {last.get('outcome')} ({timings})")
    for row in status.get("recent_rounds", [])[-5:]:
        typer.echo(f"recent round {row.get('tenant')} {(row.get('version') or '-')[:12]}: "
                   f"{row.get('outcome')}, {row.get('seconds', 0):.1f} s, "
                   f"feedback-to-live {feedback_to_live(row)}")
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
    for line in waiting:
        typer.echo(f"waiting      {line}")


def next_trigger(trigger: dict, age_s: float = 0.0) -> str:
    """What starts the learner's next round (``learner.triggers.next_trigger``), in words;
    ``age_s``: how old the reading is."""
    backlog, needed = trigger.get("backlog", 0), trigger.get("needed")
    pause = f"{trigger.get('settle_needed')} after a {trigger.get('settle_s', 0):g} s pause"
    reason = trigger.get("reason")
    if reason == "waiting_for_feedback":
        return f"on new feedback: {needed} event(s) start one at once, {pause}"
    left = max(0.0, float(trigger.get("in_s") or 0) - age_s)
    when = "now" if left == 0 else f"in {left:.0f} s"
    if reason == "burst":
        why = f"a burst of {backlog} event(s) (>= {needed})"
    elif reason == "settle":
        why = f"the pause after {backlog} event(s) ({pause}; {needed} start one at once)"
    else:
        why = (f"the max interval ({trigger.get('max_interval_s', 0):g} s since the last "
               f"round) with {backlog} event(s) waiting")
        if trigger.get("deferred"):
            why += f", {trigger['deferred']} of them deferred until new feedback comes"
    return f"{when}: {why}"


def feedback_to_live(row: dict) -> str:
    """A recent round's feedback-to-live time (``learner.round_log``), in words."""
    if row.get("feedback_to_live_s") is not None:
        return f"{row['feedback_to_live_s']:.1f} s"
    if not row.get("version"):
        return "- (no version)"
    return f"never ({row['never_live']})" if row.get("never_live") else "not live yet"
