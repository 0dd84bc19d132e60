"""The replica's test-time compute runner, built from the Serve config."""

from __future__ import annotations

from serving.compute.runner import ComputeRunner


def compute_factory(config):
    """The replica's test-time compute runner: its strategies, adaptive policy and upstream."""
    from feedback.keys import RedisKeys
    from feedback.redact import make_redactor
    from serving.compute.bandit import Bandit
    from serving.compute.upstream import Upstream

    compute = config.ingress.compute

    def factory(engine):
        upstream = None
        if config.upstream.url:
            upstream = Upstream(config.upstream, redis_url=config.redis_url,
                                prefix=config.redis_prefix,
                                redact=make_redactor(config.ingress.feedback.redactor).redact)
        bandit = Bandit(config.redis_url, RedisKeys(config.redis_prefix),
                        cost_weight=compute.adaptive.cost_weight)
        return ComputeRunner(engine, compute, upstream=upstream, bandit=bandit)

    return factory
