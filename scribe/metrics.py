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

# Cache invalidation fan-out: agents/invalidation, sinks/redis, sinks/cdn.
INVALIDATION_TARGETS = Counter(
    "scribe_invalidation_targets_total",
    "Invalidation targets as received (stage=received) and after coalescing (stage=coalesced)",
    ["stage"],
)
INVALIDATION_COALESCING_RATIO = Gauge(
    "scribe_invalidation_coalescing_ratio",
    "Targets received per target delivered since the worker started (1 = nothing merged)",
)
CACHE_PURGES = Counter(
    "scribe_cache_purges_total",
    "Targets purged at a sink after coalescing (sink: redis, l1, cdn.fastly, cdn.cloudflare)",
    ["sink", "kind"],
)
CDN_REQUESTS = Counter(
    "scribe_cdn_requests_total", "CDN purge API calls by outcome", ["provider", "outcome"]
)
INVALIDATION_DELAY_SECONDS = Histogram(
    "scribe_invalidation_delay_seconds",
    "From an invalidation's occurred_at to its removal from Redis and the L1 broadcast",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5, 10, 30, 60),
)
INVALIDATION_PAUSED = Gauge(
    "scribe_invalidation_paused",
    "1 while the invalidation consumer has paused its partitions (a sink down or backlog full)",
)
CACHE_WARMING = Counter(
    "scribe_cache_warming_total", "world_loaded events handled by cache warming", ["outcome"]
)
