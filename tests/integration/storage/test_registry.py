"""The registry on SQLite and PostgreSQL: lifecycle, audit trail, state machine, datasets."""

from __future__ import annotations

import itertools
import math

import pytest

import storage
from storage import (
    AliasNotFound,
    Conflict,
    IllegalTransition,
    InvalidArgument,
    RegistryError,
    VersionNotFound,
)
from storage.states import TRANSITIONS, Status


def _trail(session, tenant):
    return [
        (e.action, e.outcome, e.version_id, e.from_status, e.to_status)
        for e in storage.history(session, tenant=tenant, limit=1000)
    ]


def _assert_chains(session, tenant):
    """Each version's ok audit rows form a legal path from register to its current status."""
    entries = storage.history(session, tenant=tenant, limit=1000)
    for v in storage.list_versions(session, tenant=tenant):
        moves = [
            (e.from_status, e.to_status)
            for e in entries
            if e.version_id == v.id and e.outcome == "ok" and e.from_status != e.to_status
        ]
        assert moves[0] == (None, "candidate"), moves
        for (_, to), (frm, nxt) in itertools.pairwise(moves):
            assert to == frm, f"audit chain of {v.id} is broken: {moves}"
            assert Status(nxt) in TRANSITIONS[Status(frm)], f"illegal move audited: {moves}"
        assert moves[-1][1] == v.status, f"audit of {v.id} ends at {moves[-1]} not {v.status}"


def test_full_lifecycle_with_complete_audit_trail(session, tenant, new_version):
    changes = []
    a = new_version(gated=False, dataset_stream_ids={f"1-{tenant}": "al", f"2-{tenant}": "bo"})
    assert a.status == "candidate" and a.dataset_size == 2
    a = storage.record_gate(
        session,
        version_id=a.id,
        passed=True,
        metrics={"win_rate": 0.7},
        actor="gate",
        reason="beats base",
    )
    assert a.status == "gated" and a.metrics["win_rate"] == 0.7

    live = storage.promote(
        session,
        version_id=a.id,
        actor="ops",
        reason="first",
        expected_live=None,
        on_alias_change=changes.append,
    )
    assert (live.version_id, live.revision, live.pinned) == (a.id, 1, False)

    b = new_version(parent_id=a.id)
    canary = storage.start_canary(
        session, version_id=b.id, fraction=0.25, actor="ops", on_alias_change=changes.append
    )
    assert (canary.name, canary.version_id, canary.fraction) == ("canary", b.id, 0.25)
    storage.start_canary(session, version_id=b.id, fraction=0.5, actor="ops")  # re-weigh
    assert storage.get_alias(session, tenant=tenant, alias="canary").fraction == 0.5

    live = storage.promote(
        session, version_id=b.id, actor="ops", expected_live=a.id, on_alias_change=changes.append
    )
    assert live.version_id == b.id and live.revision == 2
    assert storage.get_alias(session, tenant=tenant, alias="canary") is None
    assert storage.get_version(session, version_id=a.id).status == "retired"

    live = storage.rollback(
        session, tenant=tenant, actor="ops", reason="bad answers", on_alias_change=changes.append
    )
    assert live.version_id == a.id
    assert storage.get_version(session, version_id=b.id).status == "rolled_back"
    assert storage.get_version(session, version_id=a.id).status == "live"

    retired = storage.retire(session, version_id=b.id, actor="ops", reason="cleanup")
    assert retired.status == "retired"

    assert _trail(session, tenant) == [
        ("register", "ok", a.id, None, "candidate"),
        ("gate", "ok", a.id, "candidate", "gated"),
        ("promote", "ok", a.id, "gated", "live"),
        ("register", "ok", b.id, None, "candidate"),
        ("gate", "ok", b.id, "candidate", "gated"),
        ("canary", "ok", b.id, "gated", "canary"),
        ("canary", "ok", b.id, "canary", "canary"),
        ("promote", "ok", b.id, "canary", "live"),
        ("promote", "ok", a.id, "live", "retired"),
        ("rollback", "ok", a.id, "retired", "live"),
        ("rollback", "ok", b.id, "live", "rolled_back"),
        ("retire", "ok", b.id, "rolled_back", "retired"),
    ]
    entries = storage.history(session, tenant=tenant, limit=1000)
    assert all(e.actor and e.at is not None for e in entries)
    rollback_row = next(e for e in entries if e.action == "rollback" and e.version_id == a.id)
    assert (rollback_row.from_version, rollback_row.to_version) == (b.id, a.id)
    assert rollback_row.reason == "bad answers" and rollback_row.metrics == {"win_rate": 0.7}
    _assert_chains(session, tenant)
    assert [(c.alias, c.version_id, c.previous_version_id) for c in changes] == [
        ("live", a.id, None),
        ("canary", b.id, None),
        ("canary", None, b.id),
        ("live", b.id, a.id),
        ("live", a.id, b.id),
    ]


