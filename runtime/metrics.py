"""Prometheus metrics shared by the agents and sinks: every family the pipeline exposes on
/metrics, the dashboard and the alert rules read. Names follow Prometheus conventions (base
units, `_total`, `_seconds`); labels stay low-cardinality — topic, agent, sink, provider, model,
lane, a cache's name — never a user, world, request or key value."""

from __future__ import annotations

import bisect
import collections
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

# The `agent` label when a message is handled outside a Faust agent (e.g. a batch consumer
# service that did not name itself).
NO_AGENT = "none"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
END_TO_END_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# --- Messages through the agents -------------------------------------------------------------

MESSAGES_IN = Counter(
    "scribe_messages_in_total", "Messages consumed from an input topic", ["topic", "agent"]
)
MESSAGES_OUT = Counter(
    "scribe_messages_out_total",
    "Messages produced to a topic (dead letters included, under the .dlq topic)",
    ["topic", "agent"],
)
DEAD_LETTERS = Counter(
    "scribe_dead_letters_total",
    "Messages sent to a dead-letter topic, by source topic and reason kind",
    ["topic", "agent", "kind"],
)
PROCESSING_SECONDS = Histogram(
    "scribe_processing_seconds",
    "Time an agent spends on one batch of events",
    ["agent"],
    buckets=LATENCY_BUCKETS,
)
END_TO_END_SECONDS = Histogram(
    "scribe_end_to_end_seconds",
    "From an event's own time (occurred_at) to its sink write being committed",
    ["agent", "sink"],
    buckets=END_TO_END_BUCKETS,
)
# For stalls of a whole event loop: a late probe, a garbage collection.
STALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
EVENT_LOOP_LAG_SECONDS = Histogram(
    "scribe_event_loop_lag_seconds",
    "How late the process's event loop woke a probe due every 100 ms: how long other work held "
    "the loop, delaying every flow it hosts",
    buckets=STALL_BUCKETS,
)
GC_PAUSE_SECONDS = Histogram(
    "scribe_gc_pause_seconds",
    "Duration of one garbage collection, by the generation collected (0, 1, 2): a collection "
    "holds every flow on the process's event loop until it is done",
    ["generation"],
    buckets=STALL_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "scribe_consumer_lag_messages",
    "Messages in a partition this worker owns in a consumer group that the group has not "
    "committed yet",
    ["group", "topic", "partition"],
)

HEALTH_STATUS = Gauge(
    "scribe_health_status",
    "Last health check of each component: 0 healthy, 1 degraded, 2 unhealthy",
    ["component"],
)

# --- Sinks ------------------------------------------------------------------------------------

SINK_BATCH_SIZE = Histogram(
    "scribe_sink_batch_size",
    "Events per sink write",
    ["sink"],
    buckets=(1, 5, 10, 50, 100, 500, 1000, 5000, 10000),
)
SINK_WRITE_SECONDS = Histogram(
    "scribe_sink_write_seconds",
    "Time of one successful sink write, retries included",
    ["sink"],
    buckets=LATENCY_BUCKETS,
)
SINK_ERRORS = Counter("scribe_sink_errors_total", "Failed sink write attempts", ["sink"])
SINK_RETRIES = Counter(
    "scribe_sink_retries_total", "Sink writes attempted again after a retryable failure", ["sink"]
)

# --- AI providers and routing (fed by the router) ---------------------------------------------

