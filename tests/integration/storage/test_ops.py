"""storage.ops: the operator's actions that the CLI and the admin API both render."""

from __future__ import annotations

import pytest

from storage import Conflict, RegistryOps, history


@pytest.fixture
def ops(session_factory):
    heard = []
    ops = RegistryOps(session_factory, actor="ops-test", notifier=heard.append)
    ops.heard = heard
    return ops


def test_moves_report_the_previous_version_and_are_announced(ops, session, tenant, new_version):
    a, b = new_version(), new_version()
    first = ops.promote(a.id, reason="first")
    assert (first.alias.version_id, first.previous) == (a.id, None)
    second = ops.promote(b.id[:10])  # no precondition by default: a is replaced
    assert (second.alias.version_id, second.previous) == (b.id, a.id)
    assert second.to_dict() == second.alias.to_dict()
    back = ops.rollback(tenant, reason="regression")
    assert (back.alias.version_id, back.previous) == (a.id, b.id)
    assert [(c.alias, c.version_id) for c in ops.heard] == [
        ("live", a.id), ("live", b.id), ("live", a.id)
    ]
    with pytest.raises(Conflict, match="not the expected"):
        ops.promote(b.id, expected_live=b.id)  # a is live
    trail = history(session, tenant=tenant, limit=100)
    assert {e.actor for e in trail if e.action in ("promote", "rollback")} == {"ops-test"}
    assert ("promote", "conflict") in [(e.action, e.outcome) for e in trail]


def test_listings_carry_alias_marks_and_what_waits_for_an_operator(ops, tenant, new_version):
    a, b, c = new_version(), new_version(), new_version()
    ops.promote(a.id)
    ops.start_canary(b.id, fraction=0.25)
    listed = {row.version.id: row.marks() for row in ops.versions(tenant=tenant)}
    assert listed == {a.id: ["live"], b.id: ["canary(0.25)"], c.id: []}
    assert ops.show(a.id).marks() == ["live"]
    # c passed the gate before a went live: the operator chose a over it
    assert [v for v in ops.awaiting_operator() if v.tenant == tenant] == []
    d = new_version()
    assert [v.id for v in ops.awaiting_operator() if v.tenant == tenant] == [d.id]
    ops.pin(a.id, reason="freeze")
    assert ops.show(a.id).marks() == ["live[pinned]"]
    assert ops.stop_canary(tenant, rollback=True).status == "rolled_back"
