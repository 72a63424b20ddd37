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

WORLD_TICKS = Counter(
    "scribe_world_ticks_total", "World ticks applied, by what drove them", ["source"]
)
WORLD_EVENTS = Counter(
    "scribe_world_events_total",
    "World events by outcome: applied, duplicate (ignored) or rejected (dead-lettered)",
    ["outcome"],
)
WORLD_TICK_LAG_SECONDS = Histogram(
    "scribe_world_tick_lag_seconds",
    "From the time a tick was due until it was stored in PostgreSQL",
    ["source"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60),
)
WORLDS_LOADED = Gauge("scribe_worlds_loaded", "Worlds this worker holds in memory")
WORLDS_TICKING = Gauge("scribe_worlds_ticking", "Worlds this worker ticks on its timer")
WORLD_TICK_BACKLOG = Gauge(
    "scribe_world_tick_backlog", "Ticks due on this worker and not yet applied"
)
WORLD_CONFLICTS = Counter(
    "scribe_world_conflicts_total",
    "Worlds found written by another worker; this worker's unsaved changes were dropped",
)
WORLD_WRITE_SECONDS = Histogram(
    "scribe_world_write_seconds",
    "Time to write one batch of world changes to PostgreSQL (one transaction)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
