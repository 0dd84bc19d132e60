"""An upstream that can be watched and broken: ASGI middleware around a real loraloop app."""

from __future__ import annotations

import json


class Recorder:
    """ASGI middleware around the real upstream app: records what each chat request carried,
    and with ``drop_after`` set, breaks the connection after that many content chunks."""

    def __init__(self, app) -> None:
        self.app = app
        self.bodies: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.drop_after: int | None = None
        self.sent: list[str] = []  # the content deltas sent (all requests)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        body = bytearray()
        chunks = 0

        async def recorded_receive():
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    self.bodies.append(json.loads(body))
            return message

        async def breaking_send(message):
            nonlocal chunks
            if message["type"] == "http.response.body" and b'"delta":{"content"' in message.get(
                    "body", b""):
                if self.drop_after is not None and chunks >= self.drop_after:
                    raise ConnectionResetError("the test drops the upstream mid-answer")
                chunks += 1
                for line in message["body"].decode().splitlines():
                    if line.startswith("data: {"):
                        for choice in json.loads(line[6:])["choices"]:
                            self.sent.append(choice["delta"].get("content", ""))
            await send(message)

        await self.app(scope, recorded_receive, breaking_send)
