"""Who acts on the admin API, and manual gate passes, over real HTTP (uvicorn, loopback).

The audit's actor is the admin whose token authorized the request, never a name
from the body; a gate passed by hand is audited as an override; where a second
admin's approval is configured, one admin alone cannot pass a gate.
"""

from __future__ import annotations

import httpx
import pytest

import storage
from serving.admin_routes import build_admin_app
from storage.ops import GATE_OVERRIDE
from tests.integration.storage.test_admin_api import ADMIN, USER_KEY, _error, _serve

NAMED = {"alice": "alice-admin-token", "bob": "bob-admin-token"}


def _client(session_factory, **options):
    app = build_admin_app(session_factory=session_factory, admin_token=ADMIN,
                          user_keys={USER_KEY}, admin_tokens_by_name=NAMED, **options)
    server, thread, url = _serve(app)
    return server, thread, httpx.Client(base_url=url, timeout=30)


@pytest.fixture
def admin(session_factory):
    server, thread, client = _client(session_factory)
    with client:
        yield client
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def two_man(session_factory):
    server, thread, client = _client(session_factory, gate_override_approvals=1)
    with client:
        yield client
    server.should_exit = True
    thread.join(10)


def _as(name: str, **extra: str) -> dict[str, str]:
    token = ADMIN if name == "admin-api" else NAMED[name]
    return {"Authorization": f"Bearer {token}", **extra}


def _gate_rows(session, version_id):
    return [e for e in storage.history(session, version_id=version_id, limit=100)
            if e.action == "gate"]


def test_the_actor_is_the_tokens_admin_not_the_body(admin, session, tenant, new_version):
    a = new_version()
    r = admin.post(f"/admin/adapters/{a.id}/promote", json={"reason": "ship"},
                   headers=_as("alice"))
    assert r.status_code == 200, r.text
    promoted = [e for e in storage.history(session, version_id=a.id, limit=100)
                if e.action == "promote"]
    assert [e.actor for e in promoted] == ["alice"]

    # A body naming someone else is refused, and nothing is done in that name.
    b = new_version()
    err = _error(admin.post(f"/admin/adapters/{b.id}/promote",
                            json={"actor": "mallory", "reason": "not me"},
                            headers=_as("alice")), 422, "invalid_request")
    assert "actor" in err["message"]
    audit = storage.history(session, tenant=tenant, limit=1000)
    assert not [e for e in audit if e.actor == "mallory"]
    assert storage.get_alias(session, tenant=tenant).version_id == a.id
    # The unnamed token keeps its name.
    r = admin.delete(f"/admin/tenants/{tenant}/pin", params={"actor": "mallory"},
                     headers=_as("admin-api"))
    assert r.status_code in (200, 409), r.text
    assert {e.actor for e in storage.history(session, tenant=tenant, limit=1000)
            if e.action == "unpin"} == {"admin-api"}


def test_a_gate_passed_by_hand_is_audited_as_an_override(admin, session, new_version):
    by_learner = new_version(gated=True)  # the learner's gate: storage.record_gate
    assert all(GATE_OVERRIDE not in e.detail for e in _gate_rows(session, by_learner.id))

    candidate = new_version(gated=False)
    r = admin.post(f"/admin/adapters/{candidate.id}/gate",
                   json={"passed": True, "reason": "looks fine"}, headers=_as("bob"))
    assert r.status_code == 200 and r.json()["status"] == "gated", r.text
    [row] = _gate_rows(session, candidate.id)
    assert row.outcome == "ok" and row.actor == "bob"
    assert row.detail.startswith(f"{GATE_OVERRIDE} by bob")
    assert r.json()["metrics"]["gate_override"] == {"actor": "bob", "approved_by": None}


def test_a_second_admin_must_approve_a_manual_gate_pass(two_man, session, new_version):
    candidate = new_version(gated=False)
    url = f"/admin/adapters/{candidate.id}/gate"
    _error(two_man.post(url, json={"passed": True}, headers=_as("alice")), 403, "not_admin")
    # Approving one's own override is no approval.
    own = _as("alice", **{"X-Approving-Admin-Token": NAMED["alice"]})
    err = _error(two_man.post(url, json={"passed": True}, headers=own), 403, "not_admin")
    assert "second admin" in err["message"]
    wrong = _as("alice", **{"X-Approving-Admin-Token": "guess"})
    _error(two_man.post(url, json={"passed": True}, headers=wrong), 403, "not_admin")
    assert storage.get_version(session, version_id=candidate.id).status == "candidate"
    refused = _gate_rows(session, candidate.id)
    assert [(e.actor, e.outcome) for e in refused] == [("alice", "unapproved")] * 3

    approved = _as("alice", **{"X-Approving-Admin-Token": NAMED["bob"]})
    r = two_man.post(url, json={"passed": True}, headers=approved)
    assert r.status_code == 200 and r.json()["status"] == "gated", r.text
    [row] = [e for e in _gate_rows(session, candidate.id) if e.outcome == "ok"]
    assert refused[0].tenant == row.tenant and "second admin" in refused[0].detail
    assert row.actor == "alice" and row.detail == f"{GATE_OVERRIDE} by alice, approved by bob"

    # Rejecting needs no approval: it can only keep a version away from users.
    other = new_version(gated=False)
    r = two_man.post(f"/admin/adapters/{other.id}/gate", json={"passed": False},
                     headers=_as("alice"))
    assert r.status_code == 200 and r.json()["status"] == "rejected", r.text


def test_approvals_without_a_second_admin_refuse_to_start(session_factory):
    with pytest.raises(ValueError, match="needs at least two admin tokens"):
        build_admin_app(session_factory=session_factory, admin_token=ADMIN,
                        gate_override_approvals=1)
