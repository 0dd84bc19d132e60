"""The ingress app on a real engine, served by uvicorn on a loopback port, without Ray.

``served_app`` runs any ASGI app in a uvicorn thread; ``chat_stack`` builds the
ingress (``serving.api.build_api``) around an :class:`~serving.replica.LLMReplica`
on builtin:tiny, with the real interaction sink and feedback store on Redis.
Tests use both in-process; ``bench/abuse.py`` runs ``chat_stack`` in a child
process so that the load it sends does not share the server's interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn

from tests.support.waiting import until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def served_app(app, *, port: int | None = None) -> AsyncIterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 on the running event loop; yields its URL.

    The app shares the loop with the caller (as the engine it calls must), and
    clients reach it through real sockets and real HTTP parsing.
    """
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started or task.done(), what="uvicorn started")
    if task.done():
        task.result()  # raises why it stopped
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def chunked_body(total: int, size: int = 16_384) -> AsyncIterator[bytes]:
    """``total`` bytes in chunks: httpx sends it without Content-Length (chunked)."""
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


@dataclass
class ChatStack:
    """What :func:`chat_stack` started: the app and the parts a test looks at."""

    app: object
    service: object
    sink: object
    store: object
    replica: object


@contextlib.asynccontextmanager
async def chat_stack(model_dir, redis_url: str, keys, *, tenants=("acme",),
                     replica_options: dict | None = None, catalog=None,
                     **ingress) -> AsyncIterator[ChatStack]:
    """The ingress app around a started replica on ``model_dir``, logging to Redis.

    ``ingress`` are :class:`~serving.api.IngressConfig` fields, ``replica_options``
    more arguments of the :class:`~serving.replica.LLMReplica` (``adapters``,
    ``compute``) and ``catalog`` the registry's catalog when it has adapters.
    Everything runs on the caller's event loop; serve the app with :func:`served_app`.
    """
    from feedback.sink import InteractionSink
    from feedback.store import FeedbackStore
    from serving.api import ChatService, IngressConfig, build_api
    from serving.compute.ledger import ComputeLedger
    from serving.engines import EngineConfig, engine_class
    from serving.replica import LLMReplica

    config = IngressConfig(tenants=list(tenants), **ingress)
    engine_config = EngineConfig(model=str(model_dir), model_name="builtin:tiny", threads=1)
    replica = LLMReplica(engine_cls=engine_class("hf"), engine_config=engine_config,
                         **(replica_options or {}))
    await replica.start()
    sink = InteractionSink(redis_url, keys)
    await sink.start()
    store = FeedbackStore(redis_url, keys, config.feedback)
    ledger = ComputeLedger(redis_url, keys)
    service = ChatService(generate=replica.generate, config=config, sink=sink, feedback=store,
                          catalog=catalog, ledger=ledger)
    try:
        yield ChatStack(build_api(service), service, sink, store, replica)
    finally:
        await ledger.close()
        await sink.close()
        await store.aclose()
        await replica.shutdown()
