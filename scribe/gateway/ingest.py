"""What a POST body means, with no I/O: one event, a JSON array of events, or NDJSON; each item
validated against the topic's schema. JSON numbers are parsed as Decimal (jiter, via
`schemas.codec`), so money never passes through a float.

A batch is accepted or rejected whole: one invalid item rejects the request and nothing is
published, so a producer never has to work out which part of a batch went through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from schemas import DecodeError, parse_json, validate
from schemas.events import AIRequest, CacheInvalidation, Event, UsageEvent, WorldEvent, WorldTick

E = TypeVar("E", bound=Event)
JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
MAX_ITEM_ERRORS = 100


class BodyError(ValueError):
    """The body as a whole cannot be read as events; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Item:
    """One parsed item of a body: a JSON value, or why its line could not be parsed."""

    value: Any
    line: int | None = None  # NDJSON only, 1-based
    error: str | None = None


@dataclass(frozen=True)
class ItemError:
    index: int
    errors: list[str]
    line: int | None = None

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"index": self.index, "errors": self.errors}
        if self.line is not None:
            found["line"] = self.line
        return found


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_items(
    body: bytes, content_type: str | None, max_bytes: int, max_events: int
) -> list[Item]:
    """The body's items, in order. Raises `BodyError` with 413 (too large), 415 (unknown
    content type) or 400 (malformed JSON, empty, not objects)."""
    if len(body) > max_bytes:
        raise BodyError(413, f"the body is {len(body):,} bytes; the limit is {max_bytes:,}")
    kind = media_type(content_type)
    if kind in NDJSON_TYPES:
        items = _ndjson_items(body, max_bytes)
    elif kind in JSON_TYPES:
        items = _json_items(body, max_bytes)
    else:
        raise BodyError(
            415,
            f"unsupported Content-Type {kind or '(none)'!r}: send application/json (one event "
            "or an array of events) or application/x-ndjson (one event per line)",
        )
    if not items:
        raise BodyError(400, "the body holds no events")
    if len(items) > max_events:
        raise BodyError(
            413, f"the body holds {len(items):,} events; the limit is {max_events:,} per request"
        )
    return items


def _json_items(body: bytes, max_bytes: int) -> list[Item]:
    try:
        value = parse_json(body, limit=max_bytes)
    except DecodeError as exc:
        raise BodyError(400, exc.reason) from None
    if isinstance(value, list):
        return [Item(v) for v in value]
    if isinstance(value, dict):
        return [Item(value)]
    raise BodyError(
        400, f"expected an event object or an array of them, got {type(value).__name__}"
    )


def _ndjson_items(body: bytes, max_bytes: int) -> list[Item]:
    items = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            items.append(Item(parse_json(line, limit=max_bytes), line=number))
        except DecodeError as exc:
            items.append(Item(None, line=number, error=exc.reason))
    return items


def check_item(index: int, item: Item, model: type[E]) -> E | ItemError:
    """The item as an event of `model`, or why it is not one."""
    if item.error is not None:
        return ItemError(index, [item.error], item.line)
    try:
        return validate(item.value, model)
    except DecodeError as exc:
        return ItemError(index, exc.errors, item.line)


def validate_items(items: list[Item], model: type[E]) -> tuple[list[E], list[ItemError]]:
    """Every item checked (not just up to the first failure), so one answer lists them all."""
    events: list[E] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        checked = check_item(index, item, model)
        if isinstance(checked, ItemError):
            errors.append(checked)
        else:
            events.append(checked)
    return events, errors


def rejection(errors: list[ItemError], total: int) -> dict[str, Any]:
    """The 400 body: which items failed and why, bounded so the answer stays small."""
    shown = errors[:MAX_ITEM_ERRORS]
    answer: dict[str, Any] = {
        "error": f"{len(errors)} of {total} event(s) invalid; nothing was published",
        "errors": [e.as_json() for e in shown],
    }
    if len(errors) > len(shown):
        answer["more_errors"] = len(errors) - len(shown)
    return answer


def receipt_id(event: Event) -> str:
    """The id a producer matches a receipt with: the family's own id field; a tick, which has
    none, is `world_id:tick` (unique per world)."""
    if isinstance(event, AIRequest):
        return event.request_id
    if isinstance(event, UsageEvent | WorldEvent):
        return event.event_id
    if isinstance(event, CacheInvalidation):
        return event.id
    if isinstance(event, WorldTick):
        return f"{event.world_id}:{event.tick}"
    raise LookupError(f"{type(event).__name__} is not a family the gateway accepts")
