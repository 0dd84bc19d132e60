"""Ray Serve deployments and the builder that composes the application.

The classes here are thin: :class:`LLMServer` is an :class:`LLMReplica` with
an async constructor, :class:`Ingress` builds the FastAPI app of
:mod:`serving.api` around a handle to the LLM deployment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import BaseModel, Field
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from serving.adapters import AdapterManager, run_reconciler
from serving.api import ChatService, IngressConfig, build_api
from serving.compute.factory import compute_factory
from serving.compute.upstream_config import UpstreamConfig
from serving.engines import choose_engine, engine_class
from serving.engines.base import EngineConfig
from serving.errors import EngineUnhealthy, ReplicasBusy
from serving.metrics import RedisCollector
from serving.replica import LLMReplica
from serving.route_snapshot import CatalogCache, SnapshotRegistry, start_routes

logger = logging.getLogger(__name__)
#: How much longer than the LLM replicas the ingress drains (relaying their last events).
INGRESS_DRAIN_MARGIN_S = 30.0


class RegistryConfig(BaseModel):
    """Where replicas find the registry and artifacts, and how they converge on them."""

    database_url: str
    artifacts_location: str
    cache_dir: str = Field(description="Local copies of remote artifacts.")
    warm_previous: int = Field(default=2, ge=0, description="Previous live versions kept warm.")
    reconcile_interval_s: float = Field(default=10.0, gt=0, description="Safety-net period.")

    def view(self, actor: str, on_alias_change=None):
        from serving.registry_view import RegistryView

        where = self.model_dump(
            include={"database_url", "artifacts_location", "cache_dir", "warm_previous"}
        )
        return RegistryView(**where, actor=actor, on_alias_change=on_alias_change)


class ServeConfig(BaseModel):
    """How the application is deployed."""

    engine: str = "hf"
    engine_config: EngineConfig
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    num_replicas: int = Field(default=1, ge=1)
    max_ongoing_requests: int = Field(default=32, ge=1, description="Per LLM replica.")
    max_queued_requests: int = Field(
        default=64,
        ge=1,
        description="Waiting at the handle before 503 (-1 unbounded is not "
        "allowed: an unbounded queue hides overload).",
    )
    replica_cpus: float = Field(default=0.5, gt=0)
    replica_gpus: float = Field(default=0, ge=0, description="GPUs per LLM replica (Ray).")
    redis_url: str = ""
    redis_prefix: str = "loraloop"
    redis_sample_interval_s: float = Field(
        default=15.0, gt=0, description="How often the ingress samples Redis (streams, "
        "feedback backlog, dead letters, memory) for /metrics.")
    registry: RegistryConfig | None = Field(
        default=None, description="Serve adapters from the registry; None serves base only."
    )
    drain_timeout_s: float = Field(
        default=60.0, gt=0, description="A stopping replica (scale-in, redeploy, unhealthy) "
        "stops taking requests and lets open ones finish for this long before it is killed "
        "(Serve's graceful_shutdown_timeout_s); a stream still open then ends with an error "
        "event.")
    drain_poll_s: float = Field(
        default=1.0, gt=0, description="How often a draining replica checks whether its "
        "requests are done (Serve's graceful_shutdown_wait_loop_s).")
    health_check_period_s: float = Field(default=5.0, gt=0, description="Serve calls each "
                                         "LLM replica's check_health this often.")
    health_check_timeout_s: float = Field(default=30.0, gt=0, description="A check_health "
                                          "that does not answer in this time fails.")
    stall_after_s: float = Field(
        default=120.0, gt=0, description="A replica whose engine produces no token for this "
        "long while generations wait is hung: check_health fails and Serve replaces it.")
    admin_token: str = Field(
        default="",
        description="Bearer token of the /admin API (served with a registry). Empty: the "
        "admin API refuses every request.",
    )
    admin_tokens: dict[str, str] = Field(
        default_factory=dict, description="Named admins of /admin (name -> bearer token), "
        "beside admin_token; an admin action is audited under its token's name.")
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig, description="Where "
                                     "hard requests are handed off (no url: nowhere).")
    topology: Literal["split", "one_hop"] = Field(default="split", description="split: proxy "
                                                  "-> ingress -> LLM replica; one_hop: see "
                                                  "serving.one_hop.")
    gate_override_approvals: Literal[0, 1] = Field(
        default=0, description="1: passing a gate by hand through /admin needs a second "
        "admin's token in X-Approving-Admin-Token.")


class LLMServer(LLMReplica):
    """The LLM deployment's replica: builds and starts its engine in the constructor."""

    async def __init__(self, config: ServeConfig) -> None:  # type: ignore[misc]
        factory = None
        self._reconciler: asyncio.Task | None = None
        if config.registry is not None:
            name = f"replica-{serve.get_replica_context().replica_id.unique_id}"
            factory = adapter_factory(config, name)

        engine, self.engine_reason = choose_engine(config.engine)
        LLMReplica.__init__(
            self,
            engine_cls=engine_class(engine),
            engine_config=config.engine_config,
            adapters=factory,
            stall_after_s=config.stall_after_s,
            compute=compute_factory(config),
        )
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        await self.start()
        if self.adapters is not None:
            # A new replica starts on the registry's versions, the last known ones, or base:
            # never not at all (chat does not depend on the database being up).
            await start_routes(self.adapters)
            self._reconciler = asyncio.get_running_loop().create_task(
                run_reconciler(
                    self.adapters,
                    interval_s=config.registry.reconcile_interval_s,
                    subscribe=_subscriber(config),
                )
            )

    async def info(self) -> dict:
        return {**await LLMReplica.info(self), "engine_reason": self.engine_reason,
                "replica_id": self.replica_id}

    async def __del__(self) -> None:  # Ray Serve awaits this on graceful shutdown
        if self._reconciler is not None:
            self._reconciler.cancel()
        await self.shutdown()


