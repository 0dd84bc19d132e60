"""What the web UI's ops view reads, over real HTTP: the page and its files, the learner's
status (missing, running, failing, stale, and Redis unreachable) and per-version statistics
built from real answers and thumbs."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from serving.admin_routes import include_admin
from tests.support.registry import LocalRegistry
from tests.support.served import chat_stack, free_port, served_app
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio
TOKEN = "ops-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


async def _serve_admin(stack, tmp_path):
    registry = LocalRegistry.create(tmp_path)
    include_admin(stack.app, service=stack.service, session_factory=registry.sessions,
                  admin_token=TOKEN)


async def test_the_page_and_every_module_it_imports_are_served(tiny_model_dir, redis_url, keys,
                                                               tmp_path):
    async with chat_stack(tiny_model_dir, redis_url, keys) as stack, \
            served_app(stack.app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        pages = [await http.get(path) for path in ("/", "/ui", "/ui/")]
        assert {(r.status_code, r.headers["content-type"]) for r in pages} == {
            (200, "text/html; charset=utf-8")}
        assert len({r.text for r in pages}) == 1
        assert "connect-src 'self'" in pages[0].headers["content-security-policy"]
        assert "://" not in pages[0].text  # nothing from another origin
        wanted = set(re.findall(r'(?:src|href)="(/ui/[^"]+)"', pages[0].text))
        seen: set[str] = set()
        while wanted - seen:  # the page's files, and every module they import
            path = (wanted - seen).pop()
            seen.add(path)
            response = await http.get(path)
            assert response.status_code == 200, path
            if path.endswith(".js"):
                assert response.headers["content-type"] == "text/javascript; charset=utf-8"
                wanted |= {f"/ui/{m}" for m in re.findall(r'from "\./([\w.]+)"', response.text)}
        assert {"/ui/app.js", "/ui/style.css", "/ui/api.js", "/ui/chat.js", "/ui/ops.js"} <= seen
        missing = await http.get("/ui/nope.js")
        assert missing.status_code == 404
        assert "'nope.js'" in missing.json()["error"]["message"]
        assert "app.js" in missing.json()["error"]["message"]


async def test_the_learner_status_says_how_old_it_is(tiny_model_dir, redis_url, keys,
                                                      redis_client, tmp_path):
    async with chat_stack(tiny_model_dir, redis_url, keys) as stack:
        await _serve_admin(stack, tmp_path)
        async with served_app(stack.app) as url, \
                httpx.AsyncClient(base_url=url, timeout=60) as http:
            assert (await http.get("/admin/learner/status")).status_code == 401

            async def reading() -> dict:
                response = await http.get("/admin/learner/status", headers=ADMIN)
                assert response.status_code == 200, response.text
                return response.json()

            missing = await reading()
            assert (missing["state"], missing["status"]) == ("missing", None)
            assert "no learner has reported" in missing["error"]

            def publish(**status) -> None:
                redis_client.set(keys.learner_status, json.dumps(status), ex=60)

            publish(backlog=4, rounds=2, updated_at=time.time())
            running = await reading()
            assert running["state"] == "running" and running["status"]["backlog"] == 4
            assert 0 <= running["age_s"] < 60
            publish(failing={"consecutive": 3, "last_error": "boom"}, updated_at=time.time())
            assert (await reading())["state"] == "failing"
            publish(backlog=4, updated_at=time.time() - 600)
            stale = await reading()
            assert stale["state"] == "stale" and stale["age_s"] >= 600
            training = {"tenant": "acme", "phase": "training", "started_at": time.time() - 600}
            publish(round=training, updated_at=time.time() - 600)  # a long training phase
            assert (await reading())["state"] == "running"
            publish(round=training, updated_at=time.time() - 4000)  # stuck in it
            assert (await reading())["state"] == "stale"


async def test_an_unreachable_redis_is_reported_not_waited_on(tiny_model_dir, redis_url, keys,
                                                              tmp_path):
    from serving.compute.ledger import ComputeLedger

    async with chat_stack(tiny_model_dir, redis_url, keys) as stack:
        await _serve_admin(stack, tmp_path)
        working = stack.service.ledger
        dead = ComputeLedger(f"redis://127.0.0.1:{free_port()}/0", keys)  # nothing listens
        stack.service.ledger = dead
        try:
            async with served_app(stack.app) as url, \
                    httpx.AsyncClient(base_url=url, timeout=60) as http:
                learner = (await http.get("/admin/learner/status", headers=ADMIN)).json()
                assert learner["state"] == "unreachable"
                assert "did not answer" in learner["error"]
                stats = await http.get("/admin/stats", headers=ADMIN)
                assert stats.status_code == 200
                assert stats.json()["errors"][0].startswith("compute ledger unreachable")
                stack.service.ledger = None  # a deployment without Redis
                learner = (await http.get("/admin/learner/status", headers=ADMIN)).json()
                assert learner["state"] == "unavailable"
        finally:
            stack.service.ledger = working
            await dead.close()


async def test_stats_count_each_versions_answers_and_thumbs(tiny_model_dir, redis_url, keys,
                                                            tmp_path):
    async with chat_stack(tiny_model_dir, redis_url, keys) as stack:
        await _serve_admin(stack, tmp_path)
        async with served_app(stack.app) as url, \
                httpx.AsyncClient(base_url=url, timeout=120) as http:
            ids = []
            for question in ("One?", "Two?"):
                answer = await http.post("/v1/chat/completions", json={
                    "model": "acme", "max_tokens": 4, "user": "eve",
                    "messages": [{"role": "user", "content": question}]})
                assert answer.status_code == 200, answer.text
                ids.append(answer.json()["id"])
            rated = await http.post("/v1/feedback", json={
                "interaction_id": ids[0], "rating": "up", "user": "eve"})
            assert rated.status_code == 202

            async def row() -> dict | None:
                stats = (await http.get("/admin/stats", headers=ADMIN)).json()
                found = [r for r in stats["versions"] if r["tenant"] == "acme"]
                return found[0] if found and found[0]["ups"] == 1 else None

            acme = await until(row, what="the ledger holds the answers and the thumbs-up")
            assert (acme["version"], acme["requests"], acme["ups"], acme["downs"]) == (
                "base", 2, 1, 0)
            assert (acme["thumbs_up_rate"], acme["handoff_rate"]) == (1.0, 0.0)
            assert set(acme["strategies"]) == {"single"}
            stats = (await http.get("/admin/stats", headers=ADMIN)).json()
            assert {"tenant": "acme", "version": "base", "requests": 2} in stats["ingress"]
            assert stats["errors"] == []
