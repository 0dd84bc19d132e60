"""What a learning round reads from and does to the registry, apart from registering its
version: the live version it trains over, the data an unpromoted candidate carries over,
and the automatic promotion of a version that passed the gate."""

from __future__ import annotations

from learner.examples import Example, load_from_adapter
from storage import (
    ArtifactStore,
    get_alias,
    get_version,
    list_versions,
    promote,
    start_canary,
    stop_canary,
)


def live_version(sessions, tenant: str):
    """The tenant's live version, or ``None`` while it serves the base model."""
    with sessions() as session:
        alias = get_alias(session, tenant=tenant, alias="live")
        return get_version(session, version_id=alias.version_id) if alias else None


def carried_examples(sessions, artifacts: ArtifactStore, tenant: str, live, *,
                     limit: int) -> tuple[list[Example], str | None]:
    """The data of the tenant's newest candidate trained over ``live`` (or over base) that
    did not go live: its own examples, held-out ones included (the newest ``limit``), and
    that candidate's id."""
    if limit == 0:  # carrying is off
        return [], None
    trained_over = live.id if live else "base"
    with sessions() as session:
        recent = list_versions(session, tenant=tenant, limit=50)
    for version in recent:
        if version.id == trained_over:
            return [], None  # nothing newer than the live version itself
        if (version.metrics or {}).get("trained_over") == trained_over \
                and version.status not in ("live", "retired", "failed"):
            directory = artifacts.load(version.artifact_uri, sha256=version.artifact_sha256)
            own = [e for e in load_from_adapter(directory) if e.source != "replay"]
            examples = own + load_from_adapter(directory, "holdout")
            return examples[-limit:], version.id
    return [], None


def auto_promote(sessions, *, tenant: str, version_id: str, policy: str, parent,
                 canary_fraction: float, notifier=None) -> str:
    """Apply ``policy`` (``canary`` or ``live``) to a version that passed the gate; returns
    the outcome. A new canary replaces a running one: it was trained on that one's data
    and newer feedback."""
    with sessions() as session:
        if policy == "canary":
            canary = get_alias(session, tenant=tenant, alias="canary")
            if canary is not None:
                stop_canary(session, tenant=canary.tenant, actor="learner",
                            reason=f"superseded by {version_id}, trained on its data "
                            "and newer feedback", on_alias_change=notifier)
            start_canary(session, version_id=version_id, fraction=canary_fraction,
                         actor="learner", reason="gate passed; auto_promote=canary",
                         on_alias_change=notifier)
            return f"canary at {canary_fraction}"
        promote(session, version_id=version_id, actor="learner",
                reason=f"gate passed; auto_promote={policy}",
                expected_live=parent.id if parent else None, on_alias_change=notifier)
        return "live"
