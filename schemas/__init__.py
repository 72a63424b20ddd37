"""Event models, their codec, and the JSON Schema files generated from them."""

from schemas.codec import DecodeError, decode, encode, parse_json, validate
from schemas.events import (
    AIRequest,
    AIResponse,
    BudgetAlert,
    BudgetState,
    CacheInvalidation,
    Event,
    Priority,
    RequestKind,
    ResponseStatus,
    UsageEvent,
    UserTier,
    WorldEvent,
    WorldTick,
)

__all__ = [
    "AIRequest",
    "AIResponse",
    "BudgetAlert",
    "BudgetState",
    "CacheInvalidation",
    "DecodeError",
    "Event",
    "Priority",
    "RequestKind",
    "ResponseStatus",
    "UsageEvent",
    "UserTier",
    "WorldEvent",
    "WorldTick",
    "decode",
    "encode",
    "parse_json",
    "validate",
]
