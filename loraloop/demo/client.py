"""The public HTTP API of a running stack, as a user and an operator call it.

The demo drives loraloop only through this (chat, feedback, the admin API's reads),
and so do the end-to-end tests and the benches (``tests/support/stack.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Answer:
    id: str
    text: str
    version: str  #: the X-Adapter-Version header: the version that answered


class StackClient:
    """Chat, rate and read the registry of the stack at ``base_url``."""

    def __init__(self, base_url: str, *, admin_token: str | None = None,
                 timeout_s: float = 300) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s)
        self.admin = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}

    def close(self) -> None:
        self.http.close()

    # -- what users do -------------------------------------------------------------------
    def ask(self, question: str, *, user: str, model: str = "default",
            max_tokens: int = 32) -> Answer:
        """A greedy answer to ``question`` (deterministic, so accuracy is comparable)."""
        reply = self.http.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens, "temperature": 0, "user": user})
        reply.raise_for_status()
        body = reply.json()
        return Answer(body["id"], body["choices"][0]["message"]["content"],
                      reply.headers["x-adapter-version"])

    def rate(self, answer: Answer, *, user: str, up: bool, correction: str | None = None) -> None:
        body = {"interaction_id": answer.id, "rating": "up" if up else "down", "user": user}
        if correction:
            body["correction"] = correction
        self.http.post("/v1/feedback", json=body).raise_for_status()

    def models(self) -> list[str]:
        """The model names ``/v1/models`` offers now."""
        reply = self.http.get("/v1/models")
        reply.raise_for_status()
        return [m["id"] for m in reply.json()["data"]]

    # -- what ops read -------------------------------------------------------------------
    def _admin_get(self, path: str, **params) -> list | dict:
        reply = self.http.get(path, params=params, headers=self.admin)
        reply.raise_for_status()
        return reply.json()

    def aliases(self, tenant: str = "default") -> list[dict]:
        return self._admin_get(f"/admin/tenants/{tenant}/aliases")

    def live(self, tenant: str = "default") -> str | None:
        return next((a["version_id"] for a in self.aliases(tenant) if a["name"] == "live"), None)

    def versions(self, tenant: str = "default") -> list[dict]:
        return self._admin_get("/admin/adapters", tenant=tenant)

    def audit(self, tenant: str = "default") -> list[dict]:
        return self._admin_get("/admin/audit", tenant=tenant, limit=500)

    def learner_status(self) -> dict:
        return self._admin_get("/admin/learner/status")
