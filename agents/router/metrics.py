"""The router's Prometheus metrics. Labels stay low-cardinality: lane, provider, model, result;
never a user, a request or a key."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter(
    "scribe_router_decisions_total",
    "Requests decided, by lane and outcome (routed, rejected, duplicate)",
    ["lane", "outcome"],
)
PROVIDER_CALLS = Counter(
    "scribe_router_provider_calls_total",
    "Provider calls by provider, model and result "
    "(ok, rate_limited, server, timeout, refused, malformed)",
    ["provider", "model", "result"],
)
PROVIDER_SECONDS = Histogram(
    "scribe_router_provider_call_seconds",
    "Latency of provider calls",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
FALLBACKS = Counter(
    "scribe_router_fallbacks_total",
    "Requests served by a later model of their chain, by the provider that failed first",
    ["provider"],
)
BREAKER_STATE = Gauge(
    "scribe_router_breaker_state",
    "Circuit breaker per provider and model: 0 closed, 1 open, 2 half-open",
    ["provider", "model"],
)
RESPONSES = Counter(
    "scribe_router_responses_total",
    "Responses emitted by status and whether the free tier served them",
    ["status", "free_tier"],
)
LANE_HELD = Gauge(
    "scribe_router_lane_held",
    "Decided requests this worker holds in a lane, waiting for a slot, the window or the cap",
    ["lane"],
)
LANE_IN_FLIGHT = Gauge(
    "scribe_router_lane_in_flight", "Requests of a lane being executed now", ["lane"]
)
PROMOTIONS = Counter(
    "scribe_router_promotions_total",
    "Deferred requests run ahead of the window and the rate cap because their deadline is near",
)
BUDGET_STATES = Counter(
    "scribe_router_budget_states_total",
    "Budget state records read, by result (applied, removed, ignored)",
    ["result"],
)