def adapter_factory(config: ServeConfig, name: str):
    """The replica's adapter manager over the registry (``config.registry`` must be set)."""
    # A version this replica cannot load is marked failed, which may move an
    # alias: the other replicas hear of it at once.
    view = config.registry.view(actor=name, on_alias_change=_publisher(config))
    # While the database is unreachable, the last routes read (kept on local disk).
    registry = SnapshotRegistry(view, config.registry.cache_dir)

    def factory(engine):
        # Bounded by the engine's adapter_capacity: hf max_loras, vLLM max_cpu_loras.
        return AdapterManager(engine, registry, name=name)

    return factory


class Ingress:
    """The HTTP ingress: OpenAI routes over a handle to the LLM deployment."""

    async def __init__(self, llm: DeploymentHandle, config: ServeConfig) -> None:  # type: ignore[misc]
        self._llm = llm
        self._sink = None
        feedback = None
        if config.redis_url:
            from feedback.connections import redact_url
            from feedback.errors import FeedbackUnavailable
            from feedback.keys import RedisKeys
            from feedback.sink import InteractionSink, SinkConfig
            from feedback.store import FeedbackStore

            keys = RedisKeys(config.redis_prefix)
            from feedback.redact import make_redactor

            # Stop strings are user text too: redacted like the messages (which the chat
            # service redacts), and bounded with every other stored field by the sink.
            redactor = make_redactor(config.ingress.feedback.redactor)
            self._sink = InteractionSink(config.redis_url, keys, SinkConfig(),
                                         redact=redactor.redact)
            await self._sink.start()
            feedback = FeedbackStore(config.redis_url, keys, config.ingress.feedback)
            try:
                await feedback.start()
            except FeedbackUnavailable:
                logger.warning("Redis at %s is unreachable; feedback answers 503 until it is "
                               "back", redact_url(config.redis_url))
        catalog = None
        self._admin = None
        self._catalog_task: asyncio.Task | None = None
        if config.registry is not None:
            # Read in a thread by a task of its own, never on the event loop; the last
            # catalog read (also on local disk) serves while the database is unreachable.
            catalog = CatalogCache(config.registry.view(actor="ingress").catalog,
                                   snapshot_dir=config.registry.cache_dir)
            self._catalog_task = asyncio.get_running_loop().create_task(catalog.run())
            self._admin = _admin_options(config)
        self._sampler_task: asyncio.Task | None = None
        sampler = None
        if config.redis_url:
            from feedback.backlog import RedisSampler

            # Streams, backlog, dead letters and memory for /metrics: sampled in a task of
            # its own every few seconds, never by a request or a scrape.
            sampler = RedisSampler(config.redis_url, keys,
                                   interval_s=config.redis_sample_interval_s)
            self._sampler_task = asyncio.get_running_loop().create_task(sampler.run())
        ledger = None
        if config.redis_url:
            from serving.compute.ledger import ComputeLedger

            ledger = ComputeLedger(config.redis_url, keys)
        self.service = ChatService(
            ledger=ledger,
            generate=self._relay,
            config=config.ingress,
            sink=self._sink,
            readiness=self._readiness,
            catalog=catalog,
            feedback=feedback,
            replicas=self._replicas,
        )
        if sampler is not None:
            self.service.metrics.registry.register(RedisCollector(sampler))

    async def __del__(self) -> None:  # Ray Serve awaits this on graceful shutdown
        for task in (self._catalog_task, self._sampler_task):
            if task is not None:
                task.cancel()
        if self._sink is not None:
            await self._sink.close(timeout=5)

    def __serve_build_asgi_app__(self):
        api = build_api(self.service)
        if self._admin is not None:
            from serving.admin_routes import include_admin

            include_admin(api, service=self.service, **self._admin)
        return api

    async def _relay(self, payload: dict) -> AsyncIterator[dict]:
        if not payload["stream"]:  # one round trip for the whole answer
            try:
                events = await self._llm.generate_all.remote(payload)
            except BackPressureError as exc:
                events = [_busy(exc)]
            except RayError as exc:
                events = [_replica_gone(exc)]
            for event in events:
                yield event
            return
        stream = self._llm.options(stream=True).generate.remote(payload)
        try:
            async for event in stream:
                yield event
        except BackPressureError as exc:
            yield _busy(exc)
        except RayError as exc:
            # The replica died under the stream (killed at the end of its drain, crashed):
            # an error event the client can read, not a cut connection.
            yield _replica_gone(exc)
        finally:
            stream.cancel()

    async def _replicas(self) -> list[dict]:
        """What every LLM replica runs and holds (engine, adapters, routes, recent swaps)."""
        response = self._llm.broadcast("info")
        return await response.results_async(timeout_s=10, return_exceptions=True)

    async def _readiness(self) -> dict:
        checks: dict = {}
        try:
            info = await asyncio.wait_for(self._llm.info.remote(), timeout=5)
            checks["engine"] = bool(info)
        except Exception as exc:
            checks["engine"] = f"not ready: {exc!r}"
        if self._sink is not None:
            checks["redis"] = True if await self._sink.ping() else "unreachable"
        return checks


