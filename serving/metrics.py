"""Prometheus metrics of the ingress, in a registry of its own (no global state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

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
        if logging_stats is not None:
            self.registry.register(_LoggingCollector(logging_stats))

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
