"""Prometheus metrics shared by the services, and the helper that serves them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

BUS_PUBLISHED = Counter("tb_bus_published_total", "Messages published", ["stream"])
BUS_ACKED = Counter("tb_bus_acked_total", "Messages handled and acked", ["stream", "group"])
BUS_HANDLER_ERRORS = Counter(
    "tb_bus_handler_errors_total", "Handler failures (message left pending)", ["stream", "group"]
)
BUS_RECLAIMED = Counter(
    "tb_bus_reclaimed_total", "Pending messages reclaimed from dead consumers", ["stream", "group"]
)
BUS_TRIMMED = Counter(
    "tb_bus_trimmed_pending_total",
    "Pending messages trimmed from the stream before they were handled (lost)",
    ["stream", "group"],
)
DLQ_MESSAGES = Counter(
    "tb_dlq_messages_total", "Messages sent to the dead-letter stream", ["stream", "reason"]
)
SERVICE_UP = Gauge("tb_service_up", "1 while the service runs its main loop", ["service"])
LEASE_HELD = Gauge("tb_lease_held", "1 while this process holds its service lease", ["service"])
EXCHANGE_CALLS = Counter(
    "tb_exchange_calls_total", "Exchange API calls by call and outcome", ["call", "outcome"]
)
EXCHANGE_LATENCY = Histogram(
    "tb_exchange_call_seconds",
    "Exchange API call latency",
    ["call"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def serve_metrics(port: int) -> None:
    """Serve the default registry on ``port`` (0 disables it)."""
    if port:
        start_http_server(port)
