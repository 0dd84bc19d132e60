"""What a learning round reads from and does to the registry, apart from registering its
version: the live version it trains over, the data an unpromoted candidate carries over,
and the automatic promotion of a version that passed the gate."""

from __future__ import annotations

from learner.agreement import held_out_to_teach
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


def carried_examples(sessions, artifacts: ArtifactStore, tenant: str, live, *, limit: int,
                     live_dir=None, slice_limit: int = 0) -> tuple[list[Example], str | None]:
    """What a round over ``live`` (or over base) trains on besides its new feedback, the
    newest ``limit``: what ``live``'s round held out and is to teach now
    (:func:`learner.agreement.held_out_to_teach` of ``live_dir``, its artifact), then the
    data of the tenant's newest candidate trained over ``live`` that did not go live (its
    own examples, held-out ones included); and that candidate's id."""
    if limit == 0:  # carrying is off
        return [], None
    examples, source = held_out_to_teach(live_dir, slice_limit=slice_limit), None
    trained_over = live.id if live else "base"
    with sessions() as session:
        recent = list_versions(session, tenant=tenant, limit=50)
    for version in recent:
        if version.id == trained_over:
            break  # nothing newer than the live version itself
        if (version.metrics or {}).get("trained_over") == trained_over \
                and version.status not in ("live", "retired", "failed"):
            directory = artifacts.load(version.artifact_uri, sha256=version.artifact_sha256)
            examples += [e for e in load_from_adapter(directory) if e.source != "replay"]
            examples += load_from_adapter(directory, "holdout")
            source = version.id
            break
    unique: dict[tuple, Example] = {}
    for example in examples:  # the live version's held-out ones may be the candidate's too
        unique.setdefault(example.key, example)
    return list(unique.values())[-limit:], source


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
