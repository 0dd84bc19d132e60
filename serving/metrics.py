"""Prometheus metrics of the ingress, in a registry of its own (no global state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServingMetrics:
    """Request, latency, token, error, queue and logging metrics, by tenant and version."""

    def __init__(self, logging_stats: Callable[[], dict] | None = None) -> None:
        self.registry = CollectorRegistry()
        labels = ("tenant", "adapter_version")
        self.requests = Counter(
            "loraloop_requests",
            "Chat requests answered.",
            (*labels, "stream", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "loraloop_request_latency_seconds",
            "Time to the last token.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_token = Histogram(
            "loraloop_time_to_first_token_seconds",
            "Time to the first token.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "loraloop_prompt_tokens", "Prompt tokens processed.", labels, registry=self.registry
        )
        self.completion_tokens = Counter(
            "loraloop_completion_tokens",
            "Completion tokens generated.",
            labels,
            registry=self.registry,
        )
        self.errors = Counter(
            "loraloop_errors",
            "Requests answered with an error.",
            ("status", "type"),
            registry=self.registry,
        )
        self.throttled = Counter(
            "loraloop_throttled_requests",
            "Requests refused unhandled, after a delay, because their address sent too many "
            "refused requests (serving.refusals).",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "loraloop_requests_in_flight",
            "Requests being answered (the queue depth seen by the ingress).",
            registry=self.registry,
        )
        self.abandoned = Counter(
            "loraloop_abandoned_streams",
            "Streams the client left before the end.",
            labels,
            registry=self.registry,
        )
        strategy = (*labels, "strategy")
        self.compute_requests = Counter(
            "loraloop_compute_requests", "Answers by test-time compute strategy.", strategy,
            registry=self.registry)
        self.compute_tokens = Counter(
            "loraloop_compute_tokens", "Local tokens generated or scored for answers (all "
            "samples, critiques, thinking); divide by loraloop_compute_requests for compute "
            "per request.", strategy, registry=self.registry)
        self.handoffs = Counter(
            "loraloop_handoffs", "Answers handed off to the upstream model.", labels,
            registry=self.registry)
        self.upstream_tokens = Counter(
            "loraloop_upstream_tokens", "Tokens of answers the upstream model wrote.", labels,
            registry=self.registry)
        self.handoff_fallbacks = Counter(
            "loraloop_handoff_fallbacks", "Handoffs answered locally instead, by reason "
            "(timeout, error, budget, breaker_open, not_configured).", ("tenant", "reason"),
            registry=self.registry)
        self.ratings = Counter(
            "loraloop_ratings_by_strategy", "Thumbs received, by the strategy that produced "
            "the rated answer (up / (up + down) is its thumbs-up rate).",
            ("tenant", "strategy", "rating"), registry=self.registry)
        if logging_stats is not None:
            self.registry.register(_LoggingCollector(logging_stats))

    def compute(self, tenant: str, version: str, record: dict | None,
                completion_tokens: int) -> None:
        """Count how one answer was produced (``record``: its ComputeRecord, None: single)."""
        record = record or {}
        strategy = record.get("strategy", "single")
        self.compute_requests.labels(tenant, version, strategy).inc()
        self.compute_tokens.labels(tenant, version, strategy).inc(
            record.get("compute_tokens", completion_tokens))
        if record.get("handed_off"):
            self.handoffs.labels(tenant, version).inc()
            self.upstream_tokens.labels(tenant, version).inc(record.get("upstream_tokens", 0))
        if record.get("fallback") and strategy in ("handoff", "adaptive"):
            self.handoff_fallbacks.labels(tenant, record["fallback"]).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LoggingCollector:
    """Exposes the interaction sink's counters at scrape time."""

    def __init__(self, stats: Callable[[], dict]) -> None:
        self._stats = stats

    def describe(self):
        return []

    def collect(self):
        for name, value in sorted(self._stats().items()):
            if isinstance(value, int | float):
                family = GaugeMetricFamily(
                    f"loraloop_interaction_log_{name}",
                    f"Interaction logging: {name.replace('_', ' ')}.",
                )
                family.add_metric([], float(value))
                yield family


class RedisCollector:
    """Redis's streams, the learner's backlog and Redis memory, from the last periodic sample.

    ``sampler`` is a :class:`feedback.backlog.RedisSampler`: scraping reads its
    last sample (taken in the sampler's own task), never Redis itself.
    """

    def __init__(self, sampler) -> None:
        self._sampler = sampler

    def describe(self):
        return []

    def collect(self):
        failures = CounterMetricFamily(
            "loraloop_redis_sample_failures", "Periodic Redis samples that failed.")
        failures.add_metric([], float(self._sampler.failures))
        yield failures
        sample = self._sampler.latest
        if sample is None:
            return
        yield _gauge("loraloop_redis_sample_timestamp_seconds",
                     "Unix time of the last good Redis sample.", sample.at)
        yield _gauge("loraloop_redis_used_memory_bytes", "Redis used_memory.",
                     sample.used_memory)
        yield _gauge("loraloop_redis_maxmemory_bytes", "Redis maxmemory (0: no limit).",
                     sample.maxmemory)
        streams = GaugeMetricFamily("loraloop_redis_stream_length",
                                    "Entries in each loraloop stream (XLEN).", labels=["stream"])
        for name, length in sorted(sample.streams.items()):
            streams.add_metric([name], float(length))
        yield streams
        yield _gauge("loraloop_feedback_dead_letters",
                     "Entries in the dead-letter stream.", sample.streams.get("dead-letter", 0))
        backlog = GaugeMetricFamily(
            "loraloop_feedback_backlog",
            "Feedback entries the learner has not finished: undelivered (not read yet) and "
            "pending (read, not acknowledged).", labels=["state"])
        backlog.add_metric(["undelivered"], float(sample.undelivered))
        backlog.add_metric(["pending"], float(sample.pending))
        yield backlog


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], float(value))
    return family