def test_illegal_transition_is_refused_with_the_allowed_moves_and_audited(
    session, tenant, new_version
):
    v = new_version(gated=False)
    with pytest.raises(IllegalTransition) as info:
        storage.promote(session, version_id=v.id, actor="ops")
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, RegistryError)
    assert (err.version_id, err.current, err.requested) == (v.id, "candidate", "live")
    assert set(err.allowed) == {"gated", "rejected", "failed"}
    assert v.id in str(err) and "'candidate'" in str(err) and "gated" in str(err)
    assert storage.get_version(session, version_id=v.id).status == "candidate"
    assert storage.get_alias(session, tenant=tenant) is None
    assert _trail(session, tenant)[-1] == ("promote", "illegal", v.id, "candidate", "live")

    storage.mark_rejected(session, version_id=v.id, actor="gate", reason="regressed")
    with pytest.raises(IllegalTransition, match="none: it is a final status"):
        storage.record_gate(session, version_id=v.id, passed=True, metrics={})


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.1, math.nan])
def test_canary_fraction_must_be_strictly_between_0_and_1(session, tenant, new_version, fraction):
    v = new_version()
    with pytest.raises(InvalidArgument, match="strictly between 0 and 1") as info:
        storage.start_canary(session, version_id=v.id, fraction=fraction, actor="ops")
    assert info.value.param == "fraction" and repr(fraction) in str(info.value)
    assert storage.get_version(session, version_id=v.id).status == "gated"
    assert _trail(session, tenant)[-1][:2] == ("canary", "invalid")


def test_stale_expected_live_conflicts_and_is_audited(session, tenant, new_version):
    a, b, c = new_version(), new_version(), new_version()
    storage.promote(session, version_id=a.id, actor="ops", expected_live=None)
    storage.promote(session, version_id=b.id, actor="ops", expected_live=a.id)
    with pytest.raises(Conflict, match="not the expected"):
        storage.promote(session, version_id=c.id, actor="late", expected_live=a.id)
    with pytest.raises(Conflict, match="revision"):
        storage.promote(session, version_id=c.id, actor="late", expected_revision=1)
    assert storage.get_alias(session, tenant=tenant).version_id == b.id
    assert storage.get_version(session, version_id=c.id).status == "gated"
    refused = [e for e in storage.history(session, version_id=c.id) if e.outcome == "conflict"]
    assert [e.actor for e in refused] == ["late", "late"]
    storage.promote(session, version_id=c.id, actor="ops", expected_revision=2)
    assert storage.get_alias(session, tenant=tenant).version_id == c.id


def test_pin_blocks_promotion_until_released_or_forced(session, tenant, new_version):
    a, b, c = new_version(), new_version(), new_version()
    storage.promote(session, version_id=a.id, actor="ops")
    pinned = storage.pin(session, version_id=b.id, actor="ops", reason="known good")
    assert (pinned.version_id, pinned.pinned) == (b.id, True)
    assert storage.get_version(session, version_id=a.id).status == "retired"
    with pytest.raises(Conflict, match="pinned"):
        storage.promote(session, version_id=c.id, actor="learner")
    assert storage.get_alias(session, tenant=tenant).version_id == b.id
    forced = storage.promote(session, version_id=c.id, actor="ops", force=True)
    assert (forced.version_id, forced.pinned) == (c.id, False)
    storage.pin(session, version_id=c.id, actor="ops")  # pin the live one in place
    assert storage.unpin(session, tenant=tenant, actor="ops").pinned is False
    _assert_chains(session, tenant)


