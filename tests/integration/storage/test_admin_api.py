"""The admin HTTP API served by uvicorn on a loopback port, over real HTTP."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest
import uvicorn

import storage
from serving.admin_routes import build_admin_app
from tests.support.waiting import wait_until

ADMIN = "admin-secret-token"
USER_KEY = "sk-user-123"


def _serve(app):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "uvicorn exited before it started"
        return server.started

    wait_until(started, what="uvicorn started", every_s=0.02)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def api(session_factory):
    """An httpx client on a served admin app, authenticated with the admin token."""
    changes = []
    app = build_admin_app(
        session_factory=session_factory,
        admin_token=ADMIN,
        user_keys={USER_KEY},
        notifier=changes.append,
    )
    server, thread, url = _serve(app)
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
    ) as client:
        client.changes = changes
        yield client
    server.should_exit = True
    thread.join(10)


def _error(response, status, code):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    return error


def test_auth_admin_token_required_and_user_keys_forbidden(api):
    url = str(api.base_url)
    with httpx.Client(base_url=url, timeout=10) as anon:
        _error(anon.get("/admin/adapters"), 401, "missing_admin_token")
        r = anon.get("/admin/adapters", headers={"Authorization": "Bearer wrong"})
        assert _error(r, 401, "invalid_admin_token")["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
        r = anon.post(
            "/admin/tenants/x/rollback", json={}, headers={"Authorization": f"Bearer {USER_KEY}"}
        )
        assert _error(r, 403, "not_admin")["type"] == "permission_error"
        r = anon.get("/admin/adapters", headers={"Authorization": f"Basic {ADMIN}"})
        _error(r, 401, "missing_admin_token")
    assert api.get("/admin/adapters").status_code == 200


def test_an_empty_admin_token_refuses_everything(session_factory):
    server, thread, url = _serve(
        build_admin_app(session_factory=session_factory, admin_token="", user_keys=[USER_KEY])
    )
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/admin/adapters").status_code == 401
            r = client.get("/admin/adapters", headers={"Authorization": f"Bearer {USER_KEY}"})
            assert r.status_code == 403
            r = client.get("/admin/adapters", headers={"Authorization": "Bearer anything"})
            assert "LORALOOP_ADMIN_TOKEN is empty" in r.json()["error"]["message"]
    finally:
        server.should_exit = True
        thread.join(10)


def test_lifecycle_and_errors_over_http(api, session, tenant, new_version):
    a, b, c = new_version(), new_version(), new_version()
    r = api.post(f"/admin/adapters/{a.id}/promote", json={"expected_live": None, "reason": "first"})
    assert r.status_code == 200 and r.json()["version_id"] == a.id
    r = api.post(f"/admin/adapters/{b.id[:10]}/canary", json={"fraction": 0.3})
    assert r.json()["fraction"] == 0.3
    err = _error(
        api.post(f"/admin/adapters/{c.id}/canary", json={"fraction": 0.1}), 409, "conflict"
    )
    assert b.id in err["message"]
    err = _error(
        api.post(f"/admin/adapters/{b.id}/canary", json={"fraction": 2}), 400, "invalid_value"
    )
    assert err["param"] == "fraction" and "2" in err["message"]
    _error(
        api.post(f"/admin/adapters/{c.id}/canary", json={"fraction": "lots"}),
        422,
        "invalid_request",
    )
    _error(
        api.post(f"/admin/adapters/{c.id}/promote", json={"expcted_live": None}),
        422,
        "invalid_request",
    )

    r = api.post(f"/admin/adapters/{b.id}/promote", json={"expected_live": a.id})
    assert r.json()["version_id"] == b.id and r.json()["revision"] == 2
    err = _error(
        api.post(f"/admin/adapters/{c.id}/promote", json={"expected_live": a.id}), 409, "conflict"
    )
    assert "not the expected" in err["message"]
    err = _error(
        api.post(f"/admin/adapters/{a.id}/gate", json={"passed": True}), 422, "illegal_transition"
    )
    assert "'retired'" in err["message"] and err["param"] == "status"
    _error(api.get(f"/admin/adapters/{'9' * 64}"), 404, "not_found")
    _error(api.post(f"/admin/tenants/{tenant}-none/rollback", json={}), 404, "not_found")

    r = api.post(f"/admin/tenants/{tenant}/rollback", json={"expected_live": b.id, "reason": "bad"})
    assert r.status_code == 200 and r.json()["version_id"] == a.id
    aliases = api.get(f"/admin/tenants/{tenant}/aliases").json()
    assert [(x["name"], x["version_id"]) for x in aliases] == [("live", a.id)]
    assert api.post(f"/admin/adapters/{b.id}/retire", json={}).json()["status"] == "retired"
    assert api.post(f"/admin/adapters/{c.id}/pin", json={}).json()["pinned"] is True
    _error(api.post(f"/admin/adapters/{a.id}/promote", json={}), 409, "conflict")
    assert api.delete(f"/admin/tenants/{tenant}/pin").json()["pinned"] is False
    r = api.post(f"/admin/adapters/{a.id}/canary", json={"fraction": 0.5})
    _error(r, 422, "illegal_transition")  # a retired version cannot canary

    listed = api.get("/admin/adapters", params={"tenant": tenant}).json()
    assert {v["id"]: v["status"] for v in listed} == {
        a.id: "retired",
        b.id: "retired",
        c.id: "live",
    }
    _error(api.get("/admin/adapters", params={"status": "alive"}), 400, "invalid_value")
    assert api.get(f"/admin/adapters/{a.id}").json()["tenant"] == tenant
    diff = api.get(f"/admin/adapters/{a.id}/diff/{c.id}").json()
    assert diff["a"] == a.id and diff["data"]["a_size"] == 0
    audit = api.get("/admin/audit", params={"tenant": tenant, "limit": 500}).json()
    outcomes = [(e["action"], e["outcome"]) for e in audit if e["actor"] == "admin-api"]
    assert ("promote", "conflict") in outcomes
    nobody = api.get("/admin/audit", params={"tenant": f"{tenant}-none"}).json()
    assert [(e["action"], e["outcome"]) for e in nobody] == [("rollback", "not_found")]
    assert ("canary", "invalid") in outcomes and ("gate", "illegal") in outcomes
    assert [e["action"] for e in api.get(f"/admin/adapters/{b.id}/history").json()][-1] == (
        "retire"
    )
    assert [ch.alias for ch in api.changes][:2] == ["live", "canary"]

    stopped = new_version()
    api.post(f"/admin/adapters/{stopped.id}/canary", json={"fraction": 0.1})
    r = api.delete(f"/admin/tenants/{tenant}/canary", params={"rollback": True})
    assert r.json()["status"] == "rolled_back"


def test_racing_promotions_over_http_one_409(api, session, tenant, new_version):
    live = None
    for _ in range(10):
        a, b = new_version(), new_version()
        barrier = threading.Barrier(2)
        answers = {}

        def go(version_id, expected=live, barrier=barrier, answers=answers):
            barrier.wait()
            answers[version_id] = api.post(
                f"/admin/adapters/{version_id}/promote", json={"expected_live": expected}
            )

        threads = [threading.Thread(target=go, args=(v.id,)) for v in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        codes = sorted(r.status_code for r in answers.values())
        assert codes == [200, 409], {k: r.text for k, r in answers.items()}
        winner = next(k for k, r in answers.items() if r.status_code == 200)
        assert storage.get_alias(session, tenant=tenant).version_id == winner
        live = winner
    rows = [
        e
        for e in storage.history(session, tenant=tenant, limit=1000)
        if e.action == "promote" and e.from_status == "gated"
    ]
    assert sorted(e.outcome for e in rows) == ["conflict"] * 10 + ["ok"] * 10
