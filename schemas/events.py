"""One versioned model per event family. Producers, agents, the gateway and tests share them."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SerializeAsAny,
    StrictBool,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from schemas.fields import Count, Identifier, Label, Money, Url, UtcDatetime, bounded_payload
from schemas.world import PAYLOADS, WorldPayload


class Priority(StrEnum):
    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
    BACKGROUND = "background"


class RequestKind(StrEnum):
    TEXT = "text"
    IMAGE = "image"


class UserTier(StrEnum):
    FREE = "free"
    PREMIUM = "premium"


class ResponseStatus(StrEnum):
    OK = "ok"
    REJECTED = "rejected"
    FAILED = "failed"


class RefusalKind(StrEnum):
    """Why the router answered without a result; closed, so a consumer can map every kind:
    budget (retry when the UTC month turns), quota (free images used up, paid ones over budget:
    retry at UTC midnight), cost_limit (over the request's max_cost_usd), tier (no model open to
    the user's tier), unavailable (no provider configured, or every circuit open), rate_limited
    (every provider key resting past the deadline), deadline, provider_error, internal."""

    BUDGET = "budget"  # over the user's monthly budget: retry when the UTC month turns
    QUOTA = "quota"  # free images used up and the paid ones over budget: retry at UTC midnight
    COST_LIMIT = "cost_limit"  # every model costs more than the request's own max_cost_usd
    TIER = "tier"  # no model is open to the user's tier
    UNAVAILABLE = "unavailable"  # no provider configured, or every model's circuit is open
    RATE_LIMITED = "rate_limited"  # every provider key was resting until past the deadline
    DEADLINE = "deadline"  # the deadline passed before any model answered
    PROVIDER_ERROR = "provider_error"  # the providers failed (errors, bad answers)
    INTERNAL = "internal"  # the router itself failed while executing


class Lane(StrEnum):
    """The router's execution lanes: urgent and high never wait behind low and background."""

    URGENT = "urgent"
    NORMAL = "normal"
    DEFERRED = "deferred"


class Event(BaseModel):
    """Base of every family: unknown fields are refused so typos surface at the producer."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    schema_version: Literal[1] = 1


Prompt = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=32_000)]
Text = Annotated[str, StringConstraints(strict=True, max_length=256_000)]
Reason = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=500)]
CacheKey = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=512)]
EventType = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
]


class AIRequest(Event):
    """A request for text or an image, keyed by user_id."""

    request_id: Identifier
    user_id: Identifier
    kind: RequestKind
    priority: Priority
    prompt: Prompt
    user_tier: UserTier
    created_at: UtcDatetime
    world_id: Identifier | None = None
    deadline: UtcDatetime | None = None
    max_cost_usd: Money | None = None
    model_hint: Label | None = None


MAX_RETRY_AFTER_S = 32 * 24 * 3600  # a month and a day: the longest wait a refusal names


class Refusal(BaseModel):
    """Why a REJECTED or FAILED response has no result, for programs (`error` is for people)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RefusalKind
    retry_after_s: Annotated[StrictInt, Field(ge=0, le=MAX_RETRY_AFTER_S)] | None = Field(
        default=None,
        description="seconds from completed_at until a retry can first succeed; absent when "
        "unknown or when waiting will not help",
    )


class AIResponse(Event):
    """The outcome of one AI request, keyed by user_id."""

    request_id: Identifier
    user_id: Identifier
    status: ResponseStatus
    completed_at: UtcDatetime
    model: Label | None = None
    provider: Label | None = None
    output: Text | None = None
    image_url: Url | None = None
    error: Reason | None = None
    rationale: Reason | None = None
    cost_usd: Money | None = None
    free_tier: StrictBool | None = None
    # How long the provider call that served it took; the gateway's API reports the rest of
    # the time as Scribe's overhead. Absent on rejections and failures (and from old writers).
    provider_latency_ms: Annotated[Count, Field(le=3_600_000)] | None = None
    refusal: Refusal | None = Field(
        default=None,
        description="why there is no result: set by the router on every rejected or failed "
        "response; absent on ok ones and from writers older than the field",
    )


class UsageEvent(Event):
    """One completed provider call's usage, keyed by user_id; counted exactly once by event_id."""

    event_id: Identifier
    request_id: Identifier
    user_id: Identifier
    service: Label
    model: Label
    input_tokens: Count
    output_tokens: Count
    images: Annotated[Count, Field(le=1000)]
    free_tier: StrictBool
    occurred_at: UtcDatetime
    cost_usd: Money | None = None
    world_id: Identifier | None = None
    latency_ms: Annotated[Count, Field(le=3_600_000)] | None = None
    priority: Priority | None = None
    key_id: Label | None = None


class RouteChoice(BaseModel):
    """One step of a routed request's fallback chain, with its estimated cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: Label
    model: Label
    free_tier: StrictBool
    estimated_cost_usd: Money


class RoutedRequest(Event):
    """A decided AI request on its lane topic, keyed by user_id: all that execute needs."""

    request: AIRequest
    lane: Lane
    chain: Annotated[list[RouteChoice], Field(min_length=1, max_length=8)]
    estimated_cost_usd: Money
    rationale: Reason
    decided_at: UtcDatetime
    free_slot_day: date | None = None


class RouterSettlement(Event):
    """What execute reports back to the owner of a user's routing state, keyed by user_id:
    the final response (kept for idempotent replay), the cost to true up, a free slot to
    give back."""

    request_id: Identifier
    user_id: Identifier
    response: AIResponse
    estimated_cost_usd: Money
    actual_cost_usd: Money
    released_free_slot_day: date | None = None


class _WorldEventOfOneType(Event):
    """The fields every world event has; `world_event_of_type` adds `type` and `payload`."""

    event_id: Identifier
    world_id: Identifier
    occurred_at: UtcDatetime
    version: Annotated[int, Field(strict=True, ge=1, le=2**53)] | None = None

    @field_validator("payload", mode="before", check_fields=False)
    @classmethod
    def _payload_within_limit(cls, value: Any) -> Any:
        return bounded_payload(value) if isinstance(value, dict) else value


def world_event_of_type(type_: str, payload: type[WorldPayload]) -> type[_WorldEventOfOneType]:
    """The event model of one world event type: `type` fixed, `payload` its model (optional on
    the wire when every payload field has a default)."""
    default = payload() if not any(f.is_required() for f in payload.model_fields.values()) else ...
    # A type built at run time: typed Any, as type checkers read such forms differently.
    fixed_type: Any = Literal[type_]
    event: type[_WorldEventOfOneType] = create_model(
        f"{payload.__name__}Event",
        __base__=_WorldEventOfOneType,
        __doc__=f"A world event of type `{type_}`.",
        __module__=__name__,
        type=(fixed_type, ...),
        payload=(payload, default),
    )
    return event


WORLD_EVENT_TYPES: dict[str, type[_WorldEventOfOneType]] = {
    type_: world_event_of_type(type_, payload) for type_, payload in PAYLOADS.items()
}
# The `world.events` contract: one event model per type, told apart by `type`. Its JSON
# Schema is the published one (a `oneOf` with a discriminator on `type`).
_ONE_OF_THE_TYPES: Any = Annotated[
    Union[tuple(WORLD_EVENT_TYPES.values())],  # noqa: UP007 - built from PAYLOADS
    Field(discriminator="type"),
]
WORLD_EVENT_CONTRACT: TypeAdapter[_WorldEventOfOneType] = TypeAdapter(_ONE_OF_THE_TYPES)


class WorldEvent(Event):
    """Something a player or the AI did in a world, keyed by world_id.

    `payload` is the model `schemas.world.PAYLOADS[type]`: an unknown type or a payload that
    does not fit its type is refused here, where the producer sees it. `version`, when the
    producer numbers its events per world, lets the world ignore any event at or below the
    highest version it has applied (besides ignoring repeated ids).
    """

    event_id: Identifier
    world_id: Identifier
    type: EventType
    payload: SerializeAsAny[WorldPayload]
    occurred_at: UtcDatetime
    version: Annotated[int, Field(strict=True, ge=1, le=2**53)] | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _payload_of_its_type(
        cls, data: Any, handler: ModelWrapValidatorHandler[WorldEvent]
    ) -> WorldEvent:
        if isinstance(data, dict):
            try:
                typed = WORLD_EVENT_CONTRACT.validate_python(data)
            except ValidationError as exc:
                raise _as_wire_errors(exc, data.get("type")) from None
            data = {**data, "payload": typed.payload}  # type: ignore[attr-defined]
        return handler(data)


def _as_wire_errors(error: ValidationError, type_: Any) -> ValidationError:
    """The contract's errors located as on the wire: `payload.kind`, not
    `location_created.payload.kind`; an unknown type is an error of `type`."""
    details: list[InitErrorDetails] = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        kind: str = item["type"]
        if kind == "union_tag_invalid":
            loc = ("type",)
        elif kind == "union_tag_not_found":
            kind, loc = "missing", ("type",)
        elif loc and loc[0] == type_:
            loc = loc[1:]
        detail = InitErrorDetails(type=kind, loc=loc, input=item["input"])
        if "ctx" in item:
            detail["ctx"] = item["ctx"]
        details.append(detail)
    return ValidationError.from_exception_data(WorldEvent.__name__, details)


class WorldTick(Event):
    """Advance a world's simulation to `tick`, keyed by world_id."""

    world_id: Identifier
    tick: Annotated[Count, Field(le=2**53)]
    occurred_at: UtcDatetime


class CacheInvalidation(Event):
    """Targets to drop from every cache layer, keyed by id: the entity that changed, or for a
    world write's invalidations merged per partition, the first of its worlds."""

    id: Identifier
    keys: Annotated[list[CacheKey], Field(max_length=1000)] = Field(default_factory=list)
    patterns: Annotated[list[CacheKey], Field(max_length=100)] = Field(default_factory=list)
    tags: Annotated[list[CacheKey], Field(max_length=100)] = Field(default_factory=list)
    urls: Annotated[list[Url], Field(max_length=1000)] = Field(default_factory=list)
    reason: Reason
    occurred_at: UtcDatetime

    @model_validator(mode="after")
    def _has_a_target(self) -> CacheInvalidation:
        if not (self.keys or self.patterns or self.tags or self.urls):
            raise ValueError("an invalidation needs at least one of keys, patterns, tags, urls")
        return self


class BudgetAlert(Event):
    """A user's month-to-date spend crossed a threshold of their budget, keyed by user_id."""

    alert_id: Identifier
    user_id: Identifier
    month: date
    threshold_pct: Annotated[int, Field(strict=True, ge=1, le=1000)]
    budget_usd: Money
    spent_usd: Money
    occurred_at: UtcDatetime


class BudgetState(Event):
    """A user's monthly budget and month-to-date spend, keyed by user_id on the compacted
    `budget.state` topic (a removed budget is a tombstone: no value).

    A reader keeps, per user, the message with the highest `version`; when `month` is older
    than the current UTC month, nothing has been spent yet this month.
    """

    user_id: Identifier
    month: date
    budget_usd: Money
    spent_usd: Money
    remaining_usd: Money
    exhausted: StrictBool
    thresholds_reached: Annotated[
        list[Annotated[int, Field(strict=True, ge=1, le=1000)]], Field(max_length=32)
    ]
    # From a PostgreSQL bigint sequence; unbounded, a version past 64 bits could not be encoded.
    version: Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]
    updated_at: UtcDatetime