def test_rollback_needs_a_live_and_a_previous_version(session, tenant, new_version):
    a = new_version()
    with pytest.raises(AliasNotFound, match="no live version"):
        storage.rollback(session, tenant=tenant, actor="ops")
    storage.promote(session, version_id=a.id, actor="ops")
    with pytest.raises(Conflict, match="no earlier live version"):
        storage.rollback(session, tenant=tenant, actor="ops")
    rows = [e[1] for e in _trail(session, tenant) if e[0] == "rollback"]
    assert rows == ["not_found", "conflict"]
    assert storage.get_alias(session, tenant=tenant).version_id == a.id


def test_repeated_rollbacks_walk_back_through_retired_versions(session, tenant, new_version):
    a, b, c = new_version(), new_version(), new_version()
    for v in (a, b, c):
        storage.promote(session, version_id=v.id, actor="ops")
    assert storage.rollback(session, tenant=tenant, actor="ops").version_id == b.id
    assert storage.rollback(session, tenant=tenant, actor="ops").version_id == a.id
    statuses = {v.id: storage.get_version(session, version_id=v.id).status for v in (a, b, c)}
    assert statuses == {a.id: "live", b.id: "rolled_back", c.id: "rolled_back"}
    back = storage.rollback(session, tenant=tenant, actor="ops", to_version=c.id)
    assert back.version_id == c.id
    _assert_chains(session, tenant)


def test_retire_refuses_the_live_version_and_drops_a_canary(session, tenant, new_version):
    a, b = new_version(), new_version()
    storage.promote(session, version_id=a.id, actor="ops")
    with pytest.raises(Conflict, match="is live"):
        storage.retire(session, version_id=a.id, actor="ops")
    storage.start_canary(session, version_id=b.id, fraction=0.1, actor="ops")
    storage.retire(session, version_id=b.id, actor="ops")
    assert storage.get_alias(session, tenant=tenant, alias="canary") is None
    assert storage.get_version(session, version_id=a.id).status == "live"


def test_stop_canary_returns_it_to_gated_or_rolled_back(session, tenant, new_version):
    a, b = new_version(), new_version()
    storage.start_canary(session, version_id=a.id, fraction=0.1, actor="ops")
    with pytest.raises(Conflict, match="already has canary"):
        storage.start_canary(session, version_id=b.id, fraction=0.1, actor="ops")
    assert storage.stop_canary(session, tenant=tenant, actor="ops").status == "gated"
    storage.start_canary(session, version_id=b.id, fraction=0.2, actor="ops")
    stopped = storage.stop_canary(session, tenant=tenant, actor="auto", rollback=True)
    assert (stopped.id, stopped.status) == (b.id, "rolled_back")
    with pytest.raises(AliasNotFound):
        storage.stop_canary(session, tenant=tenant, actor="ops")


def test_a_failed_live_version_hands_live_back_to_the_previous_one(session, tenant, new_version):
    a, b = new_version(), new_version()
    storage.promote(session, version_id=a.id, actor="ops")
    storage.promote(session, version_id=b.id, actor="ops")
    changes = []
    failed = storage.mark_failed(
        session,
        version_id=b.id,
        actor="replica-1",
        reason="sha256 mismatch",
        on_alias_change=changes.append,
    )
    assert failed.status == "failed"
    assert storage.get_alias(session, tenant=tenant).version_id == a.id
    assert storage.get_version(session, version_id=a.id).status == "live"
    assert [(c.version_id, c.previous_version_id) for c in changes] == [(a.id, b.id)]
    _assert_chains(session, tenant)
    storage.mark_failed(session, version_id=a.id, actor="replica-1")
    assert storage.get_alias(session, tenant=tenant) is None  # nothing left: base serves


def test_unknown_and_ambiguous_versions(session, tenant, new_version):
    v = new_version()
    assert storage.get_version(session, version_id=v.id[:8]).id == v.id
    with pytest.raises(VersionNotFound) as info:
        storage.promote(session, version_id="f" * 64, actor="ops")
    assert isinstance(info.value, LookupError) and "adapters list" in str(info.value)
    with pytest.raises(VersionNotFound, match="at least 6"):
        storage.get_version(session, version_id=v.id[:3])
    assert storage.history(session, version_id="f" * 64)[-1].outcome == "not_found"
    twins = [
        new_version(version_id="abcdef" + c * 58, artifact_sha256="abcdef" + c * 58) for c in "01"
    ]
    with pytest.raises(InvalidArgument, match="ambiguous"):
        storage.get_version(session, version_id="abcdef")
    assert storage.get_version(session, version_id="abcdef0").id == twins[0].id


