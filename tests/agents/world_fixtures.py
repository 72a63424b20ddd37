"""Builders shared by the world tests: events and a populated world, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from typing import Any

from agents.world.apply import Applied, apply_event
from agents.world.model import WorldState
from schemas.events import WorldEvent

_ids = count(1)
WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def world_event(
    world_id: str, type_: str, event_id: str | None = None, **payload: Any
) -> WorldEvent:
    return WorldEvent(
        event_id=event_id or f"ev-{next(_ids)}",
        world_id=world_id,
        type=type_,
        payload=payload,
        occurred_at=WHEN,
    )


def applied(state: WorldState, event: WorldEvent) -> WorldState:
    outcome = apply_event(state, event)
    assert isinstance(outcome, Applied), outcome
    return outcome.state


def village_loaded(world_id: str) -> WorldEvent:
    return world_event(
        world_id,
        "world_loaded",
        event_id=f"load-{world_id}",
        template="village",
        image_base_url=f"https://cdn.scribe.invalid/worlds/{world_id}",
    )


def village(world_id: str = "w-test") -> WorldState:
    return applied(WorldState(world_id), village_loaded(world_id))
