"""Every topic of the pipeline in one place: name, partitions, retention, key, schema, DLQ."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.events import (
    AIRequest,
    AIResponse,
    BudgetAlert,
    BudgetState,
    CacheInvalidation,
    Event,
    RoutedRequest,
    RouterSettlement,
    UsageEvent,
    WorldEvent,
    WorldTick,
)

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    model: type[Event]
    key_field: str
    retention_ms: int = 7 * DAY_MS
    cleanup_policy: Literal["delete", "compact"] = "delete"
    has_dlq: bool = False
    partitions: int | None = None  # None: the `SCRIBE_TOPIC_PARTITIONS` setting

    @property
    def dlq_name(self) -> str:
        if not self.has_dlq:
            raise LookupError(f"{self.name} is an output topic and has no dead-letter topic")
        return f"{self.name}.dlq"

    def key_of(self, event: Event) -> bytes:
        return str(getattr(event, self.key_field)).encode()


@dataclass(frozen=True)
class DeadLetterSpec:
    """A `<name>.dlq` topic: the original bytes, the reason in headers, kept for 30 days."""

    name: str
    source: TopicSpec
    retention_ms: int = 30 * DAY_MS
    cleanup_policy: Literal["delete"] = "delete"
    partitions: int | None = None


AI_REQUESTS = TopicSpec("ai.requests", AIRequest, "user_id", has_dlq=True)
AI_RESPONSES = TopicSpec("ai.responses", AIResponse, "user_id")
USAGE_EVENTS = TopicSpec(
    "usage.events", UsageEvent, "user_id", retention_ms=30 * DAY_MS, has_dlq=True
)
WORLD_EVENTS = TopicSpec(
    "world.events", WorldEvent, "world_id", retention_ms=30 * DAY_MS, has_dlq=True
)
WORLD_TICKS = TopicSpec("world.ticks", WorldTick, "world_id", retention_ms=DAY_MS, has_dlq=True)
CACHE_INVALIDATIONS = TopicSpec("cache.invalidations", CacheInvalidation, "id", has_dlq=True)
BUDGET_ALERTS = TopicSpec("budget.alerts", BudgetAlert, "user_id", retention_ms=90 * DAY_MS)
# The router reads it as a table: compaction keeps the latest state per user.
BUDGET_STATE = TopicSpec(
    "budget.state", BudgetState, "user_id", retention_ms=90 * DAY_MS, cleanup_policy="compact"
)
# The router's internal topics: requests split by priority before decide (low and background
# held back), decided requests by lane, and execute's reports back to decide.
AI_REQUESTS_READY = TopicSpec("ai.requests.ready", AIRequest, "user_id")
AI_REQUESTS_HELD = TopicSpec("ai.requests.held", AIRequest, "user_id")
AI_LANE_URGENT = TopicSpec("ai.lane.urgent", RoutedRequest, "user_id")
AI_LANE_NORMAL = TopicSpec("ai.lane.normal", RoutedRequest, "user_id")
AI_LANE_DEFERRED = TopicSpec("ai.lane.deferred", RoutedRequest, "user_id")
AI_ROUTER_SETTLEMENTS = TopicSpec("ai.router.settlements", RouterSettlement, "user_id")

TOPICS: tuple[TopicSpec, ...] = (
    AI_REQUESTS,
    AI_RESPONSES,
    USAGE_EVENTS,
    WORLD_EVENTS,
    WORLD_TICKS,
    CACHE_INVALIDATIONS,
    BUDGET_ALERTS,
    BUDGET_STATE,
    AI_REQUESTS_READY,
    AI_REQUESTS_HELD,
    AI_LANE_URGENT,
    AI_LANE_NORMAL,
    AI_LANE_DEFERRED,
    AI_ROUTER_SETTLEMENTS,
)
# Topics one flow reads together, keyed alike: partition p of each must hold the same keys, so
# their partition counts must be equal (the world flow owns a world by its partition).
CO_PARTITIONED: tuple[tuple[TopicSpec, ...], ...] = ((WORLD_EVENTS, WORLD_TICKS),)
INPUT_TOPICS: tuple[TopicSpec, ...] = tuple(t for t in TOPICS if t.has_dlq)
DEAD_LETTER_TOPICS: tuple[DeadLetterSpec, ...] = tuple(
    DeadLetterSpec(t.dlq_name, t) for t in INPUT_TOPICS
)

_BY_NAME = {t.name: t for t in TOPICS}
# A model's topic is the first in TOPICS that carries it: the router's internal topics reuse
# AIRequest after ai.requests, and a producer of an AIRequest means ai.requests.
_BY_MODEL: dict[type[Event], TopicSpec] = {}
for _spec in TOPICS:
    _BY_MODEL.setdefault(_spec.model, _spec)


class UnknownTopicError(LookupError):
    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(_BY_NAME))
        super().__init__(f"unknown topic {name!r}; the pipeline's topics are: {known}")


def topic(name: str) -> TopicSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownTopicError(name) from None


def topic_for(event: Event) -> TopicSpec:
    return _BY_MODEL[type(event)]