def test_register_is_idempotent_and_refuses_a_clashing_id(session, tenant, new_version):
    v = new_version(gated=False)
    again = storage.register_candidate(
        session,
        version_id=v.id,
        tenant=tenant,
        base_model="builtin:tiny",
        artifact_uri=v.artifact_uri,
        artifact_sha256=v.artifact_sha256,
        lora_config={},
    )
    assert again.id == v.id and again.created_at == v.created_at
    assert storage.count_versions(session, tenant=tenant) == 1
    with pytest.raises(Conflict, match="cannot also belong to 'other-tenant'"):
        storage.register_candidate(
            session,
            version_id=v.id,
            tenant="other-tenant",
            base_model="m",
            artifact_uri="/x",
            artifact_sha256=v.artifact_sha256,
            lora_config={},
        )
    with pytest.raises(Conflict, match="already registered with artifact sha256"):
        storage.register_candidate(
            session,
            version_id=v.id,
            tenant=tenant,
            base_model="m",
            artifact_uri="/x",
            artifact_sha256="0" * 64,
            lora_config={},
        )
    with pytest.raises(InvalidArgument, match="64 lowercase hex"):
        storage.register_candidate(
            session,
            version_id="x" * 64,
            tenant=tenant,
            base_model="m",
            artifact_uri="/x",
            artifact_sha256="nothex",
            lora_config={},
        )
    with pytest.raises(VersionNotFound):
        new_version(parent_id="e" * 64)


def test_datasets_record_stream_ids_and_users(session, tenant, new_version):
    alice, bob = f"alice-{tenant}", f"bob-{tenant}"
    ids = [f"{n}-{tenant}" for n in range(6)]
    a = new_version(dataset_stream_ids={ids[0]: alice, ids[1]: bob, ids[2]: alice})
    b = new_version(dataset_stream_ids=[ids[3], ids[4]], metrics={"loss": 0.4})
    assert storage.dataset_stream_ids(session, version_id=a.id) == sorted(ids[:3])
    assert [v.id for v in storage.versions_trained_on(session, user=alice)] == [a.id]
    assert storage.versions_trained_on(session, user=alice, tenant="someone-else") == []
    found = storage.versions_trained_on(session, stream_ids=[ids[3], ids[2]])
    assert {v.id for v in found} == {a.id, b.id}
    assert storage.trained_stream_ids(session, stream_ids=[ids[0], ids[4], ids[5]]) == {
        ids[0],
        ids[4],
    }
    d = storage.diff_versions(session, a=a.id, b=b.id)
    assert d.data == {"a_size": 3, "b_size": 2, "shared": 0, "only_a": 3, "only_b": 2}
    assert d.metrics["loss"] == (None, 0.4) and "win_rate" not in d.metrics
    assert d.config == {}
    c = new_version(lora_config={"r": 8, "target_modules": ["q_proj"]}, parent_id=a.id)
    d2 = storage.diff_versions(session, a=a.id, b=c.id)
    assert d2.config["r"] == (4, 8) and d2.config["parent_id"] == (None, a.id)


def test_notifier_runs_after_commit_only_and_its_failure_is_not_raised(
    session, tenant, new_version
):
    a, b = new_version(), new_version()
    seen = []

    def broken(change):
        seen.append(change)
        raise RuntimeError("notifier down")

    alias = storage.promote(session, version_id=a.id, actor="ops", on_alias_change=broken)
    assert alias.version_id == a.id and len(seen) == 1
    with pytest.raises(Conflict):
        storage.promote(
            session, version_id=b.id, actor="ops", expected_live=None, on_alias_change=seen.append
        )
    assert len(seen) == 1


def test_a_session_with_an_open_transaction_is_refused(session, new_version):
    v = new_version()
    session.begin()
    try:
        with pytest.raises(RuntimeError, match="already has one open"):
            storage.retire(session, version_id=v.id, actor="ops")
    finally:
        session.rollback()
