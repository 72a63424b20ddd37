"""Prometheus metrics shared by the agents and sinks. Labels stay low-cardinality: topic,
agent, sink and reason kind, never a user or world id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_IN = Counter(
    "scribe_messages_in_total", "Messages consumed from an input topic", ["topic"]
)
MESSAGES_OUT = Counter("scribe_messages_out_total", "Messages produced to a topic", ["topic"])
DEAD_LETTERS = Counter(
    "scribe_dead_letters_total",
    "Messages sent to a dead-letter topic, by source topic and reason kind",
    ["topic", "kind"],
)
PROCESSING_SECONDS = Histogram(
    "scribe_processing_seconds",
    "Time an agent spends on one batch of events",
    ["agent"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SINK_BATCH_SIZE = Histogram(
    "scribe_sink_batch_size",
    "Events per sink write",
    ["sink"],
    buckets=(1, 5, 10, 50, 100, 500, 1000, 5000, 10000),
)
SINK_ERRORS = Counter("scribe_sink_errors_total", "Failed sink writes (retried)", ["sink"])
GATEWAY_REQUESTS = Counter(
    "scribe_gateway_requests_total",
    "Ingest requests answered, by topic and status",
    ["topic", "status"],
)
GATEWAY_EVENTS = Counter(
    "scribe_gateway_events_total", "Events the gateway published (acknowledged)", ["topic"]
)
GATEWAY_SECONDS = Histogram(
    "scribe_gateway_request_seconds",
    "Time from request to answer, including the broker's acknowledgement",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ASSIGNED_PARTITIONS = Gauge(
    "scribe_assigned_partitions",
    "Partitions of a pipeline topic assigned to this worker after the last rebalance",
    ["topic"],
)
