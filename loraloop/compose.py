"""Wiring components together from settings (the composition root)."""

from __future__ import annotations

from importlib import resources

from loraloop.models import resolve_model
from loraloop.settings import Settings
from serving.engines import choose_engine, engine_class
from serving.engines.base import Engine


async def build_engine(settings: Settings) -> Engine:
    """Resolve the base model, then create and start the configured engine."""
    model_path = resolve_model(settings.model, settings.data_dir)
    name, _reason = choose_engine(settings.engine)
    engine = engine_class(name)(settings.engine_for(model_path))
    await engine.start()
    return engine


def serve_config(settings: Settings, *, redis_url: str, replicas: int | None = None):
    """The Serve application's config: engine, ingress, registry and admin API from settings.

    ``redis_url`` is the Redis the stack really uses (``loraloop up`` may have
    embedded one); ``replicas`` overrides ``settings.replicas``.
    """
    from serving.api import IngressConfig
    from serving.app import RegistryConfig, ServeConfig

    model_path = resolve_model(settings.model, settings.data_dir)
    return ServeConfig(
        engine=settings.engine,
        engine_config=settings.engine_for(model_path),
        ingress=IngressConfig(
            tenants=settings.tenants, api_keys=settings.api_keys,
            feedback=settings.feedback_config, pinnable_statuses=settings.pinnable_statuses,
            compute=settings.compute_config, refusals=settings.refusal_config,
        ),
        upstream=settings.upstream_config,
        num_replicas=replicas or settings.replicas,
        topology=settings.topology,
        replica_gpus=settings.replica_gpus,
        admin_token=settings.admin_token,
        admin_tokens=settings.admin_tokens,
        gate_override_approvals=settings.gate_override_approvals,
        redis_url=redis_url,
        redis_prefix=settings.redis_prefix,
        registry=RegistryConfig(
            database_url=settings.sqlalchemy_url,
            artifacts_location=settings.artifacts_location,
            cache_dir=str(settings.data_dir / "adapter-cache"),
        ),
    )


def auto_promote_policy(settings: Settings) -> tuple[str, str]:
    """The learner's promotion policy for these settings, and why.

    Automatic promotion lets whoever sends feedback steer what goes live. That is
    safe when only this machine can reach the API, or when users need API keys; an
    API open to other hosts without keys needs the operator's explicit trust. An API
    behind a proxy (``feedback_config.client_address_header`` set) is open to others
    even on a loopback address.
    """
    requested = settings.learner_auto_promote
    proxied = settings.feedback_config.client_address_header is not None
    exposed = _reachable_by_others(settings) and not settings.api_keys
    if requested == "auto":
        if exposed:
            where = f"behind a proxy ({settings.feedback_config.client_address_header})" \
                if proxied else f"on {settings.http_host}"
            return "off", (f"the API listens {where} without API keys, so "
                           "gated versions wait for an operator (`loraloop adapters promote`); "
                           "set LORALOOP_API_KEYS, or LORALOOP_LEARNER_AUTO_PROMOTE=canary with "
                           "LORALOOP_LEARNER_TRUST_ANONYMOUS_FEEDBACK=true")
        why = ("users need API keys" if settings.reachable_from_other_hosts or proxied
               else "only this machine can reach the API")
        return "canary", f"gated versions go to a canary automatically ({why})"
    if requested != "off" and exposed and not settings.learner_trust_anonymous_feedback:
        raise ValueError(
            f"LORALOOP_LEARNER_AUTO_PROMOTE={requested} with the API on {settings.http_host}"
            f"{' behind a proxy' if proxied else ''} "
            "and LORALOOP_API_KEYS empty would let anyone who reaches it decide what goes "
            "live; set LORALOOP_API_KEYS, or LORALOOP_LEARNER_TRUST_ANONYMOUS_FEEDBACK=true "
            "to accept that")
    if requested == "off":
        return "off", "gated versions wait for an operator (`loraloop adapters promote`)"
    return requested, f"gated versions go {'to a canary' if requested == 'canary' else 'live'}"


def regression_set_path(settings: Settings) -> str | None:
    """The gate's regression set: the configured file, or the one shipped for a built-in."""
    choice = settings.learner_regression_set
    if choice == "none":
        return None
    if choice != "auto":
        return choice
    if settings.model.startswith("builtin:"):
        shipped = resources.files("loraloop").joinpath(
            f"data/regression/{settings.model.removeprefix('builtin:')}.jsonl")
        if shipped.is_file():
            return str(shipped)
    return None


def learner_spec(settings: Settings, *, redis_url: str | None = None):
    """What the learner needs, from settings (and the running stack's Redis if embedded)."""
    from learner.actor import LearnerSpec
    from loraloop.stack_state import redis_url_for

    if redis_url is None:
        redis_url = redis_url_for(settings)
    if not redis_url:
        raise ValueError("the learner needs Redis: set LORALOOP_REDIS_URL or run `loraloop up`")
    policy, _ = auto_promote_policy(settings)
    config = settings.learner_config
    if not _reachable_by_others(settings):
        # Only this machine reaches the API: the person at it may teach alone (a share of
        # the round and a minimum of users guard an API that strangers reach; SECURITY.md).
        solo = {"max_user_share": 1.0, "min_round_users": 1}
        config = config.model_copy(
            update={k: v for k, v in solo.items() if k not in config.model_fields_set})
    return LearnerSpec(
        redis_url=redis_url,
        redis_prefix=settings.redis_prefix,
        database_url=settings.sqlalchemy_url,
        artifacts_location=settings.artifacts_location,
        base_model=resolve_model(settings.model, settings.data_dir),
        base_model_name=settings.model,
        data_dir=str(settings.data_dir),
        config=config.model_copy(update={
            "gate": config.gate.model_copy(update={"auto_promote": policy}),
            "regression_set": regression_set_path(settings),
        }),
    )


def _reachable_by_others(settings: Settings) -> bool:
    """Whether hosts other than this one reach the API: it binds beyond loopback, or a
    proxy header is configured (clients then arrive through a proxy, loopback or not)."""
    proxied = settings.feedback_config.client_address_header is not None
    return settings.reachable_from_other_hosts or proxied
