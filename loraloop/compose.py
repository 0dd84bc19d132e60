"""Wiring components together from settings (the composition root)."""

from __future__ import annotations

from loraloop.models import resolve_model
from loraloop.settings import Settings
from serving.engines import choose_engine, engine_class
from serving.engines.base import Engine


async def build_engine(settings: Settings) -> Engine:
    """Resolve the base model, then create and start the configured engine."""
    model_path = resolve_model(settings.model, settings.data_dir)
    name, _reason = choose_engine(settings.engine)
    engine = engine_class(name)(settings.engine_config(model_path))
    await engine.start()
    return engine


def serve_config(settings: Settings, *, redis_url: str, replicas: int | None = None):
    """The Serve application's config: engine, ingress, registry and admin API from settings.

    ``redis_url`` is the Redis the stack really uses (``loraloop up`` may have
    embedded one); ``replicas`` overrides ``settings.replicas``.
    """
    from feedback.store import FeedbackConfig
    from serving.api import IngressConfig
    from serving.app import RegistryConfig, ServeConfig

    model_path = resolve_model(settings.model, settings.data_dir)
    return ServeConfig(
        engine=settings.engine,
        engine_config=settings.engine_config(model_path),
        ingress=IngressConfig(
            tenants=settings.tenants,
            api_keys=settings.api_keys,
            feedback=FeedbackConfig(strict_durability=settings.feedback_strict),
        ),
        num_replicas=replicas or settings.replicas,
        replica_gpus=settings.replica_gpus,
        admin_token=settings.admin_token,
        redis_url=redis_url,
        redis_prefix=settings.redis_prefix,
        registry=RegistryConfig(
            database_url=settings.sqlalchemy_url,
            artifacts_location=settings.artifacts_location,
            cache_dir=str(settings.data_dir / "adapter-cache"),
        ),
    )


def learner_spec(settings: Settings, *, redis_url: str | None = None):
    """What the learner needs, from settings (and the running stack's Redis if embedded)."""
    from learner.actor import LearnerSpec
    from learner.gate import GateConfig
    from learner.loop import LearnerConfig
    from learner.train import TrainConfig
    from loraloop.stack import redis_url_for

    if redis_url is None:
        redis_url = redis_url_for(settings)
    if not redis_url:
        raise ValueError("the learner needs Redis: set LORALOOP_REDIS_URL or run `loraloop up`")
    return LearnerSpec(
        redis_url=redis_url,
        redis_prefix=settings.redis_prefix,
        database_url=settings.sqlalchemy_url,
        artifacts_location=settings.artifacts_location,
        base_model=resolve_model(settings.model, settings.data_dir),
        base_model_name=settings.model,
        data_dir=str(settings.data_dir),
        config=LearnerConfig(
            min_new_examples=settings.learner_min_new_examples,
            max_interval_s=settings.learner_max_interval_s,
            train=TrainConfig(
                method=settings.learner_method,
                learning_rate=settings.learner_learning_rate,
                epochs=settings.learner_epochs,
                rank=settings.learner_lora_rank,
            ),
            gate=GateConfig(auto_promote=settings.learner_auto_promote),
        ),
    )