def _admin_options(config: ServeConfig) -> dict:
    """``/admin/...`` over the registry; alias moves are announced to the replicas.

    The schema is not migrated here (`loraloop up`, the deploy builder or the k8s
    migration Job do it once): the ingress must start while the database is down.
    """
    from storage.db import open_registry

    return {
        "session_factory": open_registry(config.registry.database_url, upgrade=False),
        "admin_token": config.admin_token,
        "admin_tokens_by_name": config.admin_tokens,
        "gate_override_approvals": config.gate_override_approvals,
        "user_keys": set(config.ingress.api_keys),
        "notifier": _publisher(config),
    }


def _publisher(config: ServeConfig):
    """Announces committed alias changes on Redis, if the deployment has one."""
    if not config.redis_url:
        return None
    from storage.alias_events import AliasChangePublisher

    return AliasChangePublisher.from_url(config.redis_url, prefix=config.redis_prefix)


def _subscriber(config: ServeConfig):
    """Alias-change notifications from Redis, if the deployment has one."""
    if not config.redis_url:
        return None
    from feedback.keys import RedisKeys
    from storage.alias_events import watch_alias_changes

    def subscribe(kick):
        return watch_alias_changes(
            config.redis_url, RedisKeys(config.redis_prefix), lambda _message: kick()
        )

    return subscribe


def _busy(exc: BackPressureError) -> ReplicasBusy:
    """Every replica's queue is full: an error the API answers with 503."""
    return ReplicasBusy(f"all LLM replicas are busy; retry shortly ({exc})")


def _replica_gone(exc: RayError) -> EngineUnhealthy:
    """The replica died under a request (killed at the end of its drain, crashed)."""
    logger.warning("an LLM replica stopped while answering: %r", exc)
    return EngineUnhealthy(f"the model replica answering this request stopped "
                           f"({type(exc).__name__}); retry the request")


def build_app(config: ServeConfig, *, llm_cls: type[LLMServer] = LLMServer):
    """The Serve application: an ingress bound to ``num_replicas`` LLM replicas.

    ``llm_cls`` is the replica class (tests pass a subclass that can inject faults).
    With ``topology="one_hop"`` the replicas serve HTTP themselves (no ingress).
    """
    extra = {}
    if config.topology == "one_hop":
        from serving.one_hop import deployment_options, one_hop_class

        llm_cls, extra = serve.ingress()(one_hop_class(llm_cls, Ingress)), deployment_options()
    llm = serve.deployment(
        llm_cls,
        name="llm",
        num_replicas=config.num_replicas,
        max_ongoing_requests=config.max_ongoing_requests,
        max_queued_requests=config.max_queued_requests,
        ray_actor_options={"num_cpus": config.replica_cpus, "num_gpus": config.replica_gpus},
        health_check_period_s=config.health_check_period_s,
        health_check_timeout_s=config.health_check_timeout_s,
        graceful_shutdown_timeout_s=config.drain_timeout_s,
        graceful_shutdown_wait_loop_s=config.drain_poll_s,
        **extra,
    ).bind(config)
    if config.topology == "one_hop":
        return llm
    ingress = serve.deployment(
        serve.ingress()(Ingress),
        name="ingress",
        num_replicas=1,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1000,
        # The ingress outlives its replicas' drain, so that a stream cut short there still
        # ends with an error event rather than a closed connection.
        graceful_shutdown_timeout_s=config.drain_timeout_s + INGRESS_DRAIN_MARGIN_S,
        graceful_shutdown_wait_loop_s=config.drain_poll_s,
    )
    return ingress.bind(llm, config)
