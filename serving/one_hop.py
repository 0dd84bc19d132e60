"""The one-hop topology: the OpenAI app and the engine in one Serve deployment.

A chat request then goes proxy -> replica -> engine: no second deployment and no
handle call in between (the split topology's ingress -> LLM replica hop). Every
replica serves every route (chat, feedback, admin, models, metrics, the UI) over
the same Redis, registry and engine code as the split topology; Serve's proxy
spreads requests over the replicas, answers 503 with ``Retry-After`` when all are
full (``max_ongoing_requests`` and ``max_queued_requests`` now count HTTP
requests), and health checks and autoscaling are the LLM deployment's own.

What one deployment cannot keep (why ``split`` stays available):

- a replica that crashes mid-stream cannot send the error event that the split
  ingress sends; the client sees the connection end without ``data: [DONE]``;
- ``/metrics`` reads the counters of the replica the proxy picked (one replica:
  the same as split).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ray import serve


def deployment_options() -> dict:
    """Serve options of the one-hop deployment, beside the LLM deployment's own."""
    from ray.serve.config import BackpressureConfig

    # The proxy refuses what the replicas cannot queue: 503 with Retry-After, as the
    # split ingress answers.
    return {"backpressure_config": BackpressureConfig(status_code=503, retry_after_s=1)}


def one_hop_class(llm_cls: type, ingress_cls: type) -> type:
    """``llm_cls`` (the replica class, ``serving.app.LLMServer`` or a subclass) serving
    the HTTP app of ``ingress_cls`` (``serving.app.Ingress``) itself."""

    class OneHopServer(llm_cls, ingress_cls):
        async def __init__(self, config) -> None:  # type: ignore[misc]
            await llm_cls.__init__(self, config)
            await ingress_cls.__init__(self, None, config)

        async def __del__(self) -> None:
            await ingress_cls.__del__(self)
            await llm_cls.__del__(self)

        async def _relay(self, payload: dict) -> AsyncIterator[dict]:
            """The engine's events for ``payload``, in this process."""
            events = self.generate(payload)
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()

        async def _replicas(self) -> list[dict]:
            context = serve.get_replica_context()
            handle = serve.get_deployment_handle(context.deployment, context.app_name)
            response = handle.broadcast("info")
            return await response.results_async(timeout_s=10, return_exceptions=True)

        async def _readiness(self) -> dict:
            checks: dict = {}
            try:
                await self.check_health()
                checks["engine"] = True
            except Exception as exc:
                checks["engine"] = f"not ready: {exc!r}"
            if self._sink is not None:
                checks["redis"] = True if await self._sink.ping() else "unreachable"
            return checks

    OneHopServer.__name__ = OneHopServer.__qualname__ = f"OneHop{llm_cls.__name__}"
    return OneHopServer
