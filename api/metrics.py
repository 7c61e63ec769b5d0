"""Prometheus metrics of one gateway process, exposed at `GET /metrics` (admin key).

The registry belongs to the app (built in `create_app`), never to the module, so two apps in
one process (tests) keep separate counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.responses = Counter(
            "sluicegate_http_responses",
            "HTTP responses by status code",
            ["status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sluicegate_http_response_start_seconds",
            "Time from request to the first byte of the response",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

        # `labels()` takes a lock and builds a key on every call; statuses are few.
        self._by_status: dict[int, Counter] = {}

    def observe(self, status: int, seconds: float) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self.responses.labels(str(status))
        counter.inc()
        self.latency.observe(seconds)