ROUTING_DECISIONS = Counter(
    "scribe_routing_decisions",
    "Routing decisions by priority lane, request kind (text, image) and route (free, paid, "
    "rejected, deduplicated)",
    ["lane", "kind", "route"],
)
FREE_TIER_REQUESTS = Counter(
    "scribe_free_tier_requests",
    "Free-tier quota checks of image requests by outcome (granted, exhausted, returned), by the "
    "provider of the free model",
    ["provider", "outcome"],
)
PROVIDER_CALLS = Counter(
    "scribe_provider_calls",
    "Calls to an AI provider by outcome (ok, rate_limited, server, timeout, refused, malformed)",
    ["provider", "model", "outcome"],
)
PROVIDER_CALL_SECONDS = Histogram(
    "scribe_provider_call_seconds",
    "Duration of one provider HTTP call, whatever its outcome",
    ["provider", "model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PROVIDER_KEY_QUOTA_USED_RATIO = Gauge(
    "scribe_provider_key_quota_used_ratio",
    "Share of a provider key's account limit used in its current window (minute, day), as of "
    "the key's last use (key_id, never the key)",
    ["provider", "key_id", "window"],
)
BREAKER_STATE = Gauge(
    "scribe_breaker_state",
    "Circuit breaker state per provider and model: 0 closed, 1 half-open, 2 open",
    ["provider", "model"],
)
FALLBACKS = Counter(
    "scribe_router_fallbacks",
    "Requests served by a later model of their chain, by the provider that failed first",
    ["provider"],
)
RESPONSES = Counter(
    "scribe_router_responses",
    "Responses the router emitted, by status and whether the free tier served them",
    ["status", "free_tier"],
)
LANE_HELD = Gauge(
    "scribe_router_lane_held_requests",
    "Requests this worker holds in a lane, waiting for a slot, the off-peak window or the cap",
    ["lane"],
)
LANE_IN_FLIGHT = Gauge(
    "scribe_router_lane_in_flight_requests", "Requests of a lane being executed now", ["lane"]
)
EXPRESSED = Counter(
    "scribe_router_expressed",
    "Decided requests executed in the worker that decided them, before their lane read them",
    ["lane"],
)
PROMOTIONS = Counter(
    "scribe_router_promotions",
    "Held requests run ahead of the window and the rate cap because their deadline is near",
)
BUDGET_STATES = Counter(
    "scribe_router_budget_states",
    "Budget state records the router read, by result (applied, removed, ignored)",
    ["result"],
)

# --- Cost and budgets -------------------------------------------------------------------------

COST = Counter(
    "scribe_cost_usd_total",
    "Spend of the usage events this worker added to the ledger (new rows only)",
    ["service", "model"],
)
COST_TODAY = Gauge(
    "scribe_cost_today_usd",
    "Spend of the current UTC day, read from the usage_daily rollup (all workers)",
    ["service", "model"],
)
COST_MONTH_TO_DATE = Gauge(
    "scribe_cost_month_to_date_usd",
    "Spend of the current UTC month, read from the usage_monthly rollup (all workers)",
    ["service", "model"],
)
BUDGET_ALERTS = Counter(
    "scribe_budget_alerts_total", "Budget alerts published, by threshold percent", ["threshold"]
)
USAGE_EVENTS_COUNTED = Counter(
    "scribe_usage_events_total",
    "Valid usage events by outcome: counted (new to the ledger), duplicate (already counted), "
    "refused (dead-lettered: unpriced, implausible or refused by PostgreSQL)",
    ["outcome"],
)

# --- Cache invalidation -----------------------------------------------------------------------

INVALIDATIONS = Counter(
    "scribe_invalidations_total",
    "Cache targets invalidated by a sink, by target kind (key, pattern, tag, url)",
    ["sink", "kind"],
)
COALESCED_TARGETS = Counter(
    "scribe_coalesce_targets_total",
    "Invalidation targets before (received) and after (emitted) coalescing",
    ["stage"],
)
CACHE_WARMING = Counter(
    "scribe_cache_warming_total",
    "Cache warming by outcome: each world a batch of world_loaded events named (warmed, "
    "already_cached, refused, no_state, no_table, failed), or bad_input (a world.events record "
    "that is no WorldEvent: skipped, the world flow dead-letters it)",
    ["outcome"],
)

# --- Cache client (fed by every process that reads through cache.CacheClient) -----------------
# `cache` is the name the code gives each client (a constant such as "worlds", checked by the
# client), so several caches in one process stay apart without a label per key or user.

CACHE_READ_LAYERS = ("l1", "redis", "loader")

CACHE_READS = Counter(
    "scribe_cache_reads",
    "Reads through a cache client by the layer that answered: l1 (in-process), redis, or loader "
    "(a miss: the read waited for a loader call, its own or one it joined)",
    ["cache", "layer"],
)
CACHE_IN_FLIGHT_LOADS = Gauge(
    "scribe_cache_in_flight_loads",
    "Loader calls of a cache client running now (reads and cache warming)",
    ["cache"],
)
CACHE_LEASE_WAITS = Counter(
    "scribe_cache_lease_waits",
    "Redis misses that found another process loading the key (its lease) and waited for its value",
    ["cache"],
)
CACHE_LEASE_WAIT_TIMEOUTS = Counter(
    "scribe_cache_lease_wait_timeouts",
    "Lease waits that gave up after the client's lease_wait and called the loader themselves, "
    "without writing the value back",
    ["cache"],
)
CACHE_LEASE_REFUSALS = Counter(
    "scribe_cache_lease_refusals",
    "Loaded values the lease guard did not write back to Redis, because an invalidation removed "
    "the key (and its lease) while they loaded",
    ["cache"],
)

# --- World simulation (fed by the world flow) -------------------------------------------------

WORLD_TICKS = Counter(
    "scribe_world_ticks_total", "World ticks applied, by source (timer, topic)", ["source"]
)
WORLD_TICK_LAG_SECONDS = Histogram(
    "scribe_world_tick_lag_seconds",
    "From the time a tick was due to the time it was applied and stored in PostgreSQL, "
    "by source (timer, topic)",
    ["source"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
WORLDS_ACTIVE = Gauge("scribe_worlds_active", "Worlds ticking on this worker")
WORLD_TICK_OVERDUE_SECONDS = Gauge(
    "scribe_world_tick_overdue_seconds",
    "How long the most overdue world tick on this worker has been due, after each tick round: "
    "near 0 while the worker keeps up, growing while it cannot",
)
WORLD_TIMER_SECONDS = Counter(
    "scribe_world_timer_seconds",
    "Wall time of the world tick timer's calls, by phase: apply (its rounds on the event loop, "
    "with what the loop ran between their steps), wait_write (waiting for the write before "
    "the next round), drain (the last write and the invalidations before a call returns). "
    "What a worker's wall time leaves over is between calls",
    ["phase"],
)
WORLD_EVENTS = Counter(
    "scribe_world_events",
    "World events by outcome: applied, duplicate (ignored) or rejected (dead-lettered)",
    ["outcome"],
)
WORLD_CONFLICTS = Counter(
    "scribe_world_conflicts",
    "Worlds found written by another worker; this worker's unsaved changes were dropped",
)

# --- PostgreSQL read replica (fed by every process with SCRIBE_DATABASE_READ_URL set) ----------

# Why a read meant for the replica went to the primary.
READ_FALLBACK_REASONS = ("lagging", "unreachable", "recovery_conflict")
DB_READ_FALLBACKS = Counter(
    "scribe_db_read_fallbacks",
    "Reads meant for the read replica that went to the primary, by reason: lagging (behind by "
    "more than SCRIBE_DATABASE_READ_MAX_LAG_S), unreachable, or recovery_conflict (the replica "
    "cancelled the read to replay the primary's changes)",
    ["reason"],
)
# Every reason shows from the start (at 0), so a rate over it exists before the first fallback.
for _reason in READ_FALLBACK_REASONS:
    DB_READ_FALLBACKS.labels(reason=_reason)

# --- HTTP ingest gateway (`scribe gateway`, served on the gateway's own /metrics) -------------

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
    "scribe_partition_assignment_size",
    "Partitions of a topic a flow holds in this worker after its group's last rebalance",
    ["flow", "topic"],
)


GATEWAY_PREFIX = "scribe_gateway_"
# On the /metrics of whichever process reads through a CacheClient: an app's, and the worker's
# for the client cache warming primes through.
CACHE_CLIENT_FAMILIES = frozenset(
    described.name
    for family in (
        CACHE_READS,
        CACHE_IN_FLIGHT_LOADS,
        CACHE_LEASE_WAITS,
        CACHE_LEASE_WAIT_TIMEOUTS,
        CACHE_LEASE_REFUSALS,
    )
    for described in family.describe()
)


def current_agent_name() -> str:
    """The Faust agent running the calling task, so shared code (intake, the DLQ) labels its
    counts without every flow passing its name."""
    from faust.agents.agent import current_agent

    agent = current_agent()
    return agent.name if agent is not None else NO_AGENT


def observe_end_to_end(
    agent: str, sink: str, event_times: Iterable[datetime], committed_at: datetime | None = None
) -> None:
    """Record, per event, the time from its own timestamp to the sink commit just done."""
    now = committed_at or datetime.now(UTC)
    observe_all(
        END_TO_END_SECONDS.labels(agent=agent, sink=sink),
        [max((now - occurred_at).total_seconds(), 0.0) for occurred_at in event_times],
    )


def observe_all(child: Histogram, amounts: Sequence[float]) -> None:
    """What `child.observe(amount)` records for each amount, counted per bucket first: a
    10,000-event batch takes each bucket's lock once, not once per event (a twentieth of the
    usage worker's CPU went to per-event observes)."""
    # prometheus_client keeps one non-cumulative count per upper bound; an amount is counted
    # in the first bound not below it (as Histogram.observe does). These are its private
    # attributes (the version is locked; tests/runtime/test_metrics.py compares with observe).
    bounds: list[float] = child._upper_bounds
    counts = collections.Counter(bisect.bisect_left(bounds, amount) for amount in amounts)
    for index, count in counts.items():
        child._buckets[index].inc(count)
    child._sum.inc(math.fsum(amounts))


@dataclass(frozen=True)
class FamilySpec:
    """A family this module defines, as the alert rules, Grafana and the demo see it."""

    name: str
    kind: str
    labels: tuple[str, ...]

    @property
    def sample_names(self) -> tuple[str, ...]:
        if self.kind == "counter":
            return (f"{self.name}_total", f"{self.name}_created")
        if self.kind == "histogram":
            return tuple(f"{self.name}{s}" for s in ("_bucket", "_count", "_sum", "_created"))
        return (self.name,)

    @property
    def served_by(self) -> str:
        """Which process exposes it: the gateway's families are on `scribe gateway`'s /metrics,
        the cache client's on that of any process reading through one, all others on every
        worker's."""
        if self.name.startswith(GATEWAY_PREFIX):
            return "gateway"
        return "cache client" if self.name in CACHE_CLIENT_FAMILIES else "worker"

    @property
    def activity_sample(self) -> str:
        """The sample whose sum says whether anything was recorded: a counter's total, a
        histogram's observation count, a gauge's value."""
        return {"counter": f"{self.name}_total", "histogram": f"{self.name}_count"}.get(
            self.kind, self.name
        )


def family_specs() -> list[FamilySpec]:
    specs = []
    for value in globals().values():
        if isinstance(value, MetricWrapperBase):
            (described,) = value.describe()
            # prometheus-client keeps label names only on the private attribute.
            specs.append(FamilySpec(described.name, described.type, tuple(value._labelnames)))
    return specs
