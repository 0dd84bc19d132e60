"""The admin API's bodies are bounded like every other route's (413, also chunked), over
real HTTP (uvicorn) on each registry backend."""

from __future__ import annotations

import httpx
import pytest

from serving.admin_routes import build_admin_app
from tests.support.served import chunked_body, served_app

ADMIN = "admin-secret-token"


@pytest.mark.asyncio
async def test_a_huge_admin_body_is_refused_before_it_is_read(session_factory):
    app = build_admin_app(session_factory=session_factory, admin_token=ADMIN)
    async with served_app(app) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as http:
        for send in ({"content": chunked_body(5_000_000)}, {"json": {"reason": "x" * 2_000_000}}):
            response = await http.post("/admin/adapters/abc/gate", **send)
            assert response.status_code == 413, response.text
            assert "limit" in response.json()["error"]["message"]
        small = await http.post("/admin/adapters/abc/gate", json={"passed": True})
        assert small.status_code == 404, small.text  # read and answered as before


@pytest.mark.asyncio
async def test_the_admin_token_is_checked_before_the_body_is_read(session_factory):
    app = build_admin_app(session_factory=session_factory, admin_token=ADMIN)
    async with served_app(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            # Far over the limit: read first, it would be a 413; checked first, a 401.
            response = await http.post("/admin/adapters/abc/gate", headers=headers,
                                       content=chunked_body(5_000_000))
            assert response.status_code == 401, response.text
